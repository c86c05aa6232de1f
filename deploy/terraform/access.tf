# Who may talk to the cluster and the registry, without long-lived keys:
#   - CI (GitHub Actions) through the GitHub OIDC provider and an IAM role that
#     trusts this repository's main branch, v* tags and the production
#     environment only: push to the ECR repository, and an EKS access entry with
#     admin rights in the ProManage namespace only.
#   - operators listed in cluster_admin_principal_arns: cluster admins.
#   - the AWS Load Balancer Controller and External Secrets Operator: IRSA roles
#     (the published, maintained policies of terraform-aws-modules/iam).
# The cluster's API endpoint must be reachable from where CI runs: either list
# the runners' egress in cluster_endpoint_public_access_cidrs, or run the deploy
# job on a self-hosted runner inside the VPC (deploy/README.md, "CI access").

locals {
  ci_enabled = var.github_repository != null
  github_oidc_provider_arn = local.ci_enabled ? (
    var.github_oidc_provider_arn != null ? var.github_oidc_provider_arn : aws_iam_openid_connect_provider.github[0].arn
  ) : null
}

# One per AWS account: pass github_oidc_provider_arn if the account has it already.
resource "aws_iam_openid_connect_provider" "github" {
  count          = local.ci_enabled && var.github_oidc_provider_arn == null ? 1 : 0
  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  tags           = local.tags
}

resource "aws_iam_role" "ci" {
  count = local.ci_enabled ? 1 : 0
  name  = "${var.name}-ci"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = local.github_oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = { "token.actions.githubusercontent.com:aud" = "sts.amazonaws.com" }
        StringLike = {
          "token.actions.githubusercontent.com:sub" = [
            "repo:${coalesce(var.github_repository, "-")}:ref:refs/heads/main",
            "repo:${coalesce(var.github_repository, "-")}:ref:refs/tags/v*",
            "repo:${coalesce(var.github_repository, "-")}:environment:production",
          ]
        }
      }
    }]
  })
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_role_policy" "ci" {
  count = local.ci_enabled ? 1 : 0
  name  = "push-and-deploy"
  role  = aws_iam_role.ci[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "RegistryLogin"
        Effect   = "Allow"
        Action   = ["ecr:GetAuthorizationToken"]
        Resource = "*"
      },
      {
        Sid    = "PushPromoteAndReadScans"
        Effect = "Allow"
        Action = [
          "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
          "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
          "ecr:DescribeImages", "ecr:DescribeImageScanFindings",
        ]
        Resource = aws_ecr_repository.promanage.arn
      },
      {
        Sid      = "RegistryKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = aws_kms_key.main.arn
      },
      {
        Sid      = "Kubeconfig"
        Effect   = "Allow"
        Action   = ["eks:DescribeCluster"]
        Resource = aws_eks_cluster.main.arn
      },
    ]
  })
}

resource "aws_eks_access_entry" "ci" {
  count         = local.ci_enabled ? 1 : 0
  cluster_name  = aws_eks_cluster.main.name
  principal_arn = aws_iam_role.ci[0].arn
  type          = "STANDARD"
  tags          = local.tags
}

# Everything CI applies lives in the namespace; the Namespace object itself
# (and the cluster add-ons) are applied once by an operator.
resource "aws_eks_access_policy_association" "ci" {
  count         = local.ci_enabled ? 1 : 0
  cluster_name  = aws_eks_cluster.main.name
  principal_arn = aws_eks_access_entry.ci[0].principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"

  access_scope {
    type       = "namespace"
    namespaces = [var.kubernetes_namespace]
  }
}

resource "aws_eks_access_entry" "admin" {
  for_each      = toset(var.cluster_admin_principal_arns)
  cluster_name  = aws_eks_cluster.main.name
  principal_arn = each.value
  type          = "STANDARD"
  tags          = local.tags
}

resource "aws_eks_access_policy_association" "admin" {
  for_each      = toset(var.cluster_admin_principal_arns)
  cluster_name  = aws_eks_cluster.main.name
  principal_arn = aws_eks_access_entry.admin[each.key].principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }
}

# AWS Load Balancer Controller (kube-system/aws-load-balancer-controller). Its
# Helm install needs region and vpcId too: with IMDSv2 and a hop limit of 1 it
# cannot look them up from the node (deploy/README.md step 2).
module "lb_controller_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.60"

  role_name                              = "${var.name}-aws-load-balancer-controller"
  attach_load_balancer_controller_policy = true

  oidc_providers = {
    main = {
      provider_arn               = aws_iam_openid_connect_provider.eks.arn
      namespace_service_accounts = ["kube-system:aws-load-balancer-controller"]
    }
  }

  tags = local.tags
}

# External Secrets Operator, through the service account the SecretStore of the
# production overlay names: read access to this installation's secrets only.
module "external_secrets_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.60"

  role_name                      = "${var.name}-external-secrets"
  attach_external_secrets_policy = true
  external_secrets_secrets_manager_arns = concat(
    [aws_secretsmanager_secret.promanage.arn, aws_secretsmanager_secret.redis.arn, aws_secretsmanager_secret.kratos.arn,
    aws_secretsmanager_secret.kratos_smtp.arn, aws_db_instance.main.master_user_secret[0].secret_arn],
    [for s in aws_secretsmanager_secret.db_role : s.arn],
  )
  external_secrets_kms_key_arns = [aws_kms_key.main.arn]

  oidc_providers = {
    main = {
      provider_arn               = aws_iam_openid_connect_provider.eks.arn
      namespace_service_accounts = ["${var.kubernetes_namespace}:promanage-external-secrets"]
    }
  }

  tags = local.tags
}
