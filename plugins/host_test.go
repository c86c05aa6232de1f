package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadRejectsInvalidModules(t *testing.T) {
	h := newTestHost(t, &Options{MaxModuleBytes: 64 << 10})
	good := testdata(t, "good.wasm")
	rnd := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rnd.UintN(256))
	}
	// Valid header, then noise: reaches the decoder proper.
	noisy := append([]byte("\x00asm\x01\x00\x00\x00"), garbage...)

	tests := []struct {
		name   string
		wasm   []byte
		reason string // substring of InvalidModuleError.Reason
	}{
		{"Empty", nil, "not a WebAssembly"},
		{"Garbage", garbage, "not a WebAssembly"},
		{"NoisyAfterHeader", noisy, ""},
		{"Truncated", good[:len(good)/2], ""},
		{"TooLarge", make([]byte, 65<<10), "limit"},
		{"ImportsPathOpen", testdata(t, "import_path_open.wasm"), "path_open is not allowed"},
		{"ImportsSockAccept", testdata(t, "import_sock_accept.wasm"), "sock_accept is not allowed"},
		{"ImportsUnknownModule", testdata(t, "import_unknown.wasm"), "env.system is not allowed"},
		{"HugeMemory", testdata(t, "huge_memory.wasm"), "memory minimum is 1024 pages, the limit is 256"},
		{"NoHandle", testdata(t, "no_handle.wasm"), "pm_handle"},
		{"InitNeverReturns", testdata(t, "init_loop.wasm"), "instantiate"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Load(context.Background(), tt.name, tt.wasm, validateManifest("bad", 0))
			var ime *InvalidModuleError
			if !errors.As(err, &ime) {
				t.Fatalf("Load(case %d) = %v, want *InvalidModuleError", i, err)
			}
			if !strings.Contains(ime.Reason, tt.reason) {
				t.Errorf("reason %q does not mention %q", ime.Reason, tt.reason)
			}
		})
	}
	// Many random truncations and bit flips of a valid module: always an
	// error or a working plugin, never a panic.
	for i := 0; i < 200; i++ {
		b := append([]byte(nil), good...)
		switch i % 2 {
		case 0:
			b = b[:rnd.IntN(len(b))]
		case 1:
			b[8+rnd.IntN(len(b)-8)] ^= byte(1 << rnd.UintN(8))
		}
		key := fmt.Sprintf("fuzz-%d", i)
		if p, err := h.Load(context.Background(), key, b, validateManifest("fuzz", 0)); err == nil {
			_, _ = h.Call(context.Background(), p, "t", "project.validate", []byte(`"ok"`))
			h.Unload(key)
		}
	}
}

func TestManifestValidate(t *testing.T) {
	ok := Manifest{Name: "budget-guard", Hooks: []string{"project.validate", "project.created"},
		Config: json.RawMessage(`{"a":1}`), FailurePolicy: FailOpen, AllowedHosts: []string{"hooks.example.com", "*.example.org", "203.0.114.7"}, TimeoutMS: 250}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid manifest: %v", err)
	}
	tests := []struct {
		field string
		edit  func(m *Manifest)
	}{
		{"name", func(m *Manifest) { m.Name = "Budget Guard" }},
		{"name", func(m *Manifest) { m.Name = "" }},
		{"hooks", func(m *Manifest) { m.Hooks = nil }},
		{"hooks", func(m *Manifest) { m.Hooks = []string{"project.exploded"} }},
		{"hooks", func(m *Manifest) { m.Hooks = []string{"task.done", "task.done"} }},
		{"config", func(m *Manifest) { m.Config = json.RawMessage(`[1,2]`) }},
		{"failure_policy", func(m *Manifest) { m.FailurePolicy = "maybe" }},
		{"allowed_hosts", func(m *Manifest) { m.AllowedHosts = []string{"https://x.example.com"} }},
		{"allowed_hosts", func(m *Manifest) { m.AllowedHosts = []string{"x.example.com:8080"} }},
		{"allowed_hosts", func(m *Manifest) { m.AllowedHosts = []string{"*"} }},
		{"allowed_hosts", func(m *Manifest) { m.AllowedHosts = []string{"*.com"} }},
		{"allowed_hosts", func(m *Manifest) { m.AllowedHosts = []string{"Example.COM"} }},
		{"timeout_ms", func(m *Manifest) { m.TimeoutMS = -1 }},
		{"timeout_ms", func(m *Manifest) { m.TimeoutMS = 3_600_000 }},
	}
	for _, tt := range tests {
		m := ok
		tt.edit(&m)
		var ime *InvalidManifestError
		if err := m.Validate(); !errors.As(err, &ime) || ime.Field != tt.field {
			t.Errorf("%+v: Validate() = %v, want field %s", m, err, tt.field)
		}
	}
	// The operator's MaxTimeout is enforced by Load.
	h := newTestHost(t, &Options{MaxTimeout: time.Second})
	_, err := h.Load(context.Background(), "k", testdata(t, "good.wasm"), validateManifest("slowpoke", 2000))
	var ime *InvalidManifestError
	if !errors.As(err, &ime) || ime.Field != "timeout_ms" {
		t.Fatalf("Load with timeout over MaxTimeout = %v, want InvalidManifestError(timeout_ms)", err)
	}
}

