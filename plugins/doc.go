// Package plugins runs customer WebAssembly plugins: it checks and compiles
// uploaded modules, runs each plugin version in a sandbox process holding a
// bounded pool of instances, dispatches validation and notification hooks to
// them, and delivers the webhooks that notification hooks ask for.
//
// The contract with plugin authors (exports, memory passing, JSON shapes,
// limits) is plugins/ABI.md; plugins/pdk implements the guest side for Go.
//
// What this package must never do:
//
//   - compile a module or run guest code in the host process: modules are
//     checked by precheck (bounded, linear) and compiled and run only in
//     sandbox children (sandbox_*.go) with OS limits and a watchdog;
//   - give a plugin a filesystem, the process environment, arguments, a
//     socket or any host function other than promanage.log and the WASI
//     preview1 calls a Go reactor needs (see allowedWASI);
//   - run guest code without a context deadline and CloseOnContextDone, or
//     without the per-instance memory cap;
//   - reuse an instance after a call on it failed in any way (trap, timeout,
//     exit, oversized output, memory exhaustion): it is closed and discarded;
//   - call an instance from two goroutines at once (wazero's Function.Call is
//     not safe for concurrent use), or share an instance between tenants'
//     plugins (instances belong to one plugin version);
//   - panic, or let a hostile module crash the process, whatever bytes it is
//     given;
//   - deliver a webhook to a host the tenant did not allow, or to a
//     non-public address (checked on the resolved IP at dial time), or
//     unsigned;
//   - import api, tenant or storage. It imports core only for the domain's
//     error type and the interfaces core declares (HookRunner, Consumer),
//     which Registry satisfies; the wiring in cmd adapts the rest (audit,
//     project context) through RegistryOptions.
//
// Registry keeps the plugins of every tenant in public tables (tenant_id on
// each row), loads a version into the Host on first use, runs validation
// hooks for core (RunValidation) and notification hooks for the outbox worker
// (HandleEvent), and records each call in the invocation log off the request
// path.
package plugins
