# Production on AWS with documents in S3: the default and simplest setup.
#
#   terraform init && terraform apply
#   terraform output -json > platform.json     # feeds deploy/k8s/overlays/production

terraform {
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Keep the state encrypted and locked (use_lockfile needs Terraform >= 1.10).
  # Generated secrets never reach it (write-only arguments), but it still
  # describes the whole platform.
  # backend "s3" {
  #   bucket       = "example-terraform-state"
  #   key          = "promanage/prod.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = "eu-west-1"

  default_tags {
    tags = {
      environment = "production"
      owner       = "platform"
    }
  }
}

module "promanage" {
  source = "../.."

  name                                 = "promanage-prod"
  cluster_endpoint_public_access_cidrs = ["203.0.113.0/24"] # operators' VPN and the CI runners' egress
  storage_backend                      = "s3"
  github_repository                    = "promanage/promanage"
}

output "promanage" {
  description = "Every output of the platform module (secrets stay marked sensitive)."
  value       = module.promanage
  sensitive   = true
}
