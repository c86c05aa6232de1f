variable "name" {
  type        = string
  description = "Name prefix of every resource (e.g. \"promanage-prod\"). Lower-case letters, digits and dashes; it becomes part of the cluster, database and bucket names."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,24}[a-z0-9]$", var.name))
    error_message = "name must be 4-26 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource that supports them (cost allocation, ownership)."
  default     = {}
}

# --- Network ------------------------------------------------------------------

variable "vpc_cidr" {
  type        = string
  description = "IPv4 range of the VPC. It is cut into public /20, private /19 and database /22 subnets per zone, so it must be a /16."
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && endswith(var.vpc_cidr, "/16")
    error_message = "vpc_cidr must be a valid IPv4 /16, e.g. 10.0.0.0/16."
  }
}

variable "availability_zone_count" {
  type        = number
  description = "Number of availability zones the network, node groups, database and Redis span. Three gives zone-loss tolerance with a quorum."
  default     = 3

  validation {
    condition     = var.availability_zone_count >= 3 && var.availability_zone_count <= 4 && floor(var.availability_zone_count) == var.availability_zone_count
    error_message = "availability_zone_count must be 3 or 4 (the subnet plan has room for four zones)."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "Use one NAT gateway instead of one per zone. Cheaper, but a zone outage then cuts egress (webhooks, image pulls) for every zone. Keep false in production."
  default     = false
}

# --- Kubernetes -----------------------------------------------------------------

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes minor version. The manifests need >= 1.31 (preStop sleep, trafficDistribution, PDB unhealthyPodEvictionPolicy)."
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(3[1-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a supported minor version between 1.31 and 1.39, e.g. \"1.33\"."
  }
}

variable "cluster_endpoint_public_access_cidrs" {
  type        = list(string)
  description = "Networks allowed to reach the public Kubernetes API endpoint (CI runners, operators' VPN). An empty list makes the endpoint private-only."
  default     = []

  validation {
    condition     = alltrue([for c in var.cluster_endpoint_public_access_cidrs : can(cidrhost(c, 0))])
    error_message = "Every entry of cluster_endpoint_public_access_cidrs must be an IPv4 CIDR."
  }
}

variable "node_instance_types" {
  type        = list(string)
  description = "EC2 instance types of the managed node groups, in order of preference."
  default     = ["m7i.large", "m6i.large"]

  validation {
    condition     = length(var.node_instance_types) > 0
    error_message = "node_instance_types needs at least one instance type."
  }
}

variable "node_group_size" {
  type = object({
    min     = number
    desired = number
    max     = number
  })
  description = "Node count of EACH zone's managed node group (one group per zone so the cluster autoscaler can keep zones balanced)."
  default = {
    min     = 1
    desired = 2
    max     = 6
  }

  validation {
    condition     = var.node_group_size.min >= 1 && var.node_group_size.min <= var.node_group_size.desired && var.node_group_size.desired <= var.node_group_size.max
    error_message = "node_group_size must satisfy 1 <= min <= desired <= max."
  }
}

variable "kubernetes_namespace" {
  type        = string
  description = "Namespace ProManage runs in; the IAM role for service accounts trusts the service account \"promanage\" in it only."
  default     = "promanage"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "kubernetes_namespace must be a DNS label."
  }
}

# --- PostgreSQL -----------------------------------------------------------------

variable "postgres_engine_version" {
  type        = string
  description = "RDS PostgreSQL engine version (major, or major.minor). ProManage needs 15 or later."
  default     = "16"

  validation {
    condition     = can(regex("^(1[5-9])(\\.[0-9]+)?$", var.postgres_engine_version))
    error_message = "postgres_engine_version must be 15 or later, e.g. \"16\" or \"16.6\"."
  }
}

variable "postgres_instance_class" {
  type        = string
  description = "RDS instance class of the primary (the multi-AZ standby has the same size)."
  default     = "db.r7g.large"

  validation {
    condition     = startswith(var.postgres_instance_class, "db.")
    error_message = "postgres_instance_class must be an RDS class such as db.r7g.large."
  }
}

variable "postgres_allocated_storage_gb" {
  type        = number
  description = "Initial storage of the database in GiB; storage autoscaling grows it up to postgres_max_allocated_storage_gb."
  default     = 100

  validation {
    condition     = var.postgres_allocated_storage_gb >= 20 && var.postgres_allocated_storage_gb <= 65536
    error_message = "postgres_allocated_storage_gb must be between 20 and 65536."
  }
}

variable "postgres_max_allocated_storage_gb" {
  type        = number
  description = "Upper bound of RDS storage autoscaling in GiB."
  default     = 1000

  validation {
    condition     = var.postgres_max_allocated_storage_gb >= var.postgres_allocated_storage_gb
    error_message = "postgres_max_allocated_storage_gb must be at least postgres_allocated_storage_gb."
  }
}

