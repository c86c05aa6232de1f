package plugins

import "errors"

// Errors returned by Host.Call (wrapped; test with errors.Is). Every one of
// them except ErrInputTooLarge, ErrBusy, ErrHookNotDeclared and ErrClosed
// means the plugin misbehaved on this call: the instance that served it has
// been discarded, and the caller applies the plugin's failure policy.
var (
	// ErrTimeout: the call did not finish before its deadline (the hook's
	// timeout or the caller's context, whichever came first); if its
	// sandbox process did not answer by the deadline plus WatchdogSlack, the
	// process was killed.
	ErrTimeout = errors.New("plugin call timed out")
	// ErrTrap: the guest trapped (unreachable, out-of-bounds access, stack
	// exhaustion, ...), exited, broke the ABI (bad pointers), failed to
	// start an instance, or its sandbox process died.
	ErrTrap = errors.New("plugin trapped")
	// ErrMemoryLimit: the guest failed after exhausting its memory cap, or
	// its sandbox process ran out of its address space.
	ErrMemoryLimit = errors.New("plugin exceeded its memory limit")
	// ErrOutputTooLarge: the guest returned more than MaxOutputBytes.
	ErrOutputTooLarge = errors.New("plugin output too large")
	// ErrInvalidOutput: the guest's output is not valid JSON, or not the
	// result shape of the hook (returned by the Decode* helpers).
	ErrInvalidOutput = errors.New("plugin output invalid")
	// ErrPluginFailed: the guest reported an error of its own
	// ({"error": "..."}); returned by the Decode* helpers. The instance is
	// kept: the guest handled the failure.
	ErrPluginFailed = errors.New("plugin reported an error")
	// ErrInputTooLarge: the input exceeds MaxInputBytes; the plugin was not run.
	ErrInputTooLarge = errors.New("plugin input too large")
	// ErrBusy: the tenant's concurrency cap (or the process's, or the plugin's pool) stayed
	// full until the context or the hook's timeout expired; the plugin was
	// not run.
	ErrBusy = errors.New("plugin capacity busy")
	// ErrHookNotDeclared: the hook is unknown or not in the plugin's manifest.
	ErrHookNotDeclared = errors.New("hook not declared by plugin")
	// ErrClosed: the plugin was unloaded or the host closed.
	ErrClosed = errors.New("plugin host closed or plugin unloaded")
)

// InvalidModuleError is returned by Host.Load for any module that cannot be
// accepted: too large, not WebAssembly, over a structural limit (Reason
// names it), fails to compile or needs more compile CPU than allowed,
// imports something outside the ABI (Reason names the import), lacks a
// required export, declares too much memory, or fails to initialise. The
// API answers 422 with Reason.
type InvalidModuleError struct {
	Reason string
}

func (e *InvalidModuleError) Error() string { return "invalid plugin module: " + e.Reason }

// InvalidManifestError is returned by Manifest.Validate (and Host.Load) for a
// manifest that cannot be accepted. The API answers 422 with Field and Reason.
type InvalidManifestError struct {
	Field  string
	Reason string
}

func (e *InvalidManifestError) Error() string {
	return "invalid plugin manifest: " + e.Field + ": " + e.Reason
}
