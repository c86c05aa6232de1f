package validate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readDockerfile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDockerfile(t *testing.T) {
	for _, v := range CheckDockerfile(readDockerfile(t)) {
		t.Error(v)
	}
}

func TestDockerfileRulesCanFail(t *testing.T) {
	src := readDockerfile(t)
	cases := []struct {
		name, from, to, want string
	}{
		{"RootUser", "USER 65532:65532", "USER 0", "runs as root"},
		{"NamedUser", "USER 65532:65532", "USER nonroot", "must be numeric"},
		{"NoUser", "USER 65532:65532", "", "must be numeric"},
		{"FatFinalImage", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:bookworm@sha256:" + strings.Repeat("0", 64) + " #", "want gcr.io/distroless"},
		{"CgoOn", "CGO_ENABLED=0", "CGO_ENABLED=1", "CGO_ENABLED=0 is not set"},
		{"NoTrimpath", "go build -trimpath", "go build", "-trimpath"},
		{"NoRevisionLabel", "org.opencontainers.image.revision=", "org.example.revision=", "org.opencontainers.image.revision"},
		{"RemoteAdd", "COPY . .", "ADD https://example.com/src.tar.gz /src", "ADD of remote content"},
		{"LatestBase", "golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d", "golang:latest", "uses :latest"},
		{"BaseNotPinnedByDigest", "nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639", "nonroot", "not pinned by digest"},
		{"ShellEntrypoint", `ENTRYPOINT ["/usr/local/bin/promanage"]`, "ENTRYPOINT /usr/local/bin/promanage", "exec form"},
		{"SingleStage", "FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS build", "FROM gcr.io/distroless/static-debian12:nonroot AS build", "multi-stage"},
		{"RunInFinalStage", "USER 65532:65532", "RUN echo hi\nUSER 65532:65532", "RUN in the final stage"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(src, tc.from) {
				t.Fatalf("Dockerfile no longer contains %q; update the test case", tc.from)
			}
			mutated := strings.ReplaceAll(src, tc.from, tc.to)
			if tc.name == "SingleStage" {
				mutated = src[strings.Index(src, "FROM gcr.io/distroless"):]
				mutated = strings.ReplaceAll(mutated, "COPY --from=build", "COPY")
			}
			got := CheckDockerfile(mutated)
			found := false
			for _, v := range got {
				found = found || strings.Contains(v, tc.want)
			}
			if !found {
				t.Fatalf("want a violation containing %q, got %q", tc.want, got)
			}
		})
	}
}

// TestDockerignoreKeepsSecretsOut: the build context never carries local secrets
// or VCS metadata into a layer.
func TestDockerignoreKeepsSecretsOut(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{".git", "**/.env", "**/*.pem", "**/*.key"} {
		if !lines[want] {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
	for l := range lines {
		if l == "cmd/" || l == "cmd" || l == "go.mod" || l == "go.sum" || l == "**" {
			t.Errorf(".dockerignore excludes %s, which the build needs", l)
		}
	}
}
