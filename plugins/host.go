package plugins

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// allowedWASI is every WASI preview1 function a module may import: what Go
// (and Rust, TinyGo) reactors need to start and print. Nothing here reaches
// the host: there is no preopened directory, no environment or argument,
// stdin is empty, stdout and stderr go to the call's log, the random source
// is crypto/rand and the clocks are real. path_*, sock_*, fd_readdir and the
// rest are refused at upload.
var allowedWASI = map[string]bool{
	"args_get": true, "args_sizes_get": true,
	"environ_get": true, "environ_sizes_get": true,
	"clock_res_get": true, "clock_time_get": true,
	"fd_close": true, "fd_fdstat_get": true, "fd_fdstat_set_flags": true,
	"fd_prestat_get": true, "fd_prestat_dir_name": true,
	"fd_read": true, "fd_write": true,
	"poll_oneoff": true, "proc_exit": true, "random_get": true, "sched_yield": true,
}

const (
	hostModule = "promanage"
	wasiModule = wasi_snapshot_preview1.ModuleName
	pageSize   = 65536
)

// Host runs plugins. It owns the process's one wazero runtime; create one per
// process with NewHost and share it. Its methods are safe for concurrent use.
type Host struct {
	opts  Options
	rt    wazero.Runtime
	cache wazero.CompilationCache

	mu      sync.Mutex
	closed  bool
	plugins map[string]*Plugin
	tenants map[string]chan struct{} // per-tenant semaphores
	global  chan struct{}            // process-wide semaphore (MaxConcurrentCalls)
	loads   chan struct{}            // process-wide semaphore (MaxConcurrentLoads)
}

// NewHost creates the runtime (compiler, memory cap, CloseOnContextDone,
// compilation cache) and instantiates the host modules plugins may import.
func NewHost(ctx context.Context, opts *Options) (*Host, error) {
	o := opts.withDefaults()
	var cache wazero.CompilationCache
	if o.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(o.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("plugin compilation cache %s: %w", o.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	cfg := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(o.MaxMemoryPages).
		WithCompilationCache(cache)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	h := &Host{opts: o, rt: rt, cache: cache, plugins: map[string]*Plugin{}, tenants: map[string]chan struct{}{},
		global: make(chan struct{}, o.MaxConcurrentCalls), loads: make(chan struct{}, o.MaxConcurrentLoads)}

	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		h.Close(ctx)
		return nil, fmt.Errorf("instantiate wasi: %w", err)
	}
	_, err := rt.NewHostModuleBuilder(hostModule).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(h.hostLog), []api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32}, nil).
		WithParameterNames("level", "ptr", "len").
		Export("log").
		Instantiate(ctx)
	if err != nil {
		h.Close(ctx)
		return nil, fmt.Errorf("instantiate host module: %w", err)
	}
	return h, nil
}

// Options returns the limits in force (defaults filled in).
func (h *Host) Options() Options { return h.opts }

// Close unloads every plugin and closes the runtime; later calls fail with
// ErrClosed.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	ps := h.plugins
	h.plugins = map[string]*Plugin{}
	h.mu.Unlock()
	for _, p := range ps {
		p.unload(ctx)
	}
	err := h.rt.Close(ctx)
	if cerr := h.cache.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// Plugin is one loaded plugin version: its compiled module, manifest and
// instance pool.
type Plugin struct {
	key      string
	sum      [32]byte
	manifest Manifest
	compiled wazero.CompiledModule
	host     *Host

	slots chan struct{} // one per live instance: bounds the pool

	mu     sync.Mutex
	idle   []*instance
	active int
	closed bool
}

// Key is the key the plugin was loaded under (the plugin version id).
func (p *Plugin) Key() string { return p.key }

// Manifest returns a copy of the plugin's manifest.
func (p *Plugin) Manifest() Manifest { return p.manifest }

