# ProManage on EKS with its documents in Google Cloud Storage (for example, when
# the document archive must stay with an existing GCP data platform). The GCS
# bucket trusts the EKS cluster through workload identity federation.

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
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }
}

provider "aws" {
  region = "eu-west-1"
}

provider "google" {
  project = "example-promanage"
  region  = "europe-west1"
}

module "promanage" {
  source = "../.."

  name              = "promanage-prod"
  storage_backend   = "gcs"
  external_blob_url = module.documents.blob_url
}

module "documents" {
  source = "../../modules/blob-gcs"

  project_id      = "example-promanage"
  bucket_name     = "example-promanage-documents"
  location        = "EU"
  oidc_issuer_url = module.promanage.oidc_issuer_url
}

output "promanage_blob_url" {
  description = "PROMANAGE_BLOB_URL."
  value       = module.promanage.promanage_blob_url
}

output "gcp_credential_config" {
  description = "GOOGLE_APPLICATION_CREDENTIALS file content for the pods."
  value       = module.documents.credential_config
}

output "promanage" {
  description = "Every output of the platform module (deploy/README.md reads it: terraform output -json promanage)."
  value       = module.promanage
  sensitive   = true
}
