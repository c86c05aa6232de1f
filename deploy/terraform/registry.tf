# Container registry: immutable tags (a released tag can never be re-pointed),
# vulnerability scan on every push, KMS encryption, and a lifecycle policy that
# keeps release images and drops untagged leftovers.

resource "aws_ecr_repository" "promanage" {
  name                 = "${var.name}/promanage"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = false

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }

  tags = local.tags
}

resource "aws_ecr_lifecycle_policy" "promanage" {
  repository = aws_ecr_repository.promanage.name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Expire untagged images"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.ecr_untagged_expiry_days
        }
        action = { type = "expire" }
      },
      # CI pushes three images per commit: one per architecture
      # (sha-<commit>-<arch>) and the index over them (sha-<commit>); a release
      # tags all three v<semver>[-<arch>], so releases are kept apart from
      # commits and an index never outlives its children.
      {
        rulePriority = 2
        description  = "Keep the newest releases (index and per-architecture images)"
        selection = {
          tagStatus     = "tagged"
          tagPrefixList = ["v"]
          countType     = "imageCountMoreThan"
          countNumber   = var.ecr_keep_tagged_images * 3
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 3
        description  = "Keep the newest commit images"
        selection = {
          tagStatus     = "tagged"
          tagPrefixList = ["sha-"]
          countType     = "imageCountMoreThan"
          countNumber   = var.ecr_keep_tagged_images * 3
        }
        action = { type = "expire" }
      },
    ]
  })
}
