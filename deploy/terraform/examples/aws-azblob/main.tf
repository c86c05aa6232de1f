# ProManage on EKS with its documents in Azure Blob Storage. The storage account
# trusts the EKS cluster through a federated identity credential.

terraform {
  required_version = ">= 1.11.0, < 2.0.0"

  # Keep the state encrypted and locked (use_lockfile needs Terraform >= 1.10).
  # backend "s3" {
  #   bucket       = "example-terraform-state"
  #   key          = "promanage/prod.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.0"
    }
  }
}

provider "aws" {
  region = "eu-west-1"
}

provider "azurerm" {
  features {}
  subscription_id = "00000000-0000-0000-0000-000000000000"
}

module "promanage" {
  source = "../.."

  name              = "promanage-prod"
  storage_backend   = "azblob"
  external_blob_url = module.documents.blob_url
}

module "documents" {
  source = "../../modules/blob-azure"

  resource_group_name  = "promanage-prod"
  location             = "westeurope"
  storage_account_name = "promanageproddocs"
  oidc_issuer_url      = module.promanage.oidc_issuer_url
}

output "promanage_blob_url" {
  description = "PROMANAGE_BLOB_URL."
  value       = module.promanage.promanage_blob_url
}

output "azure_pod_environment" {
  description = "Environment the promanage pods need for Azure workload identity."
  value       = module.documents.pod_environment
}

output "promanage" {
  description = "Every output of the platform module (deploy/README.md reads it: terraform output -json promanage)."
  value       = module.promanage
  sensitive   = true
}
