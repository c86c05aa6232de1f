package plugins

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

const (
	hostModule = "promanage"
	wasiModule = wasi_snapshot_preview1.ModuleName
	pageSize   = 65536
)

// Host runs plugins. Create one per process with NewHost and share it; its
// methods are safe for concurrent use.
//
// The host itself never compiles or runs a module. Load checks the bytes
// (precheck), then compiles them in a short-lived compile sandbox process,
// then starts the plugin's run sandbox process, which loads the compiled
// code from the shared on-disk cache and keeps the plugin's instance pool.
// Calls go to that process over a pipe; a watchdog kills it when a call
// overruns its deadline, and a process that dies for any reason is replaced
// in the background. See RATIONALE.md ("Plugin sandbox").
type Host struct {
	opts       Options
	sandboxCmd []string
	workDir    string // owned by the host: module files, and the cache if CacheDir is empty
	cacheDir   string

	mu          sync.Mutex
	closed      bool
	plugins     map[string]*Plugin
	loading     map[string]chan struct{}  // keys being loaded (closed when done)
	tenants     map[string]chan struct{}  // per-tenant call semaphores
	tenantLoads map[string]chan struct{}  // per-tenant compile semaphores
	reserved    map[string]int            // sandboxes reserved by loads in progress, per tenant
	procs       map[*sandboxProc]struct{} // every live child, to kill on Close
	global      chan struct{}             // process-wide semaphore (MaxConcurrentCalls)
	loads       chan struct{}             // process-wide semaphore (MaxConcurrentLoads)
}

// NewHost prepares the sandbox: its working directory (module files, and
// the compilation cache when Options.CacheDir is empty) and the command that
// starts children. It returns an error if the cache directory cannot be
// created, or if called inside a sandbox child.
func NewHost(ctx context.Context, opts *Options) (*Host, error) {
	if os.Getenv(sandboxEnv) != "" {
		return nil, errors.New("plugin host: this process is a plugin sandbox child (is SandboxMain called first in main or TestMain?)")
	}
	o := opts.withDefaults()
	cmd := o.SandboxCommand
	if len(cmd) == 0 {
		exe, err := defaultSandboxExecutable()
		if err != nil {
			return nil, fmt.Errorf("plugin host: %w", err)
		}
		cmd = []string{exe}
	}
	work, err := os.MkdirTemp("", "promanage-plugins-")
	if err != nil {
		return nil, fmt.Errorf("plugin host work directory: %w", err)
	}
	cache := o.CacheDir
	if cache == "" {
		cache = filepath.Join(work, "cache")
	}
	if err := os.MkdirAll(cache, 0o700); err != nil {
		os.RemoveAll(work)
		return nil, fmt.Errorf("plugin compilation cache %s: %w", cache, err)
	}
	if err := os.Mkdir(filepath.Join(work, "modules"), 0o700); err != nil {
		os.RemoveAll(work)
		return nil, fmt.Errorf("plugin host work directory: %w", err)
	}
	return &Host{opts: o, sandboxCmd: cmd, workDir: work, cacheDir: cache,
		plugins: map[string]*Plugin{}, loading: map[string]chan struct{}{}, tenants: map[string]chan struct{}{},
		tenantLoads: map[string]chan struct{}{}, reserved: map[string]int{}, procs: map[*sandboxProc]struct{}{},
		global: make(chan struct{}, o.MaxConcurrentCalls), loads: make(chan struct{}, o.MaxConcurrentLoads)}, nil
}

// Options returns the limits in force (defaults filled in).
func (h *Host) Options() Options { return h.opts }

// Close unloads every plugin, kills every sandbox process and removes the
// host's working directory; later calls fail with ErrClosed.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	ps := h.plugins
	h.plugins = map[string]*Plugin{}
	procs := make([]*sandboxProc, 0, len(h.procs))
	for p := range h.procs {
		procs = append(procs, p)
	}
	h.mu.Unlock()
	for _, p := range ps {
		p.unload()
	}
	for _, p := range procs {
		p.kill("the plugin host closed")
	}
	for _, p := range procs {
		select {
		case <-p.dead:
		case <-ctx.Done():
		}
	}
	return os.RemoveAll(h.workDir)
}

