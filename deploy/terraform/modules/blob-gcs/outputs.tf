output "blob_url" {
  description = "PROMANAGE_BLOB_URL for this bucket (pass as external_blob_url to the root module)."
  value       = "gs://${google_storage_bucket.documents.name}"
}

output "credential_config" {
  description = "Content of the GOOGLE_APPLICATION_CREDENTIALS file (external account, no secret inside): the pod's projected service-account token, audience = the pool provider, mounted at /var/run/secrets/gcp/token."
  value = jsonencode({
    type                              = "external_account"
    audience                          = "//iam.googleapis.com/${google_iam_workload_identity_pool_provider.eks.name}"
    subject_token_type                = "urn:ietf:params:oauth:token-type:jwt"
    token_url                         = "https://sts.googleapis.com/v1/token"
    service_account_impersonation_url = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/${google_service_account.promanage.email}:generateAccessToken"
    credential_source = {
      file = "/var/run/secrets/gcp/token"
    }
  })
}

output "token_audience" {
  description = "Audience of the projected service-account token the pods must request."
  value       = "//iam.googleapis.com/${google_iam_workload_identity_pool_provider.eks.name}"
}
