# Secrets live in AWS Secrets Manager only, and External Secrets Operator makes
# the Kubernetes Secrets from them (deploy/k8s/overlays/production/external-secrets.yaml).
# Generated values are ephemeral (Terraform >= 1.11): they are written once
# through write-only arguments and never stored in the Terraform state or plan.
# Each group has a version in var.secret_versions; bumping it writes a new value.
#
#   <name>/promanage-secrets   PROMANAGE_SECRET_KEY, PROMANAGE_HOOK_API_KEY
#   <name>/redis               PROMANAGE_REDIS_URL (with the AUTH token)
#   <name>/kratos-secrets      SECRETS_COOKIE, SECRETS_CIPHER, SECRETS_DEFAULT
#   <name>/db-app              the api's and worker's database role
#   <name>/db-migrate          the migration Job's database role
#   <name>/db-kratos           Kratos' database role
#   <name>/kratos-smtp         COURIER_SMTP_CONNECTION_URI: created empty, the operator sets it
#   RDS-managed master secret  read by the database bootstrap Job only

ephemeral "random_password" "secret_key" {
  length  = 64
  special = false
}

ephemeral "random_password" "hook_api_key" {
  length  = 48
  special = false
}

ephemeral "random_password" "kratos" {
  for_each = toset(["cookie", "cipher", "default"])
  length   = each.key == "cipher" ? 32 : 48
  special  = false
}

# Alphanumeric: the bootstrap Job passes them to PostgreSQL as settings.
ephemeral "random_password" "db_role" {
  for_each = local.db_roles
  length   = 40
  special  = false
}

locals {
  postgres_host = aws_db_instance.main.address
  blob_url      = local.create_bucket ? "s3://${local.bucket_name}?region=${local.region}" : var.external_blob_url
  # Role names of deploy/k8s/base/db/bootstrap.sql.
  db_roles = {
    app     = { username = "promanage_app", dbname = "promanage" }
    migrate = { username = "promanage_migrate", dbname = "promanage" }
    kratos  = { username = "kratos", dbname = "kratos" }
  }
}

resource "aws_secretsmanager_secret" "promanage" {
  name       = "${var.name}/promanage-secrets"
  kms_key_id = aws_kms_key.main.arn
  tags       = local.tags
}

resource "aws_secretsmanager_secret_version" "promanage" {
  secret_id = aws_secretsmanager_secret.promanage.id
  secret_string_wo = jsonencode({
    PROMANAGE_SECRET_KEY   = ephemeral.random_password.secret_key.result
    PROMANAGE_HOOK_API_KEY = ephemeral.random_password.hook_api_key.result
  })
  # PROMANAGE_SECRET_KEY encrypts the plugins' signing secrets: rotating it
  # makes them undecryptable, so app_keys changes only on purpose.
  secret_string_wo_version = var.secret_versions.app_keys
}

# Its own secret: rotating the Redis token must not rewrite the application keys.
resource "aws_secretsmanager_secret" "redis" {
  name       = "${var.name}/redis"
  kms_key_id = aws_kms_key.main.arn
  tags       = local.tags
}

resource "aws_secretsmanager_secret_version" "redis" {
  secret_id = aws_secretsmanager_secret.redis.id
  secret_string_wo = jsonencode({
    PROMANAGE_REDIS_URL = "rediss://:${ephemeral.random_password.redis.result}@${aws_elasticache_replication_group.main.primary_endpoint_address}:6379/0"
  })
  secret_string_wo_version = var.secret_versions.redis
}

resource "aws_secretsmanager_secret" "kratos" {
  name       = "${var.name}/kratos-secrets"
  kms_key_id = aws_kms_key.main.arn
  tags       = local.tags
}

resource "aws_secretsmanager_secret_version" "kratos" {
  secret_id = aws_secretsmanager_secret.kratos.id
  secret_string_wo = jsonencode({
    SECRETS_COOKIE  = ephemeral.random_password.kratos["cookie"].result
    SECRETS_CIPHER  = ephemeral.random_password.kratos["cipher"].result
    SECRETS_DEFAULT = ephemeral.random_password.kratos["default"].result
  })
  secret_string_wo_version = var.secret_versions.kratos
}

resource "aws_secretsmanager_secret" "kratos_smtp" {
  name        = "${var.name}/kratos-smtp"
  description = "COURIER_SMTP_CONNECTION_URI of Kratos (JSON key of that name); set by the operator."
  kms_key_id  = aws_kms_key.main.arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret" "db_role" {
  for_each   = local.db_roles
  name       = "${var.name}/db-${each.key}"
  kms_key_id = aws_kms_key.main.arn
  tags       = local.tags
}

resource "aws_secretsmanager_secret_version" "db_role" {
  for_each  = local.db_roles
  secret_id = aws_secretsmanager_secret.db_role[each.key].id
  secret_string_wo = jsonencode({
    username = each.value.username
    password = ephemeral.random_password.db_role[each.key].result
    host     = local.postgres_host
    port     = 5432
    dbname   = each.value.dbname
  })
  secret_string_wo_version = var.secret_versions.db_roles
}
