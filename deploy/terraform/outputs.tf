# Values for the Kubernetes side. The names in capitals in the descriptions are
# the settings (or overlay fields, marked "TF:" in deploy/k8s/overlays/production)
# they feed.

output "promanage_blob_url" {
  description = "PROMANAGE_BLOB_URL (ConfigMap promanage-config): gocloud.dev URL of the documents bucket; s3://, gs:// or azblob:// following storage_backend."
  value       = local.blob_url
}

output "promanage_secrets_manager_secret_arn" {
  description = "Secrets Manager secret with PROMANAGE_SECRET_KEY and PROMANAGE_HOOK_API_KEY (ExternalSecret promanage-secrets)."
  value       = aws_secretsmanager_secret.promanage.arn
}

output "kratos_secrets_manager_secret_arn" {
  description = "Secrets Manager secret with Kratos' cookie, cipher and default secrets (ExternalSecret kratos-secrets)."
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

output "redis_secret_arn" {
  description = "Secrets Manager secret with PROMANAGE_REDIS_URL, AUTH token included (ExternalSecret promanage-secrets)."
  value       = aws_secretsmanager_secret.redis.arn
}

output "kratos_smtp_secret_arn" {
  description = "Secrets Manager secret the operator fills with {\"COURIER_SMTP_CONNECTION_URI\": \"smtps://...\"}."
  value       = aws_secretsmanager_secret.kratos_smtp.arn
}

output "database_role_secret_arns" {
  description = "Secrets Manager secrets of the database roles app, migrate and kratos (username, password, host, port, dbname)."
  value       = { for k, s in aws_secretsmanager_secret.db_role : k => s.arn }
}

output "postgres_master_secret_arn" {
  description = "Secrets Manager secret RDS manages for the master user (ExternalSecret promanage-db-admin; the bootstrap Job alone uses it)."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "postgres_endpoint" {
  description = "RDS primary endpoint (host name)."
  value       = aws_db_instance.main.address
}

output "external_secrets_role_arn" {
  description = "IRSA role of the service account promanage-external-secrets (annotation eks.amazonaws.com/role-arn in external-secrets.yaml)."
  value       = module.external_secrets_irsa.iam_role_arn
}

output "aws_load_balancer_controller_role_arn" {
  description = "IRSA role of kube-system/aws-load-balancer-controller (Helm value serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn)."
  value       = module.lb_controller_irsa.iam_role_arn
}

output "ci_role_arn" {
  description = "IAM role GitHub Actions assumes (repository variable AWS_CI_ROLE_ARN), or null without github_repository."
  value       = local.ci_enabled ? aws_iam_role.ci[0].arn : null
}

output "region" {
  description = "AWS region (Helm value region of the load balancer controller, SecretStore region)."
  value       = local.region
}
