# Documents bucket on Google Cloud Storage for a ProManage running on EKS.
# The pods authenticate with workload identity federation: GCP trusts the EKS
# cluster's OIDC issuer, and only the Kubernetes service account
# <namespace>/promanage may impersonate the bucket's service account. No key file.

terraform {
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }
}

locals {
  subject = "system:serviceaccount:${var.kubernetes_namespace}:promanage"
}

resource "google_storage_bucket" "documents" {
  project                     = var.project_id
  name                        = var.bucket_name
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = 7 * 24 * 3600
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  labels = var.labels
}

resource "google_service_account" "promanage" {
  project      = var.project_id
  account_id   = var.service_account_id
  display_name = "ProManage documents (EKS workload identity)"
}

resource "google_storage_bucket_iam_member" "promanage" {
  bucket = google_storage_bucket.documents.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.promanage.email}"
}

resource "google_iam_workload_identity_pool" "eks" {
  project                   = var.project_id
  workload_identity_pool_id = var.workload_identity_pool_id
  display_name              = "EKS ${var.workload_identity_pool_id}"
}

resource "google_iam_workload_identity_pool_provider" "eks" {
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.eks.workload_identity_pool_id
  workload_identity_pool_provider_id = "eks-oidc"
  attribute_mapping = {
    "google.subject" = "assertion.sub"
  }
  attribute_condition = "assertion.sub == \"${local.subject}\""

  oidc {
    # No allowed_audiences: the default audience is this provider's full name,
    # which is what credential_config asks the pods to request.
    issuer_uri = var.oidc_issuer_url
  }
}

resource "google_service_account_iam_member" "workload_identity" {
  service_account_id = google_service_account.promanage.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.eks.name}/subject/${local.subject}"
}
