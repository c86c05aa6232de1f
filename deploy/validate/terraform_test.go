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

	networkingv1 "k8s.io/api/networking/v1"

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
	want := map[string]bool{ // output -> must be sensitive
		"promanage_database_url": true, "promanage_redis_url": true, "kratos_dsn": true,
		"promanage_blob_url": false, "promanage_iam_role_arn": false, "ecr_repository_url": false,
		"cluster_name": false, "oidc_issuer_url": false, "public_subnet_cidrs": false,
		"database_subnet_cidrs": false, "promanage_secrets_manager_secret_arn": false,
		"postgres_instance_identifier": false,
	}
	for name, sensitive := range want {
		o, ok := mod.Outputs[name]
		if !ok {
			t.Errorf("output %s missing", name)
			continue
		}
		if sensitive && !o.Sensitive {
			t.Errorf("output %s carries a credential and must be sensitive", name)
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
		{"UnpinnedProvider", "versions.tf", `version = "~> 3.6"`, `version = ">= 3.6"`, "provider random constraint \">= 3.6\" has no upper bound", CheckModule},
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
		{"Unformatted", "outputs.tf", "  sensitive   = true", "  sensitive = true", "not canonically formatted", func(dir string) []string {
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