func (h *Host) trackProc(p *sandboxProc, live bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if live {
		h.procs[p] = struct{}{}
	} else {
		delete(h.procs, p)
	}
}

// Plugin is one loaded plugin version: its manifest and its sandbox process.
type Plugin struct {
	key        string
	tenant     string
	sum        [32]byte
	manifest   Manifest
	host       *Host
	modulePath string

	slots chan struct{} // one per instance of the pool: bounds calls in flight

	mu         sync.Mutex
	proc       *sandboxProc  // nil while it is (re)started
	ready      chan struct{} // closed when a restart ends (or the plugin closes)
	restartErr error         // the last restart's failure, until one succeeds
	deaths     int
	lastDeath  time.Time
	active     int
	closed     bool
	lastUsed   time.Time
}

// Key is the key the plugin was loaded under (the plugin version id).
func (p *Plugin) Key() string { return p.key }

// Manifest returns a copy of the plugin's manifest.
func (p *Plugin) Manifest() Manifest { return p.manifest }

// Load is LoadFor without a tenant: the load counts against a shared
// per-tenant compile slot (for tools and tests).
func (h *Host) Load(ctx context.Context, key string, wasm []byte, m Manifest) (*Plugin, error) {
	return h.LoadFor(ctx, "", key, wasm, m)
}

// LoadFor validates a module against the ABI and the structural limits
// (precheck), compiles it in a compile sandbox under CompileTimeout, and
// starts its run sandbox, proving it instantiates (its _initialize runs
// under the hook's deadline, at least 1 s). It returns an
// *InvalidModuleError or *InvalidManifestError for anything the tenant got
// wrong (naming the limit), ErrBusy when no compile slot or sandbox freed
// up before ctx ended (ctx's own error is wrapped too), and never panics on
// garbage bytes. Compilations are capped per tenant (TenantConcurrentLoads)
// and per process (MaxConcurrentLoads).
//
// key identifies the plugin version and must not be reused for different
// bytes: loading a key again returns the plugin already loaded (an upload is
// compiled once), and concurrent loads of one key share one compilation.
func (h *Host) LoadFor(ctx context.Context, tenant, key string, wasm []byte, m Manifest) (*Plugin, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if time.Duration(m.TimeoutMS)*time.Millisecond > h.opts.MaxTimeout {
		return nil, &InvalidManifestError{Field: "timeout_ms", Reason: fmt.Sprintf("must be at most %d", h.opts.MaxTimeout.Milliseconds())}
	}
	sum := sha256.Sum256(wasm)
	for {
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
			p.touch()
			return p, nil
		}
		if wait := h.loading[key]; wait != nil {
			h.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("load plugin %s: %w: %w", key, ErrBusy, ctx.Err())
			}
		}
		done := make(chan struct{})
		h.loading[key] = done
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			delete(h.loading, key)
			h.mu.Unlock()
			close(done)
		}()
		break
	}
	return h.load(ctx, tenant, key, wasm, sum, m)
}

func (h *Host) load(ctx context.Context, tenant, key string, wasm []byte, sum [32]byte, m Manifest) (*Plugin, error) {
	if int64(len(wasm)) > h.opts.MaxModuleBytes {
		return nil, &InvalidModuleError{Reason: fmt.Sprintf("module is %d bytes, the limit is %d", len(wasm), h.opts.MaxModuleBytes)}
	}
	shape, err := precheck(wasm)
	if err != nil {
		return nil, &InvalidModuleError{Reason: err.Error()}
	}
	if err := h.checkABI(shape); err != nil {
		return nil, err
	}
	wasm = boundTables(wasm, shape)

	release, err := h.acquireLoad(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("load plugin %s: %w", key, err)
	}
	defer release()

	name := hex.EncodeToString(func() []byte { s := sha256.Sum256([]byte(key)); return s[:] }())
	path := filepath.Join(h.workDir, "modules", name+".wasm")
	if err := os.WriteFile(path, wasm, 0o600); err != nil {
		return nil, fmt.Errorf("load plugin %s: write module: %w", key, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(path)
		}
	}()
	if err := h.compile(ctx, key, path); err != nil {
		return nil, err
	}
	if err := h.reserveSandbox(tenant); err != nil {
		return nil, fmt.Errorf("load plugin %s: %w", key, err)
	}
	defer h.unreserve(tenant)

	p := &Plugin{key: key, tenant: tenant, sum: sum, manifest: m, host: h, modulePath: path,
		slots: make(chan struct{}, h.opts.PoolSize), ready: make(chan struct{}), lastUsed: time.Now()}
	proc, err := p.start(ctx)
	if err != nil {
		return nil, err
	}
	p.setProc(proc)

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		p.unload()
		return nil, ErrClosed
	}
	h.plugins[key] = p
	h.mu.Unlock()
	ok = true
	return p, nil
}

