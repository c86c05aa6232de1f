package plugins

import "time"

// Default limits; see ABI.md. Operators override them through Options.
const (
	DefaultMaxModuleBytes    = 8 << 20
	DefaultMaxMemoryPages    = 256 // 16 MiB
	DefaultMaxInputBytes     = 128 << 10
	DefaultMaxOutputBytes    = 20 << 10
	DefaultMaxLogBytes       = 16 << 10
	DefaultPoolSize          = 4
	DefaultTenantConcurrency = 4
	// DefaultMaxConcurrentCalls bounds plugin calls in the whole process, all
	// tenants together. Guests run in sandbox processes with their own
	// memory limits, and a guest still running after DemoteAfter only gets
	// idle CPU, so this cap bounds bookkeeping, not harm; it is 16 tenants'
	// worth of TenantConcurrency so a few hostile tenants holding their own
	// slots up to their deadlines cannot take every slot.
	DefaultMaxConcurrentCalls = 64
	// DefaultMaxConcurrentLoads bounds module compilations (uploads and
	// first loads) in the process; DefaultTenantConcurrentLoads bounds them
	// per tenant, so two tenants' compile bombs leave slots for the others.
	DefaultMaxConcurrentLoads    = 4
	DefaultTenantConcurrentLoads = 1
	// DefaultCompileCPU is the CPU time a compilation may use (RLIMIT_CPU of
	// the compile sandbox); a module that needs more is refused (422). An
	// 8 MiB Go module needs about 4.5 s. DefaultCompileTimeout bounds the
	// wall-clock time of a compilation on a machine too busy to give it that
	// CPU: the upload then answers 503 (try again), not 422.
	DefaultCompileCPU     = 8 * time.Second
	DefaultCompileTimeout = 30 * time.Second
	// DefaultMaxSandboxes bounds the plugin sandbox processes (one per
	// loaded plugin version) in the process; DefaultTenantSandboxes per
	// tenant. Beyond them the least recently used idle plugin is unloaded
	// (and loaded again on its next use).
	DefaultMaxSandboxes    = 64
	DefaultTenantSandboxes = 16
	// DefaultSandboxMemoryMB is the address space a sandbox process may add
	// to what the Go runtime reserves at its start (its heap limit is 3/4 of
	// it): room for PoolSize instances at the memory cap, deep guest
	// recursion (wazero's stack lives on the Go heap) and compiled code.
	DefaultSandboxMemoryMB = 1024
	DefaultValidateTimeout = 100 * time.Millisecond
	DefaultNotifyTimeout   = 2 * time.Second
	DefaultMaxTimeout      = 5 * time.Second

	// defaultDemoteAfter: a validation call of the Go example takes ~0.3 ms
	// of CPU, ~3 ms on a fresh instance (its runtime warms up); a call still
	// busy after 10 ms is doing work that can wait for spare CPU, or burning
	// it. An instance start gets startDemoteAfter: a Go reactor's
	// _initialize takes ~10 ms, and a pool that cannot start instances on a
	// busy machine would fail its calls.
	defaultDemoteAfter = 10 * time.Millisecond
	startDemoteAfter   = 50 * time.Millisecond

	// maxTimeoutCeiling bounds Manifest.TimeoutMS when no operator setting is
	// at hand (Manifest.Validate); Host.Load checks Options.MaxTimeout.
	maxTimeoutCeiling = 30 * time.Second
	// initTimeoutFloor is the least time given to a module's _initialize:
	// Go reactors need a few milliseconds to start their runtime, which would
	// not fit in a 100 ms validation budget on a loaded machine.
	initTimeoutFloor = time.Second
)

