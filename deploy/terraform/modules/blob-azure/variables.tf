variable "resource_group_name" {
  type        = string
  description = "Existing resource group of the storage account and the identity."

  validation {
    condition     = length(var.resource_group_name) > 0
    error_message = "resource_group_name must not be empty."
  }
}

variable "location" {
  type        = string
  description = "Azure region with availability zones, e.g. westeurope."

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location must be an Azure region name such as westeurope."
  }
}

variable "storage_account_name" {
  type        = string
  description = "Globally unique storage account name."

  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "storage_account_name must be 3-24 lower-case letters and digits."
  }
}

variable "container_name" {
  type        = string
  description = "Blob container of the documents."
  default     = "documents"

  validation {
    condition     = can(regex("^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$", var.container_name))
    error_message = "container_name must be 3-63 characters of a-z, 0-9 and '-'."
  }
}

variable "soft_delete_retention_days" {
  type        = number
  description = "Days a deleted blob or container stays restorable."
  default     = 30

  validation {
    condition     = var.soft_delete_retention_days >= 7 && var.soft_delete_retention_days <= 365
    error_message = "soft_delete_retention_days must be between 7 and 365."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days an overwritten blob version stays restorable."
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
  description = "Namespace of the promanage service account allowed to use the container."
  default     = "promanage"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "kubernetes_namespace must be a DNS label."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags of the Azure resources."
  default     = {}
}