// checkABI enforces the ABI on a module's imports and exports, from
// precheck's findings.
func (h *Host) checkABI(s *moduleShape) error {
	bad := func(format string, a ...any) error { return &InvalidModuleError{Reason: fmt.Sprintf(format, a...)} }
	wasi := wasiSignatures()
	for _, imp := range s.imports {
		t := s.types[imp.typeIndex]
		switch {
		case imp.module == hostModule && imp.name == "log":
			if !bytes.Equal(t.params, []byte{i32Type, i32Type, i32Type}) || len(t.results) != 0 {
				return bad("import %s.%s has the wrong signature, want (i32, i32, i32)", imp.module, imp.name)
			}
		case imp.module == wasiModule && allowedWASI[imp.name]:
			want := wasi[imp.name]
			if !bytes.Equal(t.params, want.params) || !bytes.Equal(t.results, want.results) {
				return bad("import %s.%s has the wrong signature for WASI preview1", imp.module, imp.name)
			}
		default:
			return bad("import %s.%s is not allowed (only promanage.log and the WASI calls listed in ABI.md)", imp.module, imp.name)
		}
	}
	if s.memories == 0 {
		return bad(`the module must define its own memory and export it as "memory"`)
	}
	if e, ok := s.exports["memory"]; !ok || e.kind != kindMemory {
		return bad(`missing export "memory"`)
	}
	if s.memMin > h.opts.MaxMemoryPages {
		return bad("memory minimum is %d pages, the limit is %d", s.memMin, h.opts.MaxMemoryPages)
	}
	fn := func(name string) (funcType, bool) {
		e, ok := s.exports[name]
		if !ok || e.kind != kindFunc || int(e.index) >= len(s.funcTypes) {
			return funcType{}, false
		}
		return s.types[s.funcTypes[e.index]], true
	}
	alloc, ok := fn("pm_alloc")
	if !ok {
		return bad(`missing export "pm_alloc"`)
	}
	if !bytes.Equal(alloc.params, []byte{i32Type}) || !bytes.Equal(alloc.results, []byte{i32Type}) {
		return bad("pm_alloc must be (i32) -> i32")
	}
	handle, ok := fn("pm_handle")
	if !ok {
		return bad(`missing export "pm_handle"`)
	}
	if !bytes.Equal(handle.params, []byte{i32Type, i32Type, i32Type, i32Type}) || !bytes.Equal(handle.results, []byte{i64Type}) {
		return bad("pm_handle must be (i32, i32, i32, i32) -> i64")
	}
	if _, exported := s.exports["_initialize"]; exported {
		if init, ok := fn("_initialize"); !ok || len(init.params) != 0 || len(init.results) != 0 {
			return bad("_initialize must be a function that takes and returns nothing")
		}
	}
	return nil
}

// allowedWASI is every WASI preview1 function a module may import: what Go
// (and Rust, TinyGo) reactors need to start and print (wasi.go implements
// them over an empty environment). path_*, sock_*, fd_readdir and the rest
// are refused at upload.
var allowedWASI = map[string]bool{
	"args_get": true, "args_sizes_get": true,
	"environ_get": true, "environ_sizes_get": true,
	"clock_res_get": true, "clock_time_get": true,
	"fd_close": true, "fd_fdstat_get": true, "fd_fdstat_set_flags": true,
	"fd_prestat_get": true, "fd_prestat_dir_name": true,
	"fd_read": true, "fd_write": true,
	"poll_oneoff": true, "proc_exit": true, "random_get": true, "sched_yield": true,
}

