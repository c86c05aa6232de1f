package validate

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/hashicorp/terraform-config-inspect/tfconfig"
)

func terraformDir(t *testing.T) string { return filepath.Join(repoRoot(t), "deploy/terraform") }

func TestTerraformFormatting(t *testing.T) {
	files, err := TerraformFiles(terraformDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d Terraform files", len(files))
	}
	for _, v := range CheckFormat(files) {
		t.Error(v)
	}
}

func TestTerraformModules(t *testing.T) {
	mods, err := TerraformModules(terraformDir(t))
	if err != nil {
		t.Fatal(err)
	}
	rel := func(d string) string { r, _ := filepath.Rel(terraformDir(t), d); return r }
	var names []string
	for _, d := range mods {
		names = append(names, rel(d))
	}
	for _, want := range []string{".", "modules/blob-gcs", "modules/blob-azure", "examples/aws-s3", "examples/aws-gcs", "examples/aws-azblob"} {
		if !slices.Contains(names, want) {
			t.Errorf("module %s missing (have %v)", want, names)
		}
	}
	for _, d := range mods {
		t.Run(rel(d), func(t *testing.T) {
			for _, v := range CheckModule(d) {
				t.Error(v)
			}
		})
	}
}

// TestTerraformOutputsFeedTheOverlay: the root module exports what the
// Kubernetes side needs, with credentials marked sensitive.
func TestTerraformOutputsFeedTheOverlay(t *testing.T) {
	mod, diags := tfconfig.LoadModule(terraformDir(t))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	// No output carries a credential any more: secrets go from Terraform to
	// Secrets Manager through write-only arguments, and from there to the
	// cluster through External Secrets.
	for _, name := range []string{
		"promanage_blob_url", "promanage_iam_role_arn", "ecr_repository_url", "cluster_name", "oidc_issuer_url",
		"public_subnet_cidrs", "private_subnet_cidrs", "database_subnet_cidrs", "promanage_secrets_manager_secret_arn",
		"kratos_secrets_manager_secret_arn", "redis_secret_arn", "kratos_smtp_secret_arn", "database_role_secret_arns",
		"postgres_master_secret_arn", "postgres_instance_identifier", "external_secrets_role_arn",
		"aws_load_balancer_controller_role_arn", "ci_role_arn", "vpc_id", "region", "kubeconfig_command",
	} {
		if _, ok := mod.Outputs[name]; !ok {
			t.Errorf("output %s missing", name)
		}
	}
	for name := range mod.Outputs {
		if strings.Contains(name, "password") || strings.HasSuffix(name, "_url") && strings.Contains(name, "database") {
			t.Errorf("output %s looks like a credential", name)
		}
	}
	sb := mod.Variables["storage_backend"]
	if sb == nil || sb.Default != "s3" {
		t.Errorf("variable storage_backend must exist with default s3, got %+v", sb)
	}
}