func TestLoadSameKeyReturnsCachedPlugin(t *testing.T) {
	h := newTestHost(t, nil)
	p1 := mustLoad(t, h, "v1", "good.wasm", validateManifest("good", 0))
	p2 := mustLoad(t, h, "v1", "good.wasm", validateManifest("good", 0))
	if p1 != p2 {
		t.Fatal("loading the same key twice compiled the module again")
	}
	if _, err := h.Load(context.Background(), "v1", testdata(t, "hostile.wasm"), validateManifest("good", 0)); err == nil {
		t.Fatal("loading different bytes under a loaded key succeeded")
	}
	h.Unload("v1")
	if _, err := h.Call(context.Background(), p1, "acme", "project.validate", []byte(`{}`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Unload = %v, want ErrClosed", err)
	}
}

func TestCallRejectsUndeclaredHookAndLargeInput(t *testing.T) {
	h := newTestHost(t, &Options{MaxInputBytes: 1024})
	p := mustLoad(t, h, "good", "good.wasm", validateManifest("good", 0))
	if _, err := h.Call(context.Background(), p, "acme", "task.validate", []byte(`{}`)); !errors.Is(err, ErrHookNotDeclared) {
		t.Errorf("undeclared hook: %v, want ErrHookNotDeclared", err)
	}
	big := []byte(`"` + strings.Repeat("x", 2000) + `"`)
	if _, err := h.Call(context.Background(), p, "acme", "project.validate", big); !errors.Is(err, ErrInputTooLarge) {
		t.Errorf("large input: %v, want ErrInputTooLarge", err)
	}
	inv, err := h.Call(context.Background(), p, "acme", "project.validate", []byte(`{}`))
	if err != nil {
		t.Fatalf("good call: %v", err)
	}
	res, err := DecodeValidationResult(inv.Output)
	if err != nil || !res.Allow {
		t.Fatalf("result = %+v, %v; want allow", res, err)
	}
}

func TestLogsAreCapturedAndBounded(t *testing.T) {
	h := newTestHost(t, &Options{MaxLogBytes: 4096})
	p := mustLoad(t, h, "hostile", "hostile.wasm", validateManifest("hostile", 2000))
	inv, err := h.Call(context.Background(), p, "acme", "project.validate", []byte(`"ok"`))
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Logs) != 1 || inv.Logs[0] != "info: hostile: ok" {
		t.Errorf("Logs = %q, want [info: hostile: ok]", inv.Logs)
	}
	inv, err = h.Call(context.Background(), p, "acme", "project.validate", []byte(`"flood"`))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, l := range inv.Logs {
		total += len(l)
	}
	if total > 4096+64 || inv.Logs[len(inv.Logs)-1] != "host: log truncated" {
		t.Errorf("flood: %d lines, %d bytes, last %q; want <= 4 KiB ending in a truncation note", len(inv.Logs), total, inv.Logs[len(inv.Logs)-1])
	}
}

// A tenant at its concurrency cap waits, then gets ErrBusy; another tenant
// calling the same plugin at the same time is not affected.
func TestTenantConcurrencyCap(t *testing.T) {
	h := newTestHost(t, &Options{TenantConcurrency: 1, PoolSize: 8})
	p := mustLoad(t, h, "hostile", "hostile.wasm", validateManifest("hostile", 2000))

	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // holds tenant a's only slot for ~2s (then times out)
		defer wg.Done()
		close(started)
		h.Call(context.Background(), p, "a", "project.validate", []byte(`"loop"`))
	}()
	<-started
	time.Sleep(50 * time.Millisecond)

	start := time.Now()
	_, err := h.Call(ctxTimeout(t, 150*time.Millisecond), p, "a", "project.validate", []byte(`"ok"`))
	if !errors.Is(err, ErrBusy) {
		t.Errorf("second call of tenant a = %v, want ErrBusy", err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("ErrBusy after %v, want it to wait for the context", waited)
	}
	if _, err := h.Call(ctxTimeout(t, time.Second), p, "b", "project.validate", []byte(`"ok"`)); err != nil {
		t.Errorf("tenant b while a is saturated: %v", err)
	}
	wg.Wait()
}

