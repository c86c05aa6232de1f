package validate

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/hashicorp/terraform-config-inspect/tfconfig"
)

// TerraformFiles returns every .tf and .tfvars file under dir, sorted.
func TerraformFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".terraform" || strings.HasPrefix(d.Name(), ".")) && p != dir {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".tf") || strings.HasSuffix(p, ".tfvars")) {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// TerraformModules returns every directory under dir that holds .tf files.
func TerraformModules(dir string) ([]string, error) {
	files, err := TerraformFiles(dir)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		if d := filepath.Dir(f); strings.HasSuffix(f, ".tf") && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out, nil
}

// CheckFormat reports files that are not in canonical HCL formatting, the
// formatting `terraform fmt` and `tofu fmt` produce (both are hclwrite.Format).
// Fix with: go run ./cmd/tffmt -w ../terraform
func CheckFormat(files []string) []string {
	var out []string
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		if _, diags := hclsyntax.ParseConfig(src, f, hcl.InitialPos); diags.HasErrors() {
			out = append(out, diags.Error())
			continue
		}
		if !bytes.Equal(hclwrite.Format(src), src) {
			out = append(out, fmt.Sprintf("%s: not canonically formatted (run go run ./cmd/tffmt -w)", f))
		}
	}
	return out
}

// boundedConstraint: a provider or core version constraint with an upper bound
// ("~> 6.0", ">= 1.9, < 2.0" or an exact version), so an incompatible major
// version is never picked up by a fresh `init`.
var boundedConstraint = regexp.MustCompile(`~>|<|^\s*=?\s*\d+\.\d+\.\d+\s*$`)

// CheckModule loads one module with terraform-config-inspect and parses its
// variable blocks with HCL, and returns what breaks the module conventions:
// every variable typed, described and (unless bool or map) validated; core and
// every provider version pinned with an upper bound; module sources local or
// versioned; every output described.
func CheckModule(dir string) []string {
	var out []string
	bad := func(format string, a ...any) { out = append(out, dir+": "+fmt.Sprintf(format, a...)) }

	mod, diags := tfconfig.LoadModule(dir)
	if diags.HasErrors() {
		bad("%v", diags.Err())
		return out
	}
	if len(mod.RequiredCore) == 0 {
		bad("no required_version")
	}
	if need, why := coreFeatures(dir); need != "" && !coreAtLeast(mod.RequiredCore, need) {
		bad("required_version %v: %s needs Terraform >= %s", mod.RequiredCore, why, need)
	}
	for _, c := range mod.RequiredCore {
		if !boundedConstraint.MatchString(c) {
			bad("required_version %q has no upper bound", c)
		}
	}
	used := map[string]bool{}
	for _, r := range mod.ManagedResources {
		used[r.Provider.Name] = true
	}
	for _, r := range mod.DataResources {
		used[r.Provider.Name] = true
	}
	for name := range used {
		if _, ok := mod.RequiredProviders[name]; !ok {
			bad("provider %s is used but not in required_providers", name)
		}
	}
	for name, rp := range mod.RequiredProviders {
		if rp.Source == "" {
			bad("provider %s has no source", name)
		}
		if len(rp.VersionConstraints) == 0 {
			bad("provider %s has no version constraint", name)
		}
		for _, c := range rp.VersionConstraints {
			if !boundedConstraint.MatchString(c) {
				bad("provider %s constraint %q has no upper bound", name, c)
			}
		}
	}
	for name, v := range mod.Variables {
		if v.Type == "" {
			bad("variable %s has no type", name)
		}
		if strings.TrimSpace(v.Description) == "" {
			bad("variable %s has no description", name)
		}
	}
	for name, o := range mod.Outputs {
		if strings.TrimSpace(o.Description) == "" {
			bad("output %s has no description", name)
		}
	}
	for name, mc := range mod.ModuleCalls {
		local := strings.HasPrefix(mc.Source, "./") || strings.HasPrefix(mc.Source, "../")
		if !local && mc.Version == "" && !strings.Contains(mc.Source, "?ref=") {
			bad("module %s source %s is not pinned to a version", name, mc.Source)
		}
	}

	// Validation blocks are not exposed by terraform-config-inspect: read them with HCL.
	files, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	for _, f := range files {
		body, src, err := parseBody(f)
		if err != nil {
			bad("%v", err)
			continue
		}
		for _, b := range body.Blocks {
			if b.Type != "variable" || len(b.Labels) != 1 {
				continue
			}
			typ := ""
			if a, ok := b.Body.Attributes["type"]; ok {
				typ = exprSource(src, a.Expr)
			}
			if typ == "bool" || strings.HasPrefix(typ, "map(") {
				continue
			}
			hasValidation := false
			for _, nb := range b.Body.Blocks {
				hasValidation = hasValidation || nb.Type == "validation"
			}
			if !hasValidation {
				bad("variable %s (%s) has no validation block", b.Labels[0], typ)
			}
		}
	}
	sort.Strings(out)
	return out
}