// Load validates a module against the ABI and the operator's limits,
// compiles it and proves it instantiates (running _initialize under a
// deadline); the instance is kept as the first of the pool. It returns an
// *InvalidModuleError or *InvalidManifestError for anything a tenant got
// wrong, and never panics on garbage bytes.
//
// key identifies the plugin version and must not be reused for different
// bytes: loading a key again returns the plugin already loaded (an upload is
// compiled once). Change the manifest by loading a new version.
func (h *Host) Load(ctx context.Context, key string, wasm []byte, m Manifest) (p *Plugin, err error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if time.Duration(m.TimeoutMS)*time.Millisecond > h.opts.MaxTimeout {
		return nil, &InvalidManifestError{Field: "timeout_ms", Reason: fmt.Sprintf("must be at most %d", h.opts.MaxTimeout.Milliseconds())}
	}
	sum := sha256.Sum256(wasm)

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if p := h.plugins[key]; p != nil {
		h.mu.Unlock()
		if p.sum != sum {
			return nil, fmt.Errorf("load plugin %s: key already loaded with a different module", key)
		}
		return p, nil
	}
	h.mu.Unlock()

	if int64(len(wasm)) > h.opts.MaxModuleBytes {
		return nil, &InvalidModuleError{Reason: fmt.Sprintf("module is %d bytes, the limit is %d", len(wasm), h.opts.MaxModuleBytes)}
	}
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return nil, &InvalidModuleError{Reason: "not a WebAssembly binary module"}
	}
	select {
	case h.loads <- struct{}{}:
		defer func() { <-h.loads }()
	case <-ctx.Done():
		return nil, fmt.Errorf("load plugin %s: %w", key, ErrBusy)
	}

	defer func() {
		// wazero is not expected to panic on malformed input, but a tenant's
		// bytes must never take the process down if it does.
		if r := recover(); r != nil {
			p, err = nil, &InvalidModuleError{Reason: fmt.Sprintf("module rejected by the compiler: %v", r)}
		}
	}()
	compiled, err := h.rt.CompileModule(ctx, wasm)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("compile plugin %s: %w", key, ctx.Err())
		}
		return nil, &InvalidModuleError{Reason: err.Error()}
	}
	if err := h.checkModule(compiled); err != nil {
		compiled.Close(ctx)
		return nil, err
	}

	p = &Plugin{
		key: key, sum: sum, manifest: m, compiled: compiled, host: h,
		slots: make(chan struct{}, h.opts.PoolSize),
	}
	// Prove the module starts: resolve its imports and run _initialize.
	initCtx, cancel := context.WithTimeout(ctx, max(h.timeoutFor(p, m.Hooks[0]), initTimeoutFloor))
	initLog := newCallLog(1024)
	inst, err := p.newInstance(withCallLog(initCtx, initLog))
	cancel()
	if err != nil {
		compiled.Close(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("load plugin %s: %w", key, ctx.Err())
		}
		reason := "instantiate: " + err.Error()
		if lines := initLog.lines(); len(lines) > 0 {
			reason += " (output: " + strings.Join(lines, "; ") + ")"
		}
		return nil, &InvalidModuleError{Reason: reason}
	}
	p.idle = append(p.idle, inst)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		p.unload(ctx)
		return nil, ErrClosed
	}
	if other := h.plugins[key]; other != nil { // lost a race with a concurrent Load
		p.unload(ctx)
		if other.sum != sum {
			return nil, fmt.Errorf("load plugin %s: key already loaded with a different module", key)
		}
		return other, nil
	}
	h.plugins[key] = p
	return p, nil
}

// checkModule enforces the ABI on a compiled module's imports and exports.
func (h *Host) checkModule(c wazero.CompiledModule) error {
	bad := func(format string, a ...any) error { return &InvalidModuleError{Reason: fmt.Sprintf(format, a...)} }
	for _, f := range c.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch {
		case mod == hostModule && name == "log":
			if !sameTypes(f.ParamTypes(), api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32) || len(f.ResultTypes()) != 0 {
				return bad("import %s.%s has the wrong signature, want (i32, i32, i32)", mod, name)
			}
		case mod == wasiModule && allowedWASI[name]:
		default:
			return bad("import %s.%s is not allowed (only promanage.log and the WASI calls listed in ABI.md)", mod, name)
		}
	}
	if len(c.ImportedMemories()) > 0 {
		return bad("the module must define its own memory, not import one")
	}
	mem, ok := c.ExportedMemories()["memory"]
	if !ok {
		return bad(`missing export "memory"`)
	}
	if mem.Min() > h.opts.MaxMemoryPages {
		return bad("memory minimum is %d pages, the limit is %d", mem.Min(), h.opts.MaxMemoryPages)
	}
	fns := c.ExportedFunctions()
	alloc, ok := fns["pm_alloc"]
	if !ok {
		return bad(`missing export "pm_alloc"`)
	}
	if !sameTypes(alloc.ParamTypes(), api.ValueTypeI32) || !sameTypes(alloc.ResultTypes(), api.ValueTypeI32) {
		return bad("pm_alloc must be (i32) -> i32")
	}
	handle, ok := fns["pm_handle"]
	if !ok {
		return bad(`missing export "pm_handle"`)
	}
	if !sameTypes(handle.ParamTypes(), api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32) ||
		!sameTypes(handle.ResultTypes(), api.ValueTypeI64) {
		return bad("pm_handle must be (i32, i32, i32, i32) -> i64")
	}
	if init, ok := fns["_initialize"]; ok && (len(init.ParamTypes()) != 0 || len(init.ResultTypes()) != 0) {
		return bad("_initialize must take and return nothing")
	}
	return nil
}

func sameTypes(got []api.ValueType, want ...api.ValueType) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// Unload removes a plugin version: idle instances are closed now, busy ones
// when their call returns; later calls fail with ErrClosed. Unknown keys are
// ignored.
func (h *Host) Unload(key string) {
	h.mu.Lock()
	p := h.plugins[key]
	delete(h.plugins, key)
	h.mu.Unlock()
	if p != nil {
		p.unload(context.Background())
	}
}

// Plugin returns the loaded plugin with key, or nil.
func (h *Host) Plugin(key string) *Plugin {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.plugins[key]
}

func (p *Plugin) unload(ctx context.Context) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	last := p.active == 0
	p.mu.Unlock()
	for _, inst := range idle {
		inst.close(ctx)
	}
	if last {
		p.compiled.Close(ctx)
	}
}