// acquireLoad takes a compile slot of the tenant, then one of the process
// (so a tenant queued behind its own slot holds none of the shared ones).
func (h *Host) acquireLoad(ctx context.Context, tenant string) (func(), error) {
	h.mu.Lock()
	sem := h.tenantLoads[tenant]
	if sem == nil {
		sem = make(chan struct{}, h.opts.TenantConcurrentLoads)
		h.tenantLoads[tenant] = sem
	}
	h.mu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: the tenant is compiling %d other module(s): %w", ErrBusy, h.opts.TenantConcurrentLoads, ctx.Err())
	}
	select {
	case h.loads <- struct{}{}:
	case <-ctx.Done():
		<-sem
		return nil, fmt.Errorf("%w: %d modules are being compiled: %w", ErrBusy, h.opts.MaxConcurrentLoads, ctx.Err())
	}
	return func() { <-h.loads; <-sem }, nil
}

func (h *Host) sandboxLimits() (addressSpace, heap int64, text string) {
	mb := int64(h.opts.SandboxMemoryMB)
	return mb << 20, mb << 20 * 3 / 4, fmt.Sprintf("its limit is %d MiB of address space", mb)
}

func (h *Host) engineConfig(initTimeout time.Duration) engineConfig {
	d, sd := h.opts.DemoteAfter, startDemoteAfter
	if d < 0 {
		d, sd = 0, 0
	}
	return engineConfig{CacheDir: h.cacheDir, MaxMemoryPages: h.opts.MaxMemoryPages, MaxLogBytes: h.opts.MaxLogBytes,
		MaxOutputBytes: h.opts.MaxOutputBytes, PoolSize: h.opts.PoolSize, InitTimeout: initTimeout, DemoteAfter: d, StartDemoteAfter: sd}
}

// compile runs a compile sandbox on the module file, with its CPU time
// (CompileCPU), address space and wall-clock time (CompileTimeout) bounded,
// scheduled as a batch job (it never preempts latency-sensitive work).
func (h *Host) compile(ctx context.Context, key, path string) error {
	as, heap, limits := h.sandboxLimits()
	cpu := int((h.opts.CompileCPU + time.Second - 1) / time.Second)
	cfg := childConfig{Mode: "compile", Engine: h.engineConfig(0), MaxModuleBytes: h.opts.MaxModuleBytes,
		AddressSpace: as, HeapLimit: heap, CPUSeconds: cpu, Batch: true}
	proc, err := h.spawn(ctx, cfg, limits)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("compile plugin %s: %w: %w", key, ErrBusy, ctx.Err())
		}
		return fmt.Errorf("compile plugin %s: %w: %w", key, ErrBusy, err)
	}
	defer proc.close()
	var e encoder
	e.string(path)
	res, err := proc.roundTrip(ctx, frameCompile, e.b, frameCompiled, h.opts.CompileTimeout, "compile timeout")
	if err != nil {
		proc.kill("compilation failed")
		<-proc.dead
	}
	var lim errLimit
	switch {
	case err == nil && res.status != statusOK:
		return &InvalidModuleError{Reason: res.message}
	case err == nil:
		return nil
	case proc.cpuTime() >= time.Duration(cpu)*time.Second*9/10:
		// The kernel's RLIMIT_CPU (SIGKILL) counts a little more than the
		// rusage the exit reports (7.6 s seen for a limit of 8 s).
		return &InvalidModuleError{Reason: fmt.Sprintf("compiling the module needs more than the limit of %v of CPU time", time.Duration(cpu)*time.Second)}
	case errors.As(err, &lim):
		return fmt.Errorf("compile plugin %s: %w: the machine was too busy to compile it within %v; try again", key, ErrBusy, h.opts.CompileTimeout)
	case ctx.Err() != nil:
		return fmt.Errorf("compile plugin %s: %w: the request ended first: %w", key, ErrBusy, ctx.Err())
	case errors.Is(err, ErrMemoryLimit):
		return &InvalidModuleError{Reason: fmt.Sprintf("compiling the module needs more memory than the compiler's limit of %d MiB", h.opts.SandboxMemoryMB)}
	}
	return &InvalidModuleError{Reason: fmt.Sprintf("the compiler failed on this module after %v of CPU time: %v", proc.cpuTime(), err)}
}

