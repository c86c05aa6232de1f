# The documents bucket (storage_backend = "s3"). Versioning keeps every
# overwritten or deleted object restorable for noncurrent_version_retention_days;
# public access is blocked at every level; only TLS requests are accepted.

locals {
  create_bucket = var.storage_backend == "s3"
  bucket_name   = "${var.name}-documents-${local.account_id}"
}

resource "aws_s3_bucket" "documents" {
  count         = local.create_bucket ? 1 : 0
  bucket        = local.bucket_name
  force_destroy = false
  tags          = local.tags
}

resource "aws_s3_bucket_ownership_controls" "documents" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.documents[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "documents" {
  count                   = local.create_bucket ? 1 : 0
  bucket                  = aws_s3_bucket.documents[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "documents" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.documents[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "documents" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.documents[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "documents" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.documents[0].id

  rule {
    id     = "noncurrent-versions"
    status = "Enabled"
    filter {}

    # S3 rejects an expiration that is not after the transition, and
    # STANDARD_IA bills 30 days at least: move versions there only when they
    # stay at least 30 days more.
    dynamic "noncurrent_version_transition" {
      for_each = var.noncurrent_version_retention_days >= 60 ? [30] : []
      content {
        noncurrent_days = noncurrent_version_transition.value
        storage_class   = "STANDARD_IA"
      }
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  rule {
    id     = "expired-delete-markers"
    status = "Enabled"
    filter {}

    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.documents]
}

resource "aws_s3_bucket_policy" "documents" {
  count  = local.create_bucket ? 1 : 0
  bucket = aws_s3_bucket.documents[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.documents[0].arn, "${aws_s3_bucket.documents[0].arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  depends_on = [aws_s3_bucket_public_access_block.documents]
}
