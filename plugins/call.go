package plugins

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// maxGuestSleep caps one WASI sleep (poll_oneoff on a clock). wazero checks
// CloseOnContextDone only while guest code runs, so an uncapped sleep of an
// hour inside a host call would outlive any deadline; capped, the guest wakes
// early, finds its timer not yet due, sleeps again, and is stopped in between.
const maxGuestSleep = 5 * time.Millisecond

// memorySlackBytes: a call that fails with less than this much of its memory
// cap left is reported as ErrMemoryLimit (allocators grow in steps: Go's heap
// arena on wasm is 4 MiB).
const memorySlackBytes = 4 << 20

// Invocation is what one plugin call produced.
type Invocation struct {
	Hook     string
	Output   []byte        // the JSON result, copied out of guest memory
	Logs     []string      // "level: message" from promanage.log; "stdout: ..." and "stderr: ..." lines
	Duration time.Duration // time spent running guest code (instantiation included when the pool was cold)
}

// Call runs hook on plugin p for tenant with the JSON input. The call waits
// for a free slot of the tenant (TenantConcurrency) and of the plugin
// (PoolSize) at most until ctx is done or the hook's timeout elapses (then
// ErrBusy), and runs under the hook's timeout (Manifest.TimeoutMS, else
// ValidateTimeout or NotifyTimeout) and ctx.
//
// Errors (test with errors.Is): ErrHookNotDeclared, ErrInputTooLarge,
// ErrBusy, ErrClosed before the plugin ran; ErrTimeout, ErrTrap,
// ErrMemoryLimit, ErrOutputTooLarge, ErrInvalidOutput when it misbehaved, in
// which case its instance was discarded; context.Canceled when ctx was
// canceled mid-call. When the plugin ran, the Invocation is returned even
// with an error, carrying its logs and duration for the invocation record.
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

	waitCtx, cancelWait := context.WithTimeout(ctx, timeout)
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
	inst, err := p.acquire(waitCtx)
	if err != nil {
		return nil, fmt.Errorf("plugin %s %s: %w", p.manifest.Name, hook, err)
	}
	cancelWait()

	log := newCallLog(h.opts.MaxLogBytes)
	inv := &Invocation{Hook: hook}
	start := time.Now()
	if inst == nil {
		initCtx, cancel := context.WithTimeout(ctx, max(timeout, initTimeoutFloor))
		inst, err = p.newInstance(withCallLog(initCtx, log))
		cancel()
		if err != nil {
			p.release(nil, false)
			inv.Duration = time.Since(start)
			inv.Logs = log.lines()
			return inv, fmt.Errorf("plugin %s %s: start instance: %w", p.manifest.Name, hook, h.classify(ctx, nil, log, err))
		}
	}

	callCtx, cancel := context.WithTimeout(ctx, timeout)
	out, err := inst.call(withCallLog(callCtx, log), h, hook, input, log)
	cancel()
	inv.Duration = time.Since(start)
	if err != nil {
		err = h.classify(ctx, inst, log, err)
	}
	p.release(inst, err == nil)
	inv.Logs = log.lines()
	if err != nil {
		return inv, fmt.Errorf("plugin %s %s: %w", p.manifest.Name, hook, err)
	}
	inv.Output = out
	return inv, nil
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

// acquire takes a slot of the plugin's pool and an idle instance; a nil
// instance with a nil error means the caller must start one.
func (p *Plugin) acquire(ctx context.Context) (*instance, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: all %d instances of the plugin are busy", ErrBusy, cap(p.slots))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		<-p.slots
		return nil, ErrClosed
	}
	p.active++
	if n := len(p.idle); n > 0 {
		inst := p.idle[n-1]
		p.idle = p.idle[:n-1]
		return inst, nil
	}
	return nil, nil
}

// release gives back the slot; the instance returns to the pool only if the
// call succeeded, otherwise it is closed and a later call starts a fresh one.
func (p *Plugin) release(inst *instance, healthy bool) {
	p.mu.Lock()
	p.active--
	keep := inst != nil && healthy && !p.closed
	if keep {
		p.idle = append(p.idle, inst)
	}
	closeCompiled := p.closed && p.active == 0
	p.mu.Unlock()
	<-p.slots
	ctx := context.Background()
	if inst != nil && !keep {
		inst.close(ctx)
	}
	if closeCompiled {
		p.compiled.Close(ctx)
	}
}

// instance is one sandboxed module instance. It is used by one call at a time.
type instance struct {
	mod    api.Module
	mem    api.Memory
	alloc  api.Function
	handle api.Function
	stdout *logWriter
	stderr *logWriter
}

func (p *Plugin) newInstance(ctx context.Context) (*instance, error) {
	log, _ := ctx.Value(callLogKey{}).(*callLog)
	inst := &instance{stdout: &logWriter{stream: "stdout"}, stderr: &logWriter{stream: "stderr"}}
	inst.stdout.set(log)
	inst.stderr.set(log)
	defer inst.stdout.set(nil)
	defer inst.stderr.set(nil)
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: many instances of one module
		WithStartFunctions("_initialize").
		WithStdout(inst.stdout).
		WithStderr(inst.stderr).
		WithRandSource(rand.Reader).
		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(func(ns int64) { time.Sleep(min(time.Duration(ns), maxGuestSleep)) })
	mod, err := p.host.rt.InstantiateModule(ctx, p.compiled, cfg)
	if err != nil {
		return nil, err
	}
	if mod.IsClosed() { // _initialize called proc_exit(0)
		return nil, errors.New("module exited during _initialize")
	}
	inst.mod = mod
	inst.mem = mod.ExportedMemory("memory")
	inst.alloc = mod.ExportedFunction("pm_alloc")
	inst.handle = mod.ExportedFunction("pm_handle")
	if inst.mem == nil || inst.alloc == nil || inst.handle == nil {
		mod.Close(ctx)
		return nil, errors.New("module lacks memory, pm_alloc or pm_handle")
	}
	return inst, nil
}

