terraform {
  # 1.11: ephemeral resources and write-only arguments keep generated secrets
  # (application keys, the Redis token, the database roles' passwords) out of
  # the state; also covers 1.10's S3 backend use_lockfile and 1.9's validation
  # conditions that refer to other variables. OpenTofu >= 1.11 works as well.
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    random = {
      source = "hashicorp/random"
      # 3.7: the ephemeral random_password.
      version = "~> 3.7"
    }
  }
}