func parseBody(file string) (*hclsyntax.Body, []byte, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	f, diags := hclsyntax.ParseConfig(src, file, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, nil, diags
	}
	return f.Body.(*hclsyntax.Body), src, nil
}

// exprSource returns the source text of an expression, e.g. "var.name" or "true".
func exprSource(src []byte, e hclsyntax.Expression) string {
	r := e.Range()
	if r.End.Byte > len(src) {
		return ""
	}
	return strings.TrimSpace(string(r.SliceBytes(src)))
}

// Resource is a resource block of a module, with its attributes' source text
// (nested blocks flattened as "block.attr").
type Resource struct {
	Type, Name string
	Attrs      map[string]string
	Blocks     map[string]int // nested block type -> count
}

// ModuleResources parses every resource block of the module in dir.
func ModuleResources(dir string) (map[string]*Resource, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil {
		return nil, err
	}
	out := map[string]*Resource{}
	for _, f := range files {
		body, src, err := parseBody(f)
		if err != nil {
			return nil, err
		}
		for _, b := range body.Blocks {
			if b.Type != "resource" || len(b.Labels) != 2 {
				continue
			}
			r := &Resource{Type: b.Labels[0], Name: b.Labels[1], Attrs: map[string]string{}, Blocks: map[string]int{}}
			var walk func(prefix string, body *hclsyntax.Body)
			walk = func(prefix string, body *hclsyntax.Body) {
				for name, a := range body.Attributes {
					r.Attrs[prefix+name] = exprSource(src, a.Expr)
				}
				for _, nb := range body.Blocks {
					r.Blocks[prefix+nb.Type]++
					walk(prefix+nb.Type+".", nb.Body)
				}
			}
			walk("", b.Body)
			out[r.Type+"."+r.Name] = r
		}
	}
	return out, nil
}