// initTimeout is the deadline of an instance's _initialize: the plugin's
// first hook's, and at least initTimeoutFloor.
func (p *Plugin) initTimeout() time.Duration {
	return max(p.host.timeoutFor(p, p.manifest.Hooks[0]), initTimeoutFloor)
}

// start starts the plugin's run sandbox and loads the module in it (from
// the compilation cache), with the first instance initialised.
func (p *Plugin) start(ctx context.Context) (*sandboxProc, error) {
	h := p.host
	as, heap, limits := h.sandboxLimits()
	init := p.initTimeout()
	cfg := childConfig{Mode: "run", Engine: h.engineConfig(init), MaxModuleBytes: h.opts.MaxModuleBytes,
		AddressSpace: as, HeapLimit: heap, Batch: true}
	proc, err := h.spawn(ctx, cfg, limits)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w: %w", p.manifest.Name, ErrBusy, err)
	}
	var e encoder
	e.string(p.modulePath)
	res, err := proc.roundTrip(ctx, frameLoad, e.b, frameLoaded, loadOverhead+init+WatchdogSlack, "load timeout")
	if err == nil && res.status == statusOK {
		return proc, nil
	}
	proc.close()
	var lim errLimit
	switch {
	case errors.As(err, &lim):
		return nil, &InvalidModuleError{Reason: fmt.Sprintf("instantiate: the module did not start within %v", loadOverhead+init)}
	case ctx.Err() != nil:
		return nil, fmt.Errorf("plugin %s: %w: the request ended first: %w", p.manifest.Name, ErrBusy, ctx.Err())
	case errors.Is(err, ErrMemoryLimit):
		return nil, &InvalidModuleError{Reason: "instantiate: " + err.Error()}
	case err != nil:
		return nil, &InvalidModuleError{Reason: "instantiate: " + err.Error()}
	}
	return nil, &InvalidModuleError{Reason: res.message}
}

// setProc makes proc the plugin's current sandbox and watches it.
func (p *Plugin) setProc(proc *sandboxProc) {
	p.mu.Lock()
	p.proc = proc
	p.restartErr = nil
	close(p.ready)
	p.mu.Unlock()
	proc.mu.Lock()
	proc.onDeath = p.procDied
	dead := proc.isDead()
	proc.mu.Unlock()
	if dead {
		proc.notifyGone()
	}
}

// restartDelay is the wait before restarting a sandbox that died deaths
// times in a row: none for the first, then doubling from 100 ms to 30 s.
func restartDelay(deaths int) time.Duration {
	if deaths <= 1 {
		return 0
	}
	return min(100*time.Millisecond<<min(deaths-2, 10), 30*time.Second)
}

// procDied replaces a dead sandbox in the background (calls meanwhile wait
// for it within their own deadlines).
func (p *Plugin) procDied(proc *sandboxProc) {
	p.mu.Lock()
	if p.proc != proc || p.closed {
		p.mu.Unlock()
		return
	}
	p.proc = nil
	now := time.Now()
	if now.Sub(p.lastDeath) > time.Minute {
		p.deaths = 0
	}
	p.deaths++
	p.lastDeath = now
	delay := restartDelay(p.deaths)
	p.ready = make(chan struct{})
	p.mu.Unlock()
	proc.mu.Lock()
	why := proc.stoppedErr()
	proc.mu.Unlock()
	logDeath(p.manifest.Name, p.tenant, why)
	go p.restart(delay)
}

