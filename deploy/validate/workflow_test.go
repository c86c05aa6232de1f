package validate

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
)

func lintWorkflow(t *testing.T, path string) []*actionlint.Error {
	t.Helper()
	opts := &actionlint.LinterOptions{}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		opts.Shellcheck = sc
	} else {
		t.Log("shellcheck not installed: run: blocks are not checked by shellcheck")
	}
	l, err := actionlint.NewLinter(io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.LintFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return errs
}

func TestWorkflowActionlint(t *testing.T) {
	for _, e := range lintWorkflow(t, filepath.Join(repoRoot(t), ".github/workflows/ci.yml")) {
		t.Errorf("%s:%d:%d: %s [%s]", e.Filepath, e.Line, e.Column, e.Message, e.Kind)
	}
}

// TestWorkflowPromises: the pipeline does what the issue asks, in the right order.
func TestWorkflowPromises(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), ".github/workflows/ci.yml"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	for _, want := range []string{
		"run: make test", "image: postgres:", "image: redis:7", "govulncheck",
		"actions/attest-build-provenance", "format: cyclonedx",
		"environment:\n      name: production", "needs: [manifest]", "id-token: write",
		"permissions:\n  contents: read", "promanage-migrate", "promanage-db-bootstrap",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("ci.yml lacks %q", want)
		}
	}
	if strings.Index(src, "wait_job promanage-migrate") > strings.LastIndex(src, "rollout status deployment/promanage-api") {
		t.Error("the deploy job must wait for the migration Job before rolling out the api")
	}
	if strings.Index(src, "wait_job promanage-db-bootstrap") > strings.LastIndex(src, "wait_job promanage-migrate") {
		t.Error("the database roles must exist before the migration runs")
	}
	if strings.Contains(src, "type=raw,value=latest") || strings.Contains(src, ":latest") {
		t.Error("images must not be tagged latest (ECR tags are immutable)")
	}
}

func workflowFacts(t *testing.T) ToolchainFacts {
	t.Helper()
	f, err := RepoToolchainFacts(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if f.DockerGoVersion == "" || len(f.GoDirectives) < 3 || len(f.Examples) < 3 {
		t.Fatalf("facts: %+v", f)
	}
	return f
}

// TestWorkflowToolchainAndSupplyChain: the workflow agrees with the
// Dockerfile and every go.mod, pins what it runs, scans before it pushes and
// promotes on release.
func TestWorkflowToolchainAndSupplyChain(t *testing.T) {
	w, raw, err := LoadWorkflow(filepath.Join(repoRoot(t), ".github/workflows/ci.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range CheckWorkflow(w, raw, workflowFacts(t)) {
		t.Error(v)
	}
}

func TestWorkflowRulesCanFail(t *testing.T) {
	path := filepath.Join(repoRoot(t), ".github/workflows/ci.yml")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	facts := workflowFacts(t)
	cases := []struct{ name, from, to, want string }{
		{"GoVersionFromGoMod", "go-version: ${{ env.GO_VERSION }}", "go-version-file: go.mod", "workflow.go-version"},
		{"GoOlderThanImage", `GO_VERSION: "1.26.8"`, `GO_VERSION: "1.26.0"`, "workflow.go-version"},
		{"KustomizeByGoRun", "go run ./cmd/render -image", "go run sigs.k8s.io/kustomize/kustomize/v5@v5.8.3 edit set image x; go run ./cmd/render -image", "workflow.go-tools"},
		{"ActionByTag", "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2", "actions/checkout@v4", "workflow.pinned-actions"},
		{"ServiceImageByTag", "image: redis:7-alpine@sha256:6ab0b6e7381779332f97b8ca76193e45b0756f38d4c0dcda72dbb3c32061ab99", "image: redis:7", "workflow.pinned-images"},
		{"KindNodeByTag", "--image kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f", "--image kindest/node:v1.33.1", "workflow.pinned-images"},
		{"PushBeforeScan", "          push: false\n          provenance: false", "          push: true\n          provenance: false", "workflow.scan-before-push"},
		{"MultiArchIndex", "platforms: linux/${{ matrix.arch }}", "platforms: linux/amd64,linux/arm64", "workflow.scan-before-push"},
		{"ReleaseRebuilds", "      - name: the tag is on main\n", "      - run: docker build -t x .\n      - name: the tag is on main\n", "workflow.release"},
		{"NoTerraformForExample", "example: [aws-s3, aws-gcs, aws-azblob]", "example: [aws-s3, aws-gcs]", "workflow.terraform"},
		{"NoTflint", `tflint --config "$GITHUB_WORKSPACE/deploy/terraform/.tflint.hcl" --call-module-type=all --format compact`, "true", "workflow.terraform"},
		{"SmokeWithoutHPAValues", "currentMetrics", "conditions", "workflow.kind-smoke"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(orig), tc.from) {
				t.Fatalf("ci.yml no longer contains %q; update the test case", tc.from)
			}
			p := filepath.Join(t.TempDir(), "ci.yml")
			if err := os.WriteFile(p, []byte(strings.Replace(string(orig), tc.from, tc.to, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			w, raw, err := LoadWorkflow(p)
			if err != nil {
				t.Fatal(err)
			}
			got := CheckWorkflow(w, raw, facts)
			if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, tc.want+":") }) {
				t.Fatalf("rule %s not reported; got %q", tc.want, got)
			}
		})
	}
	t.Run("GoModNewerThanCI", func(t *testing.T) {
		w, raw, _ := LoadWorkflow(path)
		f := workflowFacts(t)
		f.GoDirectives["deploy/validate/go.mod"] = "1.27.0"
		if got := CheckWorkflow(w, raw, f); !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "needs Go 1.27.0") }) {
			t.Fatalf("a go.mod needing a newer Go than CI was accepted: %q", got)
		}
	})
}

