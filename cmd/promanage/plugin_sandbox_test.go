package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promanage/promanage/plugins"
)

// Hostile modules, byte for byte (plugins/hostile_gen_test.go generates
// them): one function declaring 2^32-1 locals (124 bytes), a table.grow by
// 0xFFFFFFF0 on a table declared without a maximum (the call allows if the
// grow was refused), and an import of a global.
const (
	localsBombHex = "0061736d0100000001110360017f017f60047f7f7f7f017e600000030403000102050401010102072103066d656d6f7279020008706d5f616c6c6f63000009706d5f68616e646c6500010a1a0305004180080b0900428e80808080020b0801ffffffff0f7e0b0b14010041100b0e7b22616c6c6f77223a747275657d"
	tableGrowHex  = "0061736d01000000010e0260017f017f60047f7f7f7f017e0303020001040401700001050401010102072103066d656d6f7279020008706d5f616c6c6f63000009706d5f68616e646c6500010a200205004180080b1800d0704170fc0f00417f46047e428e808080800205000b0b0b14010041100b0e7b22616c6c6f77223a747275657d"
	globalImpHex  = "0061736d01000000010e0260017f017f60047f7f7f7f017e02100103656e7607636f756e746572037f000303020001050401010102072103066d656d6f7279020008706d5f616c6c6f63000109706d5f68616e646c6500020a110205004180080b0900428e80808080020b0b14010041100b0e7b22616c6c6f77223a747275657d"
)

func writeHex(t *testing.T, dir, name, h string) string {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// `plugin run` enforces the server's limits with the server's sandbox: a
// module over a structural limit is refused with the limit named, at once;
// a table.grow past the table's bounded maximum fails inside the guest.
func TestPluginRunEnforcesLimits(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, hex, want string
		ok              bool
	}{
		{"LocalsBomb", localsBombHex, "declares 4294967295 or more parameters and locals, the limit is 50000", false},
		{"ImportsGlobal", globalImpHex, "import env.counter (a global) is not allowed", false},
		{"TableGrow", tableGrowHex, `"allow":true`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			module := writeHex(t, dir, tt.name+".wasm", tt.hex)
			var out bytes.Buffer
			m := NewMain(&out, io.Discard)
			start := time.Now()
			err := m.Run(context.Background(), []string{"plugin", "run", "--hook", "project.validate", "--input", "/dev/null", module})
			if tt.ok != (err == nil) {
				t.Fatalf("plugin run: %v\n%s", err, out.String())
			}
			text := out.String()
			if err != nil {
				text += err.Error()
			}
			if !strings.Contains(text, tt.want) {
				t.Fatalf("output does not contain %q:\n%s", tt.want, text)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// `plugin limits` prints the limits in force with the settings applied.
func TestPluginLimitsCLI(t *testing.T) {
	t.Setenv("PROMANAGE_PLUGIN_MAX_MEMORY_MB", "32")
	var out bytes.Buffer
	m := NewMain(&out, io.Discard)
	if err := m.Run(context.Background(), []string{"plugin", "limits", "--json"}); err != nil {
		t.Fatal(err)
	}
	var limits []plugins.Limit
	if err := json.Unmarshal(out.Bytes(), &limits); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range limits {
		got[l.Name] = l.Value
	}
	if got["memory per instance"] != "32 MiB (512 pages)" || got["parameters and locals of a function"] != "50,000" || got["call slack"] != "100 ms" {
		t.Fatalf("limits: %v", got)
	}
}

// The built promanage binary is its own sandbox: `promanage plugin run`
// starts `promanage plugin-sandbox` children (main dispatches them before
// anything else), and refuses the 2^32-1 locals module with the limit named.
func TestBinaryRunsItsOwnSandbox(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build the binary: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "promanage")
	build := exec.Command(gobin, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	good := filepath.Join("..", "..", "examples", "plugins", "naming-policy", "naming-policy.wasm")
	run := func(module string) (string, error) {
		cmd := exec.Command(bin, "plugin", "run", "--hook", "project.validate", "--input", "/dev/null", "--json", module)
		cmd.Env = append(os.Environ(), "PROMANAGE_LOG_LEVEL=error")
		out, err := cmd.Output()
		return string(out), err
	}
	out, err := run(good)
	if err != nil || !strings.Contains(out, `"result"`) {
		t.Fatalf("good module: %v\n%s", err, out)
	}
	out, err = run(writeHex(t, dir, "bomb.wasm", localsBombHex))
	if err == nil || !strings.Contains(out, "the limit is 50000") {
		t.Fatalf("locals bomb: %v\n%s", err, out)
	}
	if _, err := exec.Command(bin, plugins.SandboxArg, "{}").CombinedOutput(); err == nil {
		t.Error("plugin-sandbox run by hand succeeded")
	}
}
