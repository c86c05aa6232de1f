terraform {
  # 1.9: validation conditions may refer to other variables (external_blob_url).
  # OpenTofu >= 1.9 works as well.
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
