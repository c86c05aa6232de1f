# tflint configuration for the examples and the modules they call (CI job
# "terraform": tflint --init, then tflint --call-module-type=all per example).
config {
  call_module_type = "all"
}

plugin "terraform" {
  enabled = true
  preset  = "recommended"
}

plugin "aws" {
  enabled = true
  version = "0.38.0"
  source  = "github.com/terraform-linters/tflint-ruleset-aws"
}