variable "postgres_backup_retention_days" {
  type        = number
  description = "Days of automated backups kept, which is also the point-in-time-recovery window."
  default     = 14

  validation {
    condition     = var.postgres_backup_retention_days >= 7 && var.postgres_backup_retention_days <= 35
    error_message = "postgres_backup_retention_days must be between 7 and 35 (RDS maximum); below 7 the PITR window is too short to notice and undo a bad change."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the database from deletion (and take a final snapshot when it is deleted anyway). Only a throw-away environment should set false."
  default     = true
}

# --- Redis -------------------------------------------------------------------------

variable "redis_engine_version" {
  type        = string
  description = "ElastiCache Redis OSS engine version (7.x)."
  default     = "7.1"

  validation {
    condition     = can(regex("^7\\.[0-9]+$", var.redis_engine_version))
    error_message = "redis_engine_version must be a Redis 7 version such as \"7.1\"."
  }
}

variable "redis_node_type" {
  type        = string
  description = "ElastiCache node type of every Redis node."
  default     = "cache.r7g.large"

  validation {
    condition     = startswith(var.redis_node_type, "cache.")
    error_message = "redis_node_type must be an ElastiCache node type such as cache.r7g.large."
  }
}

variable "redis_node_count" {
  type        = number
  description = "Redis nodes (one primary, the rest replicas), spread over the zones. At least 2 for automatic failover."
  default     = 3

  validation {
    condition     = var.redis_node_count >= 2 && var.redis_node_count <= 6
    error_message = "redis_node_count must be between 2 (failover needs a replica) and 6."
  }
}

# --- Object storage -------------------------------------------------------------

variable "storage_backend" {
  type        = string
  description = "Where documents are stored: \"s3\" (this module creates the bucket), \"gcs\" or \"azblob\" (create it with modules/blob-gcs or modules/blob-azure and pass its blob_url as external_blob_url)."
  default     = "s3"

  validation {
    condition     = contains(["s3", "gcs", "azblob"], var.storage_backend)
    error_message = "storage_backend must be one of s3, gcs, azblob."
  }
}

variable "external_blob_url" {
  type        = string
  description = "gocloud.dev bucket URL of a GCS or Azure bucket (gs://... or azblob://...), required when storage_backend is not s3."
  default     = null

  validation {
    condition = (
      var.storage_backend == "s3" ? var.external_blob_url == null :
      var.external_blob_url != null && startswith(coalesce(var.external_blob_url, "-"), var.storage_backend == "gcs" ? "gs://" : "azblob://")
    )
    error_message = "external_blob_url must be null for s3, a gs:// URL for gcs and an azblob:// URL for azblob."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days an overwritten or deleted object version stays restorable in the bucket (the blob side of disaster recovery). From 60 days, versions move to STANDARD_IA after 30."
  default     = 90

  validation {
    condition     = var.noncurrent_version_retention_days >= 30
    error_message = "noncurrent_version_retention_days must be at least 30 so a deletion can be noticed and undone."
  }
}

# --- Registry ------------------------------------------------------------------------

variable "ecr_keep_tagged_images" {
  type        = number
  description = "Number of releases (v* tags) and, separately, of commit builds (sha-* tags) the registry keeps; older ones expire (each counts three images: the index and one per architecture)."
  default     = 100

  validation {
    condition     = var.ecr_keep_tagged_images >= 10
    error_message = "ecr_keep_tagged_images must be at least 10 so rollbacks stay possible."
  }
}

variable "ecr_untagged_expiry_days" {
  type        = number
  description = "Days after which untagged images (superseded build layers, attestations of deleted tags) are removed."
  default     = 14

  validation {
    condition     = var.ecr_untagged_expiry_days >= 1
    error_message = "ecr_untagged_expiry_days must be at least 1."
  }
}

# --- Secrets and access ---------------------------------------------------------

variable "secret_versions" {
  type = object({
    app_keys = number
    redis    = number
    kratos   = number
    db_roles = number
  })
  description = "Version of each group of generated secrets. They are generated at apply time and written only to their destination (never to the state); raising a version writes a new value. app_keys includes PROMANAGE_SECRET_KEY, which encrypts stored plugin secrets: do not rotate it casually."
  default = {
    app_keys = 1
    redis    = 1
    kratos   = 1
    db_roles = 1
  }

  validation {
    condition     = alltrue([for v in values(var.secret_versions) : v >= 1 && floor(v) == v])
    error_message = "secret_versions values must be whole numbers >= 1."
  }
}

variable "github_repository" {
  type        = string
  description = "GitHub repository (\"owner/name\") whose workflow deploys: gets an IAM role through GitHub OIDC (main branch, v* tags and the production environment only) and an EKS access entry for the ProManage namespace. null creates neither."
  default     = null

  validation {
    condition     = var.github_repository == null || can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", coalesce(var.github_repository, "-")))
    error_message = "github_repository must be \"owner/name\"."
  }
}

variable "github_oidc_provider_arn" {
  type        = string
  description = "ARN of the account's existing GitHub Actions OIDC provider (an account has at most one); null creates it."
  default     = null

  validation {
    condition     = var.github_oidc_provider_arn == null || startswith(coalesce(var.github_oidc_provider_arn, "-"), "arn:")
    error_message = "github_oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "cluster_admin_principal_arns" {
  type        = list(string)
  description = "IAM roles or users that get cluster-admin access entries (operators; the cluster creator has one already)."
  default     = []

  validation {
    condition     = alltrue([for a in var.cluster_admin_principal_arns : startswith(a, "arn:")])
    error_message = "cluster_admin_principal_arns must be IAM ARNs."
  }
}