// Options are the operator's limits for plugins. A nil *Options, or a zero
// field, means the default.
type Options struct {
	// CacheDir keeps compiled machine code on disk, shared by the sandbox
	// processes (a module is compiled once, by a compile child) and across
	// restarts. Empty: a temporary directory the Host creates and removes
	// (os.TempDir, which Kubernetes mounts as an emptyDir next to a
	// read-only root filesystem).
	CacheDir string

	MaxModuleBytes int64  // upload size of a .wasm module
	MaxMemoryPages uint32 // linear memory per instance, in 64 KiB pages
	MaxInputBytes  int    // JSON input of one call
	MaxOutputBytes int    // JSON output of one call
	MaxLogBytes    int    // logs (promanage.log, stdout, stderr) kept per call

	PoolSize          int // live instances per plugin version (concurrent calls of that version)
	TenantConcurrency int // concurrent calls per tenant, all plugins together
	// MaxConcurrentCalls is the process-wide cap on running plugin calls, all
	// tenants together; it bounds the CPU and host memory hostile guests can
	// hold at once. Keep it a multiple of TenantConcurrency so a few tenants
	// at their own cap cannot take every slot.
	MaxConcurrentCalls int
	// MaxConcurrentLoads caps module compilations at once (uploads and
	// first loads); a load that cannot start before its context ends fails
	// with ErrBusy. TenantConcurrentLoads caps them per tenant (LoadFor).
	MaxConcurrentLoads    int
	TenantConcurrentLoads int
	// CompileCPU is the CPU time a module's compilation may take (beyond:
	// refused, InvalidModuleError); CompileTimeout the wall-clock time
	// (beyond: ErrBusy, the machine was too busy).
	CompileCPU     time.Duration
	CompileTimeout time.Duration
	// MaxSandboxes and TenantSandboxes bound the sandbox processes (one per
	// loaded plugin version), in the process and per tenant.
	MaxSandboxes    int
	TenantSandboxes int
	// SandboxMemoryMB is the address space (and 4/3 of the heap) a sandbox
	// process may use beyond its runtime's start.
	SandboxMemoryMB int
	// SandboxCommand is the program (and leading arguments) started as a
	// sandbox child, followed by SandboxArg and its configuration. Default:
	// the running binary, which must call SandboxMain (promanage does; test
	// binaries do from TestMain).
	SandboxCommand []string
	// DemoteAfter: a call that has used this much CPU time continues at
	// the lowest CPU priority (nice 19). Default 10ms (instance starts:
	// 50ms); negative: never.
	DemoteAfter time.Duration

	ValidateTimeout time.Duration // default deadline of validation hooks
	NotifyTimeout   time.Duration // default deadline of notification hooks
	MaxTimeout      time.Duration // largest Manifest.TimeoutMS accepted
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.MaxModuleBytes <= 0 {
		r.MaxModuleBytes = DefaultMaxModuleBytes
	}
	if r.MaxMemoryPages == 0 {
		r.MaxMemoryPages = DefaultMaxMemoryPages
	}
	if r.MaxMemoryPages > 65536 {
		r.MaxMemoryPages = 65536
	}
	if r.MaxInputBytes <= 0 {
		r.MaxInputBytes = DefaultMaxInputBytes
	}
	if r.MaxOutputBytes <= 0 {
		r.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if r.MaxLogBytes <= 0 {
		r.MaxLogBytes = DefaultMaxLogBytes
	}
	if r.PoolSize <= 0 {
		r.PoolSize = DefaultPoolSize
	}
	if r.TenantConcurrency <= 0 {
		r.TenantConcurrency = DefaultTenantConcurrency
	}
	if r.MaxConcurrentCalls <= 0 {
		r.MaxConcurrentCalls = DefaultMaxConcurrentCalls
	}
	if r.MaxConcurrentLoads <= 0 {
		r.MaxConcurrentLoads = DefaultMaxConcurrentLoads
	}
	if r.TenantConcurrentLoads <= 0 {
		r.TenantConcurrentLoads = DefaultTenantConcurrentLoads
	}
	if r.CompileCPU <= 0 {
		r.CompileCPU = DefaultCompileCPU
	}
	if r.CompileTimeout <= 0 {
		r.CompileTimeout = DefaultCompileTimeout
	}
	if r.MaxSandboxes <= 0 {
		r.MaxSandboxes = DefaultMaxSandboxes
	}
	if r.TenantSandboxes <= 0 {
		r.TenantSandboxes = DefaultTenantSandboxes
	}
	if r.SandboxMemoryMB <= 0 {
		r.SandboxMemoryMB = DefaultSandboxMemoryMB
	}
	if r.DemoteAfter == 0 {
		r.DemoteAfter = defaultDemoteAfter
	}
	if r.ValidateTimeout <= 0 {
		r.ValidateTimeout = DefaultValidateTimeout
	}
	if r.NotifyTimeout <= 0 {
		r.NotifyTimeout = DefaultNotifyTimeout
	}
	if r.MaxTimeout <= 0 {
		r.MaxTimeout = DefaultMaxTimeout
	}
	return r
}