func (p *Plugin) restart(delay time.Duration) {
	for {
		time.Sleep(delay)
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		proc, err := p.start(context.Background())
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			if proc != nil {
				proc.close()
			}
			return
		}
		if err == nil {
			p.mu.Unlock()
			p.setProc(proc)
			return
		}
		p.restartErr = fmt.Errorf("restart the plugin's sandbox: %w", err)
		p.deaths++
		delay = restartDelay(p.deaths)
		// Calls waiting for this restart fail now with its error.
		close(p.ready)
		p.ready = make(chan struct{})
		p.mu.Unlock()
	}
}

// currentProc returns the plugin's live sandbox, waiting within ctx while it
// is replaced.
func (p *Plugin) currentProc(ctx context.Context) (*sandboxProc, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		proc, ready, rerr := p.proc, p.ready, p.restartErr
		p.mu.Unlock()
		if proc != nil {
			if !proc.isDead() {
				return proc, nil
			}
			p.procDied(proc)
			continue
		}
		if rerr != nil {
			return nil, rerr
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: the plugin's sandbox is being restarted", ErrTimeout)
		}
	}
}

func (p *Plugin) touch() {
	p.mu.Lock()
	p.lastUsed = time.Now()
	p.mu.Unlock()
}

// reserveSandbox makes room for one more sandbox of tenant, unloading the
// least recently used idle plugin (of the tenant when the tenant is at its
// own cap) if needed; ErrBusy if every candidate is busy.
func (h *Host) reserveSandbox(tenant string) error {
	for {
		h.mu.Lock()
		total, mine := 0, h.reserved[tenant]
		for _, n := range h.reserved {
			total += n
		}
		var lru, lruMine *Plugin
		var lruUsed, lruMineUsed time.Time
		for _, p := range h.plugins {
			total++
			if p.tenant == tenant {
				mine++
			}
			p.mu.Lock()
			idle, used := p.active == 0, p.lastUsed
			p.mu.Unlock()
			if !idle {
				continue
			}
			if lru == nil || used.Before(lruUsed) {
				lru, lruUsed = p, used
			}
			if p.tenant == tenant && (lruMine == nil || used.Before(lruMineUsed)) {
				lruMine, lruMineUsed = p, used
			}
		}
		var victim *Plugin
		switch {
		case mine >= h.opts.TenantSandboxes:
			victim = lruMine
		case total >= h.opts.MaxSandboxes:
			victim = lru
		default:
			h.reserved[tenant]++
			h.mu.Unlock()
			return nil
		}
		if victim == nil {
			h.mu.Unlock()
			return fmt.Errorf("%w: all %d plugin sandboxes are busy", ErrBusy, min(h.opts.MaxSandboxes, h.opts.TenantSandboxes))
		}
		delete(h.plugins, victim.key)
		h.mu.Unlock()
		victim.unload()
	}
}

func (h *Host) unreserve(tenant string) {
	h.mu.Lock()
	if h.reserved[tenant]--; h.reserved[tenant] <= 0 {
		delete(h.reserved, tenant)
	}
	h.mu.Unlock()
}

// Unload removes a plugin version: its sandbox ends now if it is idle, or
// when its last call returns; later calls fail with ErrClosed. Unknown keys
// are ignored.
func (h *Host) Unload(key string) {
	h.mu.Lock()
	p := h.plugins[key]
	delete(h.plugins, key)
	h.mu.Unlock()
	if p != nil {
		p.unload()
	}
}

// Plugin returns the loaded plugin with key, or nil.
func (h *Host) Plugin(key string) *Plugin {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.plugins[key]
}

func (p *Plugin) unload() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
	proc := p.proc
	last := p.active == 0
	p.mu.Unlock()
	if last {
		p.stop(proc)
	}
}

// stop ends the sandbox of a closed plugin and removes its module file.
func (p *Plugin) stop(proc *sandboxProc) {
	if proc != nil {
		proc.close()
	}
	os.Remove(p.modulePath)
}

// sandboxPID is the pid of the plugin's current sandbox process, 0 while it
// is replaced (for tests).
func (p *Plugin) sandboxPID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil || p.proc.cmd.Process == nil {
		return 0
	}
	return p.proc.cmd.Process.Pid
}
