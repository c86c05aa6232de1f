# Production on AWS with documents in S3: the default and simplest setup.
#
#   terraform init && terraform apply
#   terraform output -json > platform.json     # feeds deploy/k8s/overlays/production

terraform {
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Keep the state encrypted and locked: it contains generated secrets.
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
  cluster_endpoint_public_access_cidrs = ["203.0.113.0/24"]
  storage_backend                      = "s3"
}

output "promanage" {
  description = "Every output of the platform module (secrets stay marked sensitive)."
  value       = module.promanage
  sensitive   = true
}
