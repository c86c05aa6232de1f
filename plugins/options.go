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
	// DefaultMaxConcurrentCalls bounds plugin calls in the whole process. A
	// guest stopped at its deadline can still hold ~150 ms of CPU and, with
	// unbounded recursion, ~160 MiB of host memory (wazero's call stack)
	// before it traps: per-tenant caps alone let many tenants multiply that.
	DefaultMaxConcurrentCalls = 16
	// DefaultMaxConcurrentLoads bounds module compilations (uploads) in the
	// process: compiling an 8 MiB module and running its _initialize takes
	// seconds of CPU, outside the call caps.
	DefaultMaxConcurrentLoads = 2
	DefaultValidateTimeout    = 100 * time.Millisecond
	DefaultNotifyTimeout      = 2 * time.Second
	DefaultMaxTimeout         = 5 * time.Second

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
	// CacheDir keeps compiled machine code on disk so a restart does not
	// recompile every plugin. Empty: compiled code is cached in memory only
	// (nothing is written, which suits a read-only root filesystem).
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
	// MaxConcurrentLoads caps module compilations at once (uploads); a load
	// that cannot start before its context ends fails with ErrBusy.
	MaxConcurrentLoads int

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
