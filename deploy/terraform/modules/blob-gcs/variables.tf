variable "project_id" {
  type        = string
  description = "GCP project that owns the bucket and the workload identity pool."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id."
  }
}

variable "bucket_name" {
  type        = string
  description = "Globally unique bucket name."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 characters of a-z, 0-9, '.', '_' and '-'."
  }
}

variable "location" {
  type        = string
  description = "Bucket location. A multi-region (EU, US) or dual-region keeps documents through a regional outage."
  default     = "EU"

  validation {
    condition     = can(regex("^[A-Za-z0-9-]+$", var.location))
    error_message = "location must be a GCS location such as EU, US, europe-west1 or EUR4."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days an overwritten or deleted object version stays restorable."
  default     = 90

  validation {
    condition     = var.noncurrent_version_retention_days >= 30
    error_message = "noncurrent_version_retention_days must be at least 30."
  }
}

variable "oidc_issuer_url" {
  type        = string
  description = "OIDC issuer of the EKS cluster (output oidc_issuer_url of the root module)."

  validation {
    condition     = startswith(var.oidc_issuer_url, "https://")
    error_message = "oidc_issuer_url must be an https URL."
  }
}

variable "kubernetes_namespace" {
  type        = string
  description = "Namespace of the promanage service account allowed to use the bucket."
  default     = "promanage"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "kubernetes_namespace must be a DNS label."
  }
}

variable "service_account_id" {
  type        = string
  description = "Account id of the GCP service account the pods impersonate."
  default     = "promanage-documents"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.service_account_id))
    error_message = "service_account_id must be 6-30 characters of a-z, 0-9 and '-'."
  }
}

variable "workload_identity_pool_id" {
  type        = string
  description = "Id of the workload identity pool that trusts the EKS cluster."
  default     = "promanage-eks"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{3,30}[a-z0-9]$", var.workload_identity_pool_id))
    error_message = "workload_identity_pool_id must be 5-32 characters of a-z, 0-9 and '-'."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels of the bucket."
  default     = {}
}
