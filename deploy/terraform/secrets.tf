# Application secrets are generated here and stored in AWS Secrets Manager, from
# which the operator (or External Secrets Operator) creates the Kubernetes
# Secrets "promanage-secrets" and "kratos-secrets". They are also in the Terraform
# state: keep the state in an encrypted, access-controlled backend.

resource "random_password" "secret_key" {
  length  = 64
  special = false
}

resource "random_password" "hook_api_key" {
  length  = 48
  special = false
}

resource "random_password" "kratos" {
  for_each = toset(["cookie", "cipher", "default"])
  length   = each.key == "cipher" ? 32 : 48
  special  = false
}

locals {
  postgres_host = aws_db_instance.main.address
  # verify-full: the RDS certificate authorities are not in the public roots, so
  # the pods mount Amazon's RDS CA bundle from the ConfigMap "rds-ca-bundle"
  # (deploy/README.md, step 4) at /etc/ssl/rds.
  database_url = "postgres://${aws_db_instance.main.username}:${random_password.postgres.result}@${local.postgres_host}:5432/promanage?sslmode=verify-full&sslrootcert=/etc/ssl/rds/global-bundle.pem"
  kratos_dsn   = "postgres://${aws_db_instance.main.username}:${random_password.postgres.result}@${local.postgres_host}:5432/kratos?sslmode=verify-full&sslrootcert=/etc/ssl/rds/global-bundle.pem&max_conns=20&max_idle_conns=4"
  redis_url    = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.main.primary_endpoint_address}:6379/0"
  blob_url     = local.create_bucket ? "s3://${local.bucket_name}?region=${local.region}" : var.external_blob_url
}

resource "aws_secretsmanager_secret" "promanage" {
  name       = "${var.name}/promanage-secrets"
  kms_key_id = aws_kms_key.main.arn
  tags       = local.tags
}

resource "aws_secretsmanager_secret_version" "promanage" {
  secret_id = aws_secretsmanager_secret.promanage.id
  secret_string = jsonencode({
    PROMANAGE_DATABASE_URL = local.database_url
    PROMANAGE_REDIS_URL    = local.redis_url
    PROMANAGE_SECRET_KEY   = random_password.secret_key.result
    PROMANAGE_HOOK_API_KEY = random_password.hook_api_key.result
  })
}

resource "aws_secretsmanager_secret" "kratos" {
  name       = "${var.name}/kratos-secrets"
  kms_key_id = aws_kms_key.main.arn
  tags       = local.tags
}

resource "aws_secretsmanager_secret_version" "kratos" {
  secret_id = aws_secretsmanager_secret.kratos.id
  secret_string = jsonencode({
    DSN             = local.kratos_dsn
    SECRETS_COOKIE  = random_password.kratos["cookie"].result
    SECRETS_CIPHER  = random_password.kratos["cipher"].result
    SECRETS_DEFAULT = random_password.kratos["default"].result
  })
}
