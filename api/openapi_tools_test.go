package api

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The served document also passes the two independent validators the
// issue's reviewers used: @seriousme/openapi-schema-validator (the official
// OAS 3.1 JSON Schema) and Redocly CLI (its recommended rules as errors,
// plus example and unused-component checks; tools/openapi-validators/
// redocly.yaml). Both are pinned with integrity hashes in
// tools/openapi-validators/package-lock.json; scripts/test.sh installs
// them with `npm ci`.
func TestOpenAPIIndependentValidators(t *testing.T) {
	bin, err := filepath.Abs(filepath.Join("..", "tools", "openapi-validators", "node_modules", ".bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bin, "redocly")); err != nil {
		skipOrFail(t, "PROMANAGE_TEST_DOCS", "the independent OpenAPI validators are not installed (npm ci --prefix tools/openapi-validators)")
	}
	spec := filepath.Join(t.TempDir(), "openapi.json")
	if err := os.WriteFile(spec, servedSpec(t), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) ([]byte, error) {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		// No telemetry, no update check: the test machines have no network.
		cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				if cmd.Process != nil {
					_ = cmd.Process.Kill()
				}
			}
		}()
		return cmd.CombinedOutput()
	}

	t.Run("seriousme", func(t *testing.T) {
		out, err := run("validate-api", spec)
		var res struct {
			Valid bool `json:"valid"`
		}
		if jerr := json.Unmarshal(out, &res); err != nil || jerr != nil || !res.Valid {
			t.Errorf("@seriousme/openapi-schema-validator: %v\n%s", err, out)
		}
	})
	t.Run("redocly", func(t *testing.T) {
		cfg := filepath.Join(filepath.Dir(bin), "..", "redocly.yaml")
		if out, err := run("redocly", "lint", "--config", cfg, "--format=stylish", spec); err != nil {
			t.Errorf("redocly lint: %v\n%s", err, out)
		}
	})
}
