package validate

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
	"sigs.k8s.io/yaml"
)

// Workflow is the part of a GitHub Actions workflow the checks read.
type Workflow struct {
	Env  map[string]string `json:"env"`
	Jobs map[string]*Job   `json:"jobs"`
}

// Job is one workflow job.
type Job struct {
	If       string `json:"if"`
	Needs    any    `json:"needs"`
	Services map[string]struct {
		Image string `json:"image"`
	} `json:"services"`
	Strategy struct {
		Matrix map[string]any `json:"matrix"`
	} `json:"strategy"`
	Steps []Step `json:"steps"`
}

// Step is one step of a job.
type Step struct {
	ID               string            `json:"id"`
	Name             string            `json:"name"`
	Uses             string            `json:"uses"`
	Run              string            `json:"run"`
	With             map[string]any    `json:"with"`
	Env              map[string]string `json:"env"`
	WorkingDirectory string            `json:"working-directory"`
}

// LoadWorkflow reads a workflow file.
func LoadWorkflow(path string) (*Workflow, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var w Workflow
	if err := yaml.Unmarshal(b, &w); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return &w, b, nil
}

// ToolchainFacts are what the workflow's toolchain must agree with.
type ToolchainFacts struct {
	// DockerGoVersion is the Go release of the Dockerfile's golang build stage.
	DockerGoVersion string
	// GoDirectives maps each go.mod of the repository to its go (and
	// toolchain) directive.
	GoDirectives map[string]string
	// Examples are the directories under deploy/terraform/examples.
	Examples []string
}

// RepoToolchainFacts reads the Dockerfile and every go.mod under root.
func RepoToolchainFacts(root string) (ToolchainFacts, error) {
	f := ToolchainFacts{GoDirectives: map[string]string{}}
	src, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return f, err
	}
	if m := regexp.MustCompile(`(?m)^FROM\s+(?:--\S+\s+)*golang:(\d+\.\d+\.\d+)`).FindSubmatch(src); m != nil {
		f.DockerGoVersion = string(m[1])
	}
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && p != root || d.Name() == "node_modules" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.Name() != "go.mod" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		mf, err := modfile.ParseLax(p, b, nil)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		v := ""
		if mf.Go != nil {
			v = mf.Go.Version
		}
		if mf.Toolchain != nil {
			v = strings.TrimPrefix(mf.Toolchain.Name, "go")
		}
		f.GoDirectives[rel] = v
		return nil
	})
	if err != nil {
		return f, err
	}
	dirs, _ := filepath.Glob(filepath.Join(root, "deploy/terraform/examples/*"))
	for _, d := range dirs {
		f.Examples = append(f.Examples, filepath.Base(d))
	}
	return f, nil
}

var (
	pinnedUses    = regexp.MustCompile(`(?m)^\s*(?:-\s+)?uses:\s+([^\s#]+)(.*)$`)
	shaRef        = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$`)
	versionNote   = regexp.MustCompile(`#\s*v?\d+(\.\d+)*`)
	goRunVersion  = regexp.MustCompile(`\bgo\s+(run|install)\s+[^\s;&|]*@`)
	imageArgument = regexp.MustCompile(`--image[ =](\S+)`)
)