// TestTerraformPlatformProperties reads the resource blocks and asserts the HA,
// backup, encryption and exposure properties deploy/README.md promises.
func TestTerraformPlatformProperties(t *testing.T) {
	res, err := ModuleResources(terraformDir(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range CheckPlatformProperties(res) {
		t.Error(v)
	}
}

func TestTerraformRulesCanFail(t *testing.T) {
	src := terraformDir(t)
	platform := func(dir string) []string {
		res, err := ModuleResources(dir)
		if err != nil {
			return []string{err.Error()}
		}
		return CheckPlatformProperties(res)
	}
	copyModule := func(t *testing.T) string {
		dst := t.TempDir()
		files, _ := filepath.Glob(filepath.Join(src, "*.tf"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dst
	}
	edit := func(t *testing.T, dir, file, from, to string) {
		p := filepath.Join(dir, file)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), from) {
			t.Fatalf("%s no longer contains %q; update the test case", file, from)
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(b), from, to, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name, file, from, to, want string
		check                      func(dir string) []string
	}{
		{"UndocumentedVariable", "variables.tf", `description = "Tags added to every resource that supports them (cost allocation, ownership)."`, "", "variable tags has no description", CheckModule},
		{"UntypedVariable", "variables.tf", "  type        = map(string)\n  description = \"Tags", "  description = \"Tags", "variable tags has no type", CheckModule},
		{"UnvalidatedVariable", "variables.tf", "  validation {\n    condition     = contains([\"s3\", \"gcs\", \"azblob\"], var.storage_backend)\n    error_message = \"storage_backend must be one of s3, gcs, azblob.\"\n  }\n", "", "variable storage_backend (string) has no validation block", CheckModule},
		{"UnpinnedProvider", "versions.tf", `version = "~> 3.7"`, `version = ">= 3.7"`, "provider random constraint \">= 3.7\" has no upper bound", CheckModule},
		{"CoreTooOldForWriteOnly", "versions.tf", `">= 1.11.0, < 2.0.0"`, `">= 1.9.0, < 2.0.0"`, "needs Terraform >= 1.11", CheckModule},
		{"MasterPasswordInState", "database.tf", "manage_master_user_password   = true", "password                      = \"in-the-state\"", "aws_db_instance.main: manage_master_user_password not set", platform},
		{"SecretValueInState", "secrets.tf", "secret_string_wo = jsonencode({\n    PROMANAGE_SECRET_KEY", "secret_string = jsonencode({\n    PROMANAGE_SECRET_KEY", "secret_string", platform},
		{"RedisTokenInState", "redis.tf", "auth_token_wo              = ephemeral", "auth_token                 = ephemeral", "auth_token_wo not set", platform},
		{"TransitionNotBeforeExpiry", "storage.tf", "for_each = var.noncurrent_version_retention_days >= 60 ? [30] : []", "for_each = [30]", "rule.dynamic.for_each = [30]", platform},
		{"NoCIAccessEntry", "access.tf", `resource "aws_eks_access_entry" "ci" {`, `resource "aws_eks_access_entry" "ci_gone" {`, "aws_eks_access_entry.ci: resource missing", platform},
		{"SingleAZDatabase", "database.tf", "multi_az               = true", "multi_az               = false", "aws_db_instance.main: multi_az = false", func(dir string) []string {
			res, err := ModuleResources(dir)
			if err != nil {
				return []string{err.Error()}
			}
			return CheckPlatformProperties(res)
		}},
		{"MutableTags", "registry.tf", `image_tag_mutability = "IMMUTABLE"`, `image_tag_mutability = "MUTABLE"`, "image_tag_mutability", func(dir string) []string {
			res, _ := ModuleResources(dir)
			return CheckPlatformProperties(res)
		}},
		{"Unformatted", "outputs.tf", "  value       = aws_eks_cluster.main.name", "  value = aws_eks_cluster.main.name", "not canonically formatted", func(dir string) []string {
			files, _ := TerraformFiles(dir)
			return CheckFormat(files)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyModule(t)
			edit(t, dir, tc.file, tc.from, tc.to)
			got := tc.check(dir)
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Fatalf("want a violation containing %q, got %q", tc.want, got)
			}
		})
	}
}

// TestOverlayCIDRsMatchTerraformSubnetPlan: the production overlay's
// NetworkPolicies name the same public and database subnets the Terraform
// module creates with its default vpc_cidr, so that the two cannot drift apart.
func TestOverlayCIDRsMatchTerraformSubnetPlan(t *testing.T) {
	mod, diags := tfconfig.LoadModule(terraformDir(t))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	vpc := netip.MustParsePrefix(mod.Variables["vpc_cidr"].Default.(string))
	zones := 3
	var public, database []string
	for i := 0; i < zones; i++ {
		public = append(public, cidrsubnet(vpc, 4, i).String())
		database = append(database, cidrsubnet(vpc, 6, 24+i).String())
	}
	m := loadOverlay(t, "production")
	cidrs := func(name string) []string {
		np := m.Find("NetworkPolicy", name).Typed.(*networkingv1.NetworkPolicy)
		var out []string
		for _, r := range np.Spec.Ingress {
			for _, p := range r.From {
				if p.IPBlock != nil {
					out = append(out, p.IPBlock.CIDR)
				}
			}
		}
		for _, r := range np.Spec.Egress {
			for _, p := range r.To {
				if p.IPBlock != nil {
					out = append(out, p.IPBlock.CIDR)
				}
			}
		}
		return out
	}
	for name, want := range map[string][]string{
		"promanage-api-ingress": public, "kratos-ingress": public,
		"allow-postgres": database, "allow-redis": database,
	} {
		if got := cidrs(name); !slices.Equal(got, want) {
			t.Errorf("NetworkPolicy %s CIDRs %v, Terraform subnet plan %v", name, got, want)
		}
	}
}

// cidrsubnet is Terraform's cidrsubnet() for IPv4.
func cidrsubnet(p netip.Prefix, newbits, netnum int) netip.Prefix {
	a := p.Masked().Addr().As4()
	base := binary.BigEndian.Uint32(a[:])
	bits := p.Bits() + newbits
	base |= uint32(netnum) << (32 - bits)
	binary.BigEndian.PutUint32(a[:], base)
	return netip.PrefixFrom(netip.AddrFrom4(a), bits)
}

// TestOverlayTFMarkersNameRealOutputs: every "TF: <output>" marker in the
// production overlay names an output the Terraform module really has.
func TestOverlayTFMarkersNameRealOutputs(t *testing.T) {
	mod, diags := tfconfig.LoadModule(terraformDir(t))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy/k8s/overlays/production/*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	marker := regexp.MustCompile(`# TF: ([a-z_]+)`)
	found := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range marker.FindAllStringSubmatch(string(b), -1) {
			found++
			if _, ok := mod.Outputs[m[1]]; !ok {
				t.Errorf("%s: marker TF: %s names no Terraform output", filepath.Base(f), m[1])
			}
		}
	}
	if found < 5 {
		t.Errorf("only %d TF: markers in the production overlay; the operator needs one per platform value", found)
	}
}

// TestTerraformExamples: every example exposes the module's outputs as
// "promanage" (deploy/README.md reads terraform output -json promanage) and
// passes the module inputs it needs.
func TestTerraformExamples(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(terraformDir(t), "examples/*"))
	if len(dirs) < 3 {
		t.Fatalf("examples: %v", dirs)
	}
	for _, d := range dirs {
		mod, diags := tfconfig.LoadModule(d)
		if diags.HasErrors() {
			t.Fatal(diags.Err())
		}
		o, ok := mod.Outputs["promanage"]
		if !ok || !strings.Contains(o.Description, "") || mod.ModuleCalls["promanage"] == nil {
			t.Errorf("%s: no output \"promanage\" (or no module promanage)", filepath.Base(d))
		}
	}
}

// TestKongTrustedProxies: behind Kong the api trusts the Kong pods (private
// subnets), and Kong trusts only the NLB (public subnets) for the PROXY
// protocol address: both match the Terraform subnet plan.
func TestKongTrustedProxies(t *testing.T) {
	mod, diags := tfconfig.LoadModule(terraformDir(t))
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	vpc := netip.MustParsePrefix(mod.Variables["vpc_cidr"].Default.(string))
	var public, private []string
	for i := 0; i < 3; i++ {
		public = append(public, cidrsubnet(vpc, 4, i).String())
		private = append(private, cidrsubnet(vpc, 3, 4+i).String())
	}
	trusted := func(overlay string) string {
		for _, cm := range Each[*corev1.ConfigMap](loadOverlay(t, overlay)) {
			if strings.HasPrefix(cm.Name, "promanage-config") {
				return cm.Data["PROMANAGE_TRUSTED_PROXIES"]
			}
		}
		return ""
	}
	if got := trusted("kong"); got != strings.Join(private, ",") {
		t.Errorf("kong overlay PROMANAGE_TRUSTED_PROXIES = %q, want the private subnets (Kong pods) %v", got, private)
	}
	if got := trusted("production"); got != strings.Join(public, ",") {
		t.Errorf("production PROMANAGE_TRUSTED_PROXIES = %q, want the public subnets (ALB) %v", got, public)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/k8s/gateway/kong-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Env   map[string]string `json:"env"`
		Proxy struct {
			Annotations map[string]string `json:"annotations"`
			HTTP        struct {
				Parameters []string `json:"parameters"`
			} `json:"http"`
		} `json:"proxy"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	if values.Env["trusted_ips"] != strings.Join(public, ",") || values.Env["real_ip_header"] != "proxy_protocol" ||
		values.Proxy.Annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] != "*" ||
		!slices.Contains(values.Proxy.HTTP.Parameters, "proxy_protocol") {
		t.Errorf("kong-values.yaml does not take the client address from the NLB's PROXY protocol header, trusting the public subnets %v: %+v", public, values)
	}
}