// CheckPlatformProperties asserts, on the root module's resource blocks, the HA,
// backup, encryption and exposure properties deploy/README.md promises.
func CheckPlatformProperties(res map[string]*Resource) []string {
	type want struct{ resource, attr, value string }
	wants := []want{
		// Network over the zones, NAT per zone.
		{"aws_subnet.public", "count", "length(local.azs)"},
		{"aws_subnet.private", "count", "length(local.azs)"},
		{"aws_subnet.database", "count", "length(local.azs)"},
		{"aws_nat_gateway.main", "count", "var.single_nat_gateway ? 1 : length(local.azs)"},
		// EKS: node group per zone, secrets encrypted, network policy enforced.
		{"aws_eks_node_group.zone", "for_each", "{ for i, az in local.azs : az => aws_subnet.private[i].id }"},
		{"aws_eks_cluster.main", "encryption_config.resources", `["secrets"]`},
		{"aws_launch_template.node", "metadata_options.http_tokens", `"required"`},
		{"aws_launch_template.node", "metadata_options.http_put_response_hop_limit", "1"},
		// RDS: multi-AZ, backups + PITR, protected, encrypted, private.
		{"aws_db_instance.main", "multi_az", "true"},
		{"aws_db_instance.main", "backup_retention_period", "var.postgres_backup_retention_days"},
		{"aws_db_instance.main", "deletion_protection", "var.deletion_protection"},
		{"aws_db_instance.main", "skip_final_snapshot", "false"},
		{"aws_db_instance.main", "storage_encrypted", "true"},
		{"aws_db_instance.main", "publicly_accessible", "false"},
		// Secrets never in the state: RDS manages the master password, the
		// Redis token and every generated value go through write-only arguments.
		{"aws_db_instance.main", "manage_master_user_password", "true"},
		{"aws_elasticache_replication_group.main", "auth_token_wo", "ephemeral.random_password.redis.result"},
		// S3 rejects a noncurrent expiration that is not after the transition.
		{"aws_s3_bucket_lifecycle_configuration.documents", "rule.dynamic.for_each", "var.noncurrent_version_retention_days >= 60 ? [30] : []"},
		// CI deploys without long-lived keys: GitHub OIDC role with an EKS access entry.
		{"aws_eks_access_entry.ci", "principal_arn", "aws_iam_role.ci[0].arn"},
		{"aws_eks_access_policy_association.ci", "access_scope.type", `"namespace"`},
		// Redis: replicas across zones with automatic failover, encrypted.
		{"aws_elasticache_replication_group.main", "automatic_failover_enabled", "true"},
		{"aws_elasticache_replication_group.main", "multi_az_enabled", "true"},
		{"aws_elasticache_replication_group.main", "transit_encryption_enabled", "true"},
		{"aws_elasticache_replication_group.main", "at_rest_encryption_enabled", "true"},
		// S3: versioned, encrypted, never public, lifecycle rules.
		{"aws_s3_bucket_versioning.documents", "versioning_configuration.status", `"Enabled"`},
		{"aws_s3_bucket_server_side_encryption_configuration.documents", "rule.apply_server_side_encryption_by_default.sse_algorithm", `"aws:kms"`},
		{"aws_s3_bucket_public_access_block.documents", "block_public_acls", "true"},
		{"aws_s3_bucket_public_access_block.documents", "block_public_policy", "true"},
		{"aws_s3_bucket_public_access_block.documents", "ignore_public_acls", "true"},
		{"aws_s3_bucket_public_access_block.documents", "restrict_public_buckets", "true"},
		{"aws_s3_bucket_lifecycle_configuration.documents", "rule.noncurrent_version_expiration.noncurrent_days", "var.noncurrent_version_retention_days"},
		// ECR: immutable, scanned, lifecycle.
		{"aws_ecr_repository.promanage", "image_tag_mutability", `"IMMUTABLE"`},
		{"aws_ecr_repository.promanage", "image_scanning_configuration.scan_on_push", "true"},
		{"aws_ecr_lifecycle_policy.promanage", "repository", "aws_ecr_repository.promanage.name"},
		// Pods reach S3 through IRSA, bound to one service account.
		{"aws_iam_openid_connect_provider.eks", "client_id_list", `["sts.amazonaws.com"]`},
	}
	var out []string
	for _, w := range wants {
		r, ok := res[w.resource]
		if !ok {
			out = append(out, w.resource+": resource missing")
			continue
		}
		if got, ok := r.Attrs[w.attr]; !ok {
			out = append(out, w.resource+": "+w.attr+" not set, want "+w.value)
		} else if got != w.value {
			out = append(out, w.resource+": "+w.attr+" = "+got+", want "+w.value)
		}
	}
	for id, r := range res {
		if r.Type == "random_password" || r.Type == "random_string" {
			out = append(out, id+": a generated secret in the state; use an ephemeral resource and a write-only argument")
		}
		if r.Type == "aws_secretsmanager_secret_version" {
			if _, ok := r.Attrs["secret_string"]; ok {
				out = append(out, id+": secret_string stores the value in the state; use secret_string_wo")
			}
		}
		if _, ok := r.Attrs["password"]; ok && r.Type == "aws_db_instance" {
			out = append(out, id+": password in the state; use manage_master_user_password")
		}
		if r.Type == "aws_s3_bucket_lifecycle_configuration" && r.Blocks["rule.noncurrent_version_transition"] > 0 {
			out = append(out, id+": an unconditional noncurrent_version_transition can reach the expiration day")
		}
	}
	if r, ok := res["aws_iam_role.promanage"]; !ok || !strings.Contains(r.Attrs["assume_role_policy"], "system:serviceaccount:${var.kubernetes_namespace}:promanage") {
		out = append(out, "aws_iam_role.promanage: trust policy must name the promanage service account")
	}
	return out
}

// coreFeatures returns the lowest Terraform version the module's files need
// and why: ephemeral resources and write-only arguments (1.11), the S3
// backend's use_lockfile, even in a commented-out example (1.10).
func coreFeatures(dir string) (string, string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	var lockfile bool
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		src := string(b)
		if regexp.MustCompile(`(?m)^ephemeral\s+"`).MatchString(src) || regexp.MustCompile(`(?m)^\s+[a-z_]+_wo\s+=`).MatchString(src) {
			return "1.11", "ephemeral resources and write-only arguments"
		}
		lockfile = lockfile || strings.Contains(src, "use_lockfile")
	}
	if lockfile {
		return "1.10", "the S3 backend's use_lockfile"
	}
	return "", ""
}

// coreAtLeast reports whether every constraint's lower bound is >= min.
func coreAtLeast(constraints []string, min string) bool {
	lower := regexp.MustCompile(`>=?\s*(\d+)\.(\d+)`)
	var wantMajor, wantMinor int
	fmt.Sscanf(min, "%d.%d", &wantMajor, &wantMinor)
	found := false
	for _, c := range constraints {
		for _, m := range lower.FindAllStringSubmatch(c, -1) {
			var major, minor int
			fmt.Sscanf(m[1]+"."+m[2], "%d.%d", &major, &minor)
			found = true
			if major < wantMajor || (major == wantMajor && minor < wantMinor) {
				return false
			}
		}
	}
	return found
}
