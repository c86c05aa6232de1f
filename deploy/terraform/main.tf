# ProManage platform on AWS: network over three zones, EKS, RDS PostgreSQL,
# ElastiCache Redis, the documents bucket, the image registry and the IAM role
# the pods use. Outputs feed the Kubernetes overlay (deploy/k8s/overlays/production)
# and the Secrets it references; see deploy/README.md.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  azs        = slice(data.aws_availability_zones.available.names, 0, var.availability_zone_count)
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.region
  partition  = data.aws_partition.current.partition

  tags = merge(var.tags, {
    "app.kubernetes.io/part-of" = "promanage"
    "promanage/stack"           = var.name
  })
}

# One customer-managed key encrypts the database, Redis snapshots, the bucket,
# the registry and Kubernetes Secrets, with rotation on.
resource "aws_kms_key" "main" {
  description             = "${var.name}: encryption at rest for ProManage data"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  tags                    = local.tags
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}
