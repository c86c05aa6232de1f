# Documents container on Azure Blob Storage for a ProManage running on EKS.
# Zone- and geo-redundant storage (GZRS), blob versioning and soft delete for
# recovery, no public access and no shared keys: the pods authenticate with
# workload identity federation (a user-assigned identity trusts the EKS OIDC
# issuer for the service account <namespace>/promanage only).

terraform {
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.0"
    }
  }
}

resource "azurerm_storage_account" "documents" {
  name                            = var.storage_account_name
  resource_group_name             = var.resource_group_name
  location                        = var.location
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "GZRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true

  blob_properties {
    versioning_enabled  = true
    change_feed_enabled = true

    delete_retention_policy {
      days = var.soft_delete_retention_days
    }

    container_delete_retention_policy {
      days = var.soft_delete_retention_days
    }
  }

  tags = var.tags
}

resource "azurerm_storage_container" "documents" {
  name                  = var.container_name
  storage_account_id    = azurerm_storage_account.documents.id
  container_access_type = "private"
}

resource "azurerm_storage_management_policy" "documents" {
  storage_account_id = azurerm_storage_account.documents.id

  rule {
    name    = "noncurrent-versions"
    enabled = true

    filters {
      blob_types = ["blockBlob"]
    }

    actions {
      version {
        change_tier_to_cool_after_days_since_creation = 30
        delete_after_days_since_creation              = var.noncurrent_version_retention_days
      }
    }
  }
}

resource "azurerm_user_assigned_identity" "promanage" {
  name                = "${var.storage_account_name}-promanage"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

resource "azurerm_role_assignment" "promanage" {
  scope                = azurerm_storage_container.documents.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.promanage.principal_id
}

resource "azurerm_federated_identity_credential" "eks" {
  name                = "eks-promanage"
  resource_group_name = var.resource_group_name
  parent_id           = azurerm_user_assigned_identity.promanage.id
  issuer              = var.oidc_issuer_url
  subject             = "system:serviceaccount:${var.kubernetes_namespace}:promanage"
  audience            = ["api://AzureADTokenExchange"]
}
