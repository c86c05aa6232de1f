# Values for the Kubernetes side. The names in capitals in the descriptions are
# the settings (or overlay fields, marked "TF:" in deploy/k8s/overlays/production)
# they feed.

output "promanage_database_url" {
  description = "PROMANAGE_DATABASE_URL (Secret promanage-secrets): the RDS primary endpoint, TLS verified."
  value       = local.database_url
  sensitive   = true
}

output "promanage_redis_url" {
  description = "PROMANAGE_REDIS_URL (Secret promanage-secrets): the replication group's primary endpoint, TLS with AUTH token."
  value       = local.redis_url
  sensitive   = true
}

output "promanage_blob_url" {
  description = "PROMANAGE_BLOB_URL (ConfigMap promanage-config): gocloud.dev URL of the documents bucket; s3://, gs:// or azblob:// following storage_backend."
  value       = local.blob_url
}

output "kratos_dsn" {
  description = "DSN of Kratos (Secret kratos-secrets): database \"kratos\" on the same RDS instance."
  value       = local.kratos_dsn
  sensitive   = true
}

output "promanage_secrets_manager_secret_arn" {
  description = "Secrets Manager secret holding every key of the Kubernetes Secret promanage-secrets (for External Secrets Operator or the README's kubectl step)."
  value       = aws_secretsmanager_secret.promanage.arn
}

output "kratos_secrets_manager_secret_arn" {
  description = "Secrets Manager secret holding every key of the Kubernetes Secret kratos-secrets except COURIER_SMTP_CONNECTION_URI."
  value       = aws_secretsmanager_secret.kratos.arn
}

output "promanage_iam_role_arn" {
  description = "IAM role for the service account promanage (annotation eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.promanage.arn
}

output "ecr_repository_url" {
  description = "Image repository (kustomize images[promanage].newName; CI pushes here)."
  value       = aws_ecr_repository.promanage.repository_url
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.main.name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = aws_eks_cluster.main.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the Kubernetes API."
  value       = aws_eks_cluster.main.certificate_authority[0].data
}

output "oidc_issuer_url" {
  description = "OIDC issuer of the cluster's service account tokens (trusted by IRSA, and by GCP/Azure workload identity federation in modules/blob-*)."
  value       = aws_eks_cluster.main.identity[0].oidc[0].issuer
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster, for further IRSA roles (load balancer controller, cluster autoscaler)."
  value       = aws_iam_openid_connect_provider.eks.arn
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${local.region} --name ${aws_eks_cluster.main.name}"
}

output "vpc_id" {
  description = "VPC id."
  value       = aws_vpc.main.id
}

output "public_subnet_cidrs" {
  description = "Public subnets, where the ALB lives (NetworkPolicy promanage-api-ingress and kratos-ingress in the production overlay)."
  value       = aws_subnet.public[*].cidr_block
}

output "private_subnet_cidrs" {
  description = "Private subnets of the nodes and pods."
  value       = aws_subnet.private[*].cidr_block
}

output "database_subnet_cidrs" {
  description = "Database subnets of RDS and ElastiCache (NetworkPolicy allow-postgres and allow-redis in the production overlay)."
  value       = aws_subnet.database[*].cidr_block
}

output "documents_bucket_name" {
  description = "Name of the S3 documents bucket, or null when storage_backend is not s3."
  value       = local.create_bucket ? aws_s3_bucket.documents[0].id : null
}

output "postgres_instance_identifier" {
  description = "RDS instance identifier (used by the point-in-time restore runbook)."
  value       = aws_db_instance.main.identifier
}
