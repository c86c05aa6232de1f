# ElastiCache Redis OSS replication group: a primary and replicas in different
# zones, automatic failover to a replica, TLS in transit with an AUTH token,
# encrypted at rest, daily snapshots.

# The AUTH token is generated at apply time and written only where it is used
# (write-only arguments): never in the Terraform state. Bump
# secret_versions.redis to rotate it (ElastiCache and Secrets Manager together).
ephemeral "random_password" "redis" {
  length  = 64
  special = false
}

resource "aws_elasticache_subnet_group" "main" {
  name       = var.name
  subnet_ids = aws_subnet.database[*].id
  tags       = local.tags
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "Redis from the EKS nodes and pods only"
  vpc_id      = aws_vpc.main.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_cluster" {
  security_group_id            = aws_security_group.redis.id
  referenced_security_group_id = aws_eks_cluster.main.vpc_config[0].cluster_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  description                  = "EKS cluster security group (nodes and VPC CNI pods)"
}

resource "aws_elasticache_replication_group" "main" {
  replication_group_id = var.name
  description          = "ProManage sessions, rate limits, idempotency keys, invalidation"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = "default.redis7"

  num_cache_clusters          = var.redis_node_count
  preferred_cache_cluster_azs = [for i in range(var.redis_node_count) : local.azs[i % length(local.azs)]]
  automatic_failover_enabled  = true
  multi_az_enabled            = true

  subnet_group_name  = aws_elasticache_subnet_group.main.name
  security_group_ids = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.main.arn
  transit_encryption_enabled = true
  auth_token_wo              = ephemeral.random_password.redis.result
  auth_token_wo_version      = var.secret_versions.redis

  snapshot_retention_limit   = 7
  snapshot_window            = "01:00-02:00"
  maintenance_window         = "sun:04:30-sun:05:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  tags = local.tags
}