// The process-wide cap bounds calls of all tenants together: with two
// slots held by two tenants' looping calls, a third tenant waits and gets
// ErrBusy; when they finish, it runs.
func TestProcessConcurrencyCap(t *testing.T) {
	h := newTestHost(t, &Options{MaxConcurrentCalls: 2, PoolSize: 8})
	p := mustLoad(t, h, "hostile", "hostile.wasm", validateManifest("hostile", 2000))
	var wg sync.WaitGroup
	for _, tenant := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.CallTimeout(context.Background(), p, tenant, "project.validate", []byte(`"loop"`), 500*time.Millisecond)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := h.Call(ctxTimeout(t, 150*time.Millisecond), p, "c", "project.validate", []byte(`"ok"`)); !errors.Is(err, ErrBusy) {
		t.Errorf("third tenant while the process is at its cap = %v, want ErrBusy", err)
	}
	wg.Wait()
	if _, err := h.Call(ctxTimeout(t, 2*time.Second), p, "c", "project.validate", []byte(`"ok"`)); err != nil {
		t.Errorf("after the slots were released: %v", err)
	}
}

// CallTimeout overrides the manifest's deadline (here shorter), within the
// operator's maximum.
func TestCallTimeoutOverridesManifest(t *testing.T) {
	h := newTestHost(t, nil)
	p := mustLoad(t, h, "hostile", "hostile.wasm", validateManifest("hostile", 3000))
	start := time.Now()
	_, err := h.CallTimeout(context.Background(), p, "a", "project.validate", []byte(`"loop"`), 50*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v: the 50ms override was not applied", d)
	}
}

// An instance that served a call successfully is reused; one whose call
// failed is discarded and replaced by a fresh one.
func TestFailedInstanceIsReplaced(t *testing.T) {
	h := newTestHost(t, &Options{PoolSize: 1})
	p := mustLoad(t, h, "hostile", "hostile.wasm", validateManifest("hostile", 2000))
	call := func(mode string) error {
		_, err := h.Call(context.Background(), p, "acme", "project.validate", []byte(`"`+mode+`"`))
		return err
	}
	if err := call("mutate"); err != nil { // succeeds, leaves the instance poisoned
		t.Fatal(err)
	}
	if err := call("ok"); !errors.Is(err, ErrTrap) { // same instance: reused after success
		t.Fatalf("call on the poisoned instance = %v, want ErrTrap", err)
	}
	if err := call("ok"); err != nil { // the poisoned instance was discarded
		t.Fatalf("call after the trap = %v, want a fresh instance", err)
	}
}

func TestCallAfterHostClose(t *testing.T) {
	h, err := NewHost(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Load(context.Background(), "good", testdata(t, "good.wasm"), validateManifest("good", 0))
	if err != nil {
		t.Fatal(err)
	}
	h.Close(context.Background())
	if _, err := h.Call(context.Background(), p, "acme", "project.validate", []byte(`{}`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close = %v, want ErrClosed", err)
	}
	if _, err := h.Load(context.Background(), "x", testdata(t, "good.wasm"), validateManifest("good", 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Load after Close = %v, want ErrClosed", err)
	}
}

func TestCompilationCacheDir(t *testing.T) {
	dir := t.TempDir()
	h := newTestHost(t, &Options{CacheDir: dir})
	mustLoad(t, h, "hostile", "hostile.wasm", validateManifest("hostile", 0))
	h.Close(context.Background())
	h2 := newTestHost(t, &Options{CacheDir: dir})
	p := mustLoad(t, h2, "hostile", "hostile.wasm", validateManifest("hostile", 0))
	if _, err := h2.Call(context.Background(), p, "acme", "project.validate", []byte(`"ok"`)); err != nil {
		t.Fatal(err)
	}
}

// Compilations are capped process-wide: with the one load slot taken, a load
// whose context ends first gets ErrBusy; once the slot is free it loads.
func TestLoadConcurrencyCap(t *testing.T) {
	ctx := context.Background()
	h, err := NewHost(ctx, &Options{MaxConcurrentLoads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(ctx) })
	wasm := testdata(t, "good.wasm")
	m := Manifest{Name: "good", Hooks: []string{"project.validate"}, FailurePolicy: "fail_closed"}
	h.loads <- struct{}{} // an upload in progress
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := h.Load(short, "k1", wasm, m); !errors.Is(err, ErrBusy) {
		t.Fatalf("load with the slot taken: %v, want ErrBusy", err)
	}
	<-h.loads
	if _, err := h.Load(ctx, "k1", wasm, m); err != nil {
		t.Fatalf("load with the slot free: %v", err)
	}
}