// CheckWorkflow returns what breaks the pipeline's promises: one Go
// toolchain everywhere (the image's), tools resolved by that toolchain (no
// `go run module@version` whose go.mod may need a newer Go), actions and
// images pinned by digest, images scanned before they are pushed, a release
// that promotes instead of rebuilding, Terraform validated and linted per
// example, and a kind smoke test of the dev overlay.
func CheckWorkflow(w *Workflow, raw []byte, f ToolchainFacts) []string {
	var out []string
	bad := func(rule, format string, a ...any) { out = append(out, rule+": "+fmt.Sprintf(format, a...)) }

	// Toolchain.
	gov := w.Env["GO_VERSION"]
	if gov == "" || gov != f.DockerGoVersion {
		bad("workflow.go-version", "env GO_VERSION %q differs from the Dockerfile's golang:%s: CI must test with the Go the image is built with", gov, f.DockerGoVersion)
	}
	if w.Env["GOTOOLCHAIN"] != "local" {
		bad("workflow.go-version", "env GOTOOLCHAIN must be local (no toolchain downloads behind the pinned one)")
	}
	for mod, v := range f.GoDirectives {
		if gov != "" && semver.Compare("v"+v, "v"+gov) > 0 {
			bad("workflow.go-version", "%s needs Go %s, newer than CI's %s", mod, v, gov)
		}
	}
	names := make([]string, 0, len(w.Jobs))
	for n := range w.Jobs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, jn := range names {
		for _, s := range w.Jobs[jn].Steps {
			if strings.HasPrefix(s.Uses, "actions/setup-go@") {
				if v, _ := s.With["go-version"].(string); v != "${{ env.GO_VERSION }}" {
					bad("workflow.go-version", "job %s: setup-go must use go-version ${{ env.GO_VERSION }}, has %q (go-version-file reads the go directive, not the patch release the image uses)", jn, v)
				}
			}
			if goRunVersion.MatchString(s.Run) {
				bad("workflow.go-tools", "job %s: `go run/install module@version` builds with whatever go.mod that module has (kustomize v5.8.3 needs Go 1.27); use a tool directive of deploy/validate/go.mod or a library", jn)
			}
			for _, m := range imageArgument.FindAllStringSubmatch(s.Run, -1) {
				if !strings.Contains(m[1], "@sha256:") {
					bad("workflow.pinned-images", "job %s: image %s is not pinned by digest", jn, m[1])
				}
			}
		}
		for sn, svc := range w.Jobs[jn].Services {
			if !strings.Contains(svc.Image, "@sha256:") {
				bad("workflow.pinned-images", "job %s: service %s image %s is not pinned by digest", jn, sn, svc.Image)
			}
		}
	}

	// Actions pinned to a commit, with the version they are in a comment.
	for _, m := range pinnedUses.FindAllStringSubmatch(string(raw), -1) {
		ref := m[1]
		if strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "docker://") {
			continue
		}
		if !shaRef.MatchString(ref) {
			bad("workflow.pinned-actions", "%s is not pinned to a full commit SHA", ref)
		} else if !versionNote.MatchString(m[2]) {
			bad("workflow.pinned-actions", "%s has no \"# vX.Y.Z\" comment saying which release the SHA is", ref)
		}
	}

	// Images: scanned before push, pushed per architecture, ECR-scanned per
	// architecture; a tag promotes.
	pushJobs := 0
	for _, jn := range names {
		j := w.Jobs[jn]
		scan, push := -1, -1
		for i, s := range j.Steps {
			if strings.HasPrefix(s.Uses, "docker/build-push-action@") {
				if p, _ := s.With["push"].(bool); p {
					bad("workflow.scan-before-push", "job %s: build-push-action pushes before any scan", jn)
				}
				if strings.Contains(fmt.Sprint(s.With["platforms"]), ",") {
					bad("workflow.scan-before-push", "job %s: one build for several platforms makes an index ECR cannot scan; build one architecture per job", jn)
				}
			}
			if strings.HasPrefix(s.Uses, "aquasecurity/trivy-action@") && scan < 0 {
				scan = i
			}
			if regexp.MustCompile(`\bdocker push\b|imagetools create`).MatchString(s.Run) && push < 0 {
				push = i
			}
			if strings.Contains(s.Run, "image-scan-complete") && strings.Contains(s.Run, "outputs.digest") {
				bad("workflow.ecr-scan", "job %s: waits for ECR's scan of the index digest; ECR scans per-architecture images", jn)
			}
		}
		if strings.Contains(jn, "image") && push >= 0 {
			pushJobs++
			if scan < 0 || scan > push {
				bad("workflow.scan-before-push", "job %s pushes an image it has not scanned first", jn)
			}
		}
		if regexp.MustCompile(`ref_type == 'tag'|startsWith\(github\.ref, 'refs/tags/'\)`).MatchString(j.If) {
			for _, s := range j.Steps {
				if strings.HasPrefix(s.Uses, "docker/build-push-action@") || strings.Contains(s.Run, "docker build") {
					bad("workflow.release", "job %s builds on a tag: a release must promote the digest main built (immutable tags)", jn)
				}
			}
			if !slices.ContainsFunc(j.Steps, func(s Step) bool { return strings.Contains(s.Run, "aws ecr put-image") }) {
				bad("workflow.release", "job %s runs on tags but does not promote the built digest (aws ecr put-image)", jn)
			}
		}
	}
	if pushJobs == 0 {
		bad("workflow.scan-before-push", "no image job pushes a scanned image")
	}

	// Terraform: validate and tflint every example; kind smoke test.
	var tfJob *Job
	for _, jn := range names {
		j := w.Jobs[jn]
		runs := ""
		for _, s := range j.Steps {
			runs += s.Run + "\n"
		}
		if strings.Contains(runs, "terraform validate") {
			tfJob = j
			if !regexp.MustCompile(`(?m)^\s*tflint\s+(--config\s+\S+\s+)?(--call-module-type|--recursive|--format|$)`).MatchString(runs) {
				bad("workflow.terraform", "job %s validates Terraform without tflint", jn)
			}
		}
	}
	if tfJob == nil {
		bad("workflow.terraform", "no job runs terraform validate")
	} else {
		ex := fmt.Sprint(tfJob.Strategy.Matrix["example"])
		for _, e := range f.Examples {
			if !strings.Contains(ex, e) {
				bad("workflow.terraform", "example %s is not in the terraform job's matrix %s", e, ex)
			}
		}
	}
	smoke := false
	for _, jn := range names {
		runs := ""
		for _, s := range w.Jobs[jn].Steps {
			runs += s.Run + "\n"
		}
		if strings.Contains(runs, "kind create cluster") {
			smoke = true
			for _, want := range []string{"kube-prometheus-stack", "prometheus-adapter-values.yaml", "k8s/overlays/dev",
				"promanage-migrate", "/readyz", "get hpa", "currentMetrics"} {
				if !strings.Contains(runs, want) {
					bad("workflow.kind-smoke", "job %s does not do %q", jn, want)
				}
			}
		}
	}
	if !smoke {
		bad("workflow.kind-smoke", "no job creates a kind cluster to apply the dev overlay")
	}
	sort.Strings(out)
	return out
}
