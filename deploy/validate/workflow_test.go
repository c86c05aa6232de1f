package validate

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
		"provenance: mode=max", "sbom: true", "actions/attest-build-provenance",
		"environment:\n      name: production", "needs: [image]", "id-token: write",
		"permissions:\n  contents: read", "job promanage-migrate",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("ci.yml lacks %q", want)
		}
	}
	if strings.Index(src, "promanage migrate failed") > strings.Index(src, "rollout status deployment/promanage-api") {
		t.Error("the deploy job must wait for the migration Job before rolling out the api")
	}
	if strings.Contains(src, "type=raw,value=latest") || strings.Contains(src, ":latest") {
		t.Error("images must not be tagged latest (ECR tags are immutable)")
	}
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