func (i *instance) close(ctx context.Context) { i.mod.Close(ctx) }

// errABI is a guest breaking the memory-passing contract; reported as ErrTrap.
type errABI string

func (e errABI) Error() string { return string(e) }

func (i *instance) call(ctx context.Context, h *Host, hook string, input []byte, log *callLog) ([]byte, error) {
	i.stdout.set(log)
	i.stderr.set(log)
	defer i.stdout.set(nil)
	defer i.stderr.set(nil)

	hookPtr, err := i.write(ctx, []byte(hook))
	if err != nil {
		return nil, err
	}
	inPtr, err := i.write(ctx, input)
	if err != nil {
		return nil, err
	}
	res, err := i.handle.Call(ctx, uint64(hookPtr), uint64(len(hook)), uint64(inPtr), uint64(len(input)))
	if err != nil {
		return nil, err
	}
	outPtr, outLen := uint32(res[0]>>32), uint32(res[0])
	if int64(outLen) > int64(h.opts.MaxOutputBytes) {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrOutputTooLarge, outLen, h.opts.MaxOutputBytes)
	}
	view, ok := i.mem.Read(outPtr, outLen)
	if !ok {
		return nil, errABI("pm_handle returned an output range outside memory")
	}
	out := append([]byte(nil), view...)
	if !json.Valid(out) {
		return nil, fmt.Errorf("%w: not JSON", ErrInvalidOutput)
	}
	return out, nil
}

// write copies data into a guest buffer obtained from pm_alloc.
func (i *instance) write(ctx context.Context, data []byte) (uint32, error) {
	res, err := i.alloc.Call(ctx, uint64(len(data)))
	if err != nil {
		return 0, err
	}
	ptr := uint32(res[0])
	if len(data) > 0 && !i.mem.Write(ptr, data) {
		return 0, errABI("pm_alloc returned a buffer outside memory")
	}
	return ptr, nil
}

// classify turns a wazero error into the package's typed errors. inst may be
// nil (failed instantiation).
func (h *Host) classify(ctx context.Context, inst *instance, log *callLog, err error) error {
	for _, typed := range []error{ErrOutputTooLarge, ErrInvalidOutput} {
		if errors.Is(err, typed) {
			return err
		}
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("%w: %w", ErrTimeout, err)
		case sys.ExitCodeContextCanceled:
			if ctx.Err() != nil {
				return fmt.Errorf("plugin call canceled: %w", context.Canceled)
			}
			return fmt.Errorf("%w: %w", ErrTimeout, err)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return fmt.Errorf("plugin call canceled: %w", context.Canceled)
	}
	if log.contains("out of memory") {
		return fmt.Errorf("%w: %w", ErrMemoryLimit, err)
	}
	if inst != nil {
		limit := uint64(h.opts.MaxMemoryPages) * pageSize
		if uint64(inst.mem.Size())+memorySlackBytes >= limit {
			return fmt.Errorf("%w: %w", ErrMemoryLimit, err)
		}
	}
	return fmt.Errorf("%w: %w", ErrTrap, err)
}

// callLog collects one call's log lines, bounded to max bytes in total.
type callLog struct {
	mu        sync.Mutex
	max       int
	size      int
	entries   []string
	truncated bool
}

func newCallLog(max int) *callLog { return &callLog{max: max} }

type callLogKey struct{}

func withCallLog(ctx context.Context, l *callLog) context.Context {
	return context.WithValue(ctx, callLogKey{}, l)
}

func (l *callLog) add(prefix, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.truncated {
		return
	}
	line := prefix + ": " + msg
	if l.size+len(line) > l.max {
		if room := l.max - l.size; room > len(prefix)+2 {
			l.entries = append(l.entries, strings.ToValidUTF8(line[:room], ""))
		}
		l.entries = append(l.entries, "host: log truncated")
		l.truncated = true
		return
	}
	l.size += len(line)
	l.entries = append(l.entries, line)
}

func (l *callLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.entries...)
}

func (l *callLog) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.entries {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// logWriter is an instance's stdout or stderr: it feeds whichever call is
// running on the instance, and drops output between calls.
type logWriter struct {
	stream string
	mu     sync.Mutex
	log    *callLog
}

func (w *logWriter) set(l *callLog) {
	w.mu.Lock()
	w.log = l
	w.mu.Unlock()
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	l := w.log
	w.mu.Unlock()
	if l != nil {
		for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			l.add(w.stream, line)
		}
	}
	return len(b), nil
}

var levelNames = map[uint32]string{0: "debug", 1: "info", 2: "warn", 3: "error"}

// hostLog implements promanage.log(level, ptr, len).
func (h *Host) hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	l, _ := ctx.Value(callLogKey{}).(*callLog)
	if l == nil {
		return
	}
	level, ptr, n := uint32(stack[0]), uint32(stack[1]), uint32(stack[2])
	name, ok := levelNames[level]
	if !ok {
		name = "info"
	}
	if n > uint32(h.opts.MaxLogBytes) {
		n = uint32(h.opts.MaxLogBytes) // the log is bounded anyway; never copy more
	}
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		l.add("host", "promanage.log called with a range outside memory")
		return
	}
	l.add(name, strings.ToValidUTF8(string(b), "\uFFFD"))
}
