package plugins

import (
	"context"
	"fmt"
	"time"
)

// Invocation is what one plugin call produced.
type Invocation struct {
	Hook     string
	Output   []byte        // the JSON result, copied out of guest memory
	Logs     []string      // "level: message" from promanage.log; "stdout: ..." and "stderr: ..." lines
	Duration time.Duration // time the call took in the sandbox (waiting for an instance included)
}

// Call runs hook on plugin p for tenant with the JSON input, in the plugin's
// sandbox process. The hook's timeout (Manifest.TimeoutMS, else
// ValidateTimeout or NotifyTimeout) and ctx bound the whole call: it waits
// for a free slot of the tenant (TenantConcurrency), of the process
// (MaxConcurrentCalls) and of the plugin (PoolSize) within that deadline
// (else ErrBusy), and runs in the time left.
//
// Errors (test with errors.Is): ErrHookNotDeclared, ErrInputTooLarge,
// ErrBusy, ErrClosed before the plugin ran; ErrTimeout, ErrTrap,
// ErrMemoryLimit, ErrOutputTooLarge, ErrInvalidOutput when it misbehaved (its
// instance was discarded; if the sandbox process itself died or had to be
// killed, it is replaced in the background); context.Canceled when ctx was
// canceled mid-call. A call returns by its deadline plus WatchdogSlack. When
// the plugin ran, the Invocation is returned even with an error, carrying
// its logs and duration for the invocation record.
//
// Output is only checked to be JSON; decode it with DecodeValidationResult or
// DecodeNotificationResult.
func (h *Host) Call(ctx context.Context, p *Plugin, tenant, hook string, input []byte) (*Invocation, error) {
	return h.CallTimeout(ctx, p, tenant, hook, input, 0)
}

// CallTimeout is Call with the hook's deadline chosen by the caller: the
// registry keeps a plugin's timeout_ms beside the loaded module, so changing
// it needs no reload. timeout 0 means the manifest's, else the hook's
// default; a larger value than Options.MaxTimeout is lowered to it.
func (h *Host) CallTimeout(ctx context.Context, p *Plugin, tenant, hook string, input []byte, timeout time.Duration) (*Invocation, error) {
	if !KnownHook(hook) || !p.manifest.Handles(hook) {
		return nil, fmt.Errorf("plugin %s: %w: %q", p.manifest.Name, ErrHookNotDeclared, hook)
	}
	if len(input) > h.opts.MaxInputBytes {
		return nil, fmt.Errorf("plugin %s %s: %w: %d bytes, the limit is %d", p.manifest.Name, hook, ErrInputTooLarge, len(input), h.opts.MaxInputBytes)
	}
	if timeout <= 0 {
		timeout = h.timeoutFor(p, hook)
	}
	timeout = min(timeout, h.opts.MaxTimeout)

	// One deadline for the whole call: waiting for slots eats into it.
	start := time.Now()
	deadline := start.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	waitCtx, cancelWait := context.WithDeadline(ctx, deadline)
	defer cancelWait()
	releaseTenant, err := h.acquireTenant(waitCtx, tenant)
	if err != nil {
		return nil, fmt.Errorf("plugin %s %s for tenant %s: %w", p.manifest.Name, hook, tenant, err)
	}
	defer releaseTenant()
	// The process-wide slot is taken after the tenant's, so a tenant queued
	// behind its own cap holds none of the shared ones.
	select {
	case h.global <- struct{}{}:
		defer func() { <-h.global }()
	case <-waitCtx.Done():
		return nil, fmt.Errorf("plugin %s %s: %w: the process is at its limit of %d concurrent plugin calls", p.manifest.Name, hook, ErrBusy, h.opts.MaxConcurrentCalls)
	}
	if err := p.acquire(waitCtx); err != nil {
		return nil, fmt.Errorf("plugin %s %s: %w", p.manifest.Name, hook, err)
	}
	defer p.release()

	inv := &Invocation{Hook: hook}
	fail := func(err error) (*Invocation, error) {
		inv.Duration = time.Since(start)
		return inv, fmt.Errorf("plugin %s %s: %w", p.manifest.Name, hook, err)
	}
	proc, err := p.currentProc(waitCtx)
	cancelWait()
	if err != nil {
		if ctx.Err() == context.Canceled {
			err = fmt.Errorf("plugin call canceled: %w", context.Canceled)
		}
		return fail(err)
	}
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return fail(fmt.Errorf("%w: the deadline passed while the call waited for a slot", ErrTimeout))
	}
	res, err := proc.call(ctx, remaining, hook, input)
	if err != nil {
		return fail(err)
	}
	inv.Duration, inv.Logs = res.duration, res.logs
	if err := resultError(ctx, res); err != nil {
		return inv, fmt.Errorf("plugin %s %s: %w", p.manifest.Name, hook, err)
	}
	inv.Output = res.output
	return inv, nil
}

// resultError turns a child's status into the package's typed errors.
func resultError(ctx context.Context, res *callResult) error {
	var typed error
	switch res.status {
	case statusOK:
		return nil
	case statusTimeout:
		typed = ErrTimeout
	case statusMemory:
		typed = ErrMemoryLimit
	case statusOutputTooLarge:
		typed = ErrOutputTooLarge
	case statusInvalidOutput:
		typed = ErrInvalidOutput
	case statusCanceled:
		if ctx.Err() != nil {
			return fmt.Errorf("plugin call canceled: %w", context.Canceled)
		}
		typed = ErrTimeout
	default: // trap, a failed instance start, anything unknown
		typed = ErrTrap
	}
	msg := res.message
	for _, e := range []error{ErrOutputTooLarge, ErrInvalidOutput} {
		if typed == e {
			// The child's message already starts with the error's text.
			return fmt.Errorf("%w%s", typed, trimPrefix(msg, e.Error()))
		}
	}
	return fmt.Errorf("%w: %s", typed, msg)
}

func trimPrefix(msg, prefix string) string {
	if len(msg) >= len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return ": " + msg
}

func (h *Host) timeoutFor(p *Plugin, hook string) time.Duration {
	if p.manifest.TimeoutMS > 0 {
		return time.Duration(p.manifest.TimeoutMS) * time.Millisecond
	}
	if IsValidationHook(hook) {
		return h.opts.ValidateTimeout
	}
	return h.opts.NotifyTimeout
}

func (h *Host) acquireTenant(ctx context.Context, tenant string) (release func(), err error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	sem := h.tenants[tenant]
	if sem == nil {
		sem = make(chan struct{}, h.opts.TenantConcurrency)
		h.tenants[tenant] = sem
	}
	h.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: tenant at its limit of %d concurrent plugin calls", ErrBusy, h.opts.TenantConcurrency)
	}
}

// acquire takes a slot of the plugin's pool (one per instance).
func (p *Plugin) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: all %d instances of the plugin are busy", ErrBusy, cap(p.slots))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		<-p.slots
		return ErrClosed
	}
	p.active++
	p.lastUsed = time.Now()
	return nil
}

// release gives back the slot; the last call of an unloaded plugin ends its
// sandbox.
func (p *Plugin) release() {
	p.mu.Lock()
	p.active--
	last := p.closed && p.active == 0
	proc := p.proc
	p.mu.Unlock()
	<-p.slots
	if last {
		p.stop(proc)
	}
}
