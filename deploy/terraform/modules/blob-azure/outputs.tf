output "blob_url" {
  description = "PROMANAGE_BLOB_URL for this container (pass as external_blob_url to the root module)."
  value       = "azblob://${azurerm_storage_container.documents.name}?storage_account=${azurerm_storage_account.documents.name}"
}

output "pod_environment" {
  description = "Environment the promanage pods need for workload identity (plus a projected service-account token with audience api://AzureADTokenExchange at AZURE_FEDERATED_TOKEN_FILE)."
  value = {
    AZURE_STORAGE_ACCOUNT      = azurerm_storage_account.documents.name
    AZURE_CLIENT_ID            = azurerm_user_assigned_identity.promanage.client_id
    AZURE_TENANT_ID            = azurerm_user_assigned_identity.promanage.tenant_id
    AZURE_FEDERATED_TOKEN_FILE = "/var/run/secrets/azure/tokens/azure-identity-token"
  }
}