func TestActionlintCanFail(t *testing.T) {
	bad := `on: push
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo ${{ github.event.pull_request.title }}
      - run: echo ${{ steps.nope.outputs.x }}
        if: ${{ matrix.os == 'linux' }}
`
	p := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if errs := lintWorkflow(t, p); len(errs) == 0 {
		t.Fatal("actionlint accepted a workflow with script injection and undefined contexts")
	}
}

// TestRenovateConfig: Renovate keeps the pins current; each of its custom
// managers matches what it is meant to update (a pattern that matches
// nothing would silently leave a pin to rot).
func TestRenovateConfig(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, ".github/renovate.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Extends        []string `json:"extends"`
		CustomManagers []struct {
			ManagerFilePatterns []string `json:"managerFilePatterns"`
			MatchStrings        []string `json:"matchStrings"`
		} `json:"customManagers"`
		PostUpdateOptions []string `json:"postUpdateOptions"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"helpers:pinGitHubActionDigestsToSemver", "docker:pinDigests"} {
		if !slices.Contains(cfg.Extends, want) {
			t.Errorf("renovate.json does not extend %s", want)
		}
	}
	if !slices.Contains(cfg.PostUpdateOptions, "gomodTidy") {
		t.Error("renovate.json: go.mod updates must run go mod tidy")
	}
	var files []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules" || d.Name() == ".data" || d.Name() == ".tools") {
			return filepath.SkipDir
		}
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return nil
	})
	if len(cfg.CustomManagers) < 4 {
		t.Fatalf("only %d custom managers", len(cfg.CustomManagers))
	}
	for i, m := range cfg.CustomManagers {
		for _, ms := range m.MatchStrings {
			re, err := regexp.Compile(ms)
			if err != nil {
				t.Errorf("custom manager %d: %v", i, err)
				continue
			}
			matched := 0
			for _, fp := range m.ManagerFilePatterns {
				fre := regexp.MustCompile(strings.Trim(fp, "/"))
				for _, f := range files {
					if fre.MatchString(f) {
						src, _ := os.ReadFile(filepath.Join(root, f))
						matched += len(re.FindAllString(string(src), -1))
					}
				}
			}
			if matched == 0 {
				t.Errorf("custom manager %d: %q matches nothing in %v", i, ms, m.ManagerFilePatterns)
			}
		}
	}
}
