package plugins

import (
	"context"
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

// startBackoffMax bounds the wait between attempts to start an instance of a
// module whose _initialize keeps failing.
const startBackoffMax = 30 * time.Second

// engineConfig is what a sandbox child (or the in-process benchmark) needs to
// compile and run one plugin version.
type engineConfig struct {
	CacheDir       string        `json:"cache_dir"`
	MaxMemoryPages uint32        `json:"max_memory_pages"`
	MaxLogBytes    int           `json:"max_log_bytes"`
	MaxOutputBytes int           `json:"max_output_bytes"`
	PoolSize       int           `json:"pool_size"`
	InitTimeout    time.Duration `json:"init_timeout"`
	// DemoteAfter: a call that used this much CPU continues at the lowest
	// priority (see demote); StartDemoteAfter the same for instance starts;
	// 0 never demotes.
	DemoteAfter      time.Duration `json:"demote_after"`
	StartDemoteAfter time.Duration `json:"start_demote_after"`
}

// newRuntime returns a wazero runtime configured for untrusted code. Compile
// and run children build it identically, so the compilation cache written by
// one is found by the other (its key covers the module and this
// configuration).
func newRuntime(ctx context.Context, cfg engineConfig) (wazero.Runtime, error) {
	var cache wazero.CompilationCache
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("compilation cache %s: %w", cfg.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	rc := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(cfg.MaxMemoryPages).
		WithDebugInfoEnabled(false). // DWARF in custom sections would be parsed otherwise
		WithCompilationCache(cache)
	return wazero.NewRuntimeWithConfig(ctx, rc), nil
}

// compileOnly compiles a module into the cache (what a compile child does).
// A module wazero refuses is an *InvalidModuleError.
func compileOnly(ctx context.Context, cfg engineConfig, wasm []byte) error {
	rt, err := newRuntime(ctx, cfg)
	if err != nil {
		return err
	}
	defer rt.Close(ctx)
	c, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return &InvalidModuleError{Reason: err.Error()}
	}
	return c.Close(ctx)
}

// engine runs one plugin version: its compiled module and a pool of up to
// PoolSize instances, each used by one call at a time. A failed instance is
// discarded; a replacement is started in the background, with its own
// deadline (InitTimeout), so no call pays another's _initialize: a call that
// finds no idle instance waits for one only within its own deadline.
type engine struct {
	cfg      engineConfig
	rt       wazero.Runtime
	compiled wazero.CompiledModule

	mu        sync.Mutex
	idle      []*instance
	live      int // idle + busy + starting
	starting  int
	waiting   int
	changed   chan struct{} // closed (and replaced) when idle or live change
	initFails int
	retryAt   time.Time // no start before (instance starts keep failing)
	startErr  error
	callFails int       // calls failed in a row
	replaceAt time.Time // no replacement before (calls keep failing)
	closed    bool
}

func newEngine(ctx context.Context, cfg engineConfig) (*engine, error) {
	rt, err := newRuntime(ctx, cfg)
	if err != nil {
		return nil, err
	}
	e := &engine{cfg: cfg, rt: rt, changed: make(chan struct{})}
	if err := instantiateWASI(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("instantiate wasi: %w", err)
	}
	_, err = rt.NewHostModuleBuilder(hostModule).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(e.hostLog), []api.ValueType{vI32, vI32, vI32}, nil).
		WithParameterNames("level", "ptr", "len").
		Export("log").
		Instantiate(ctx)
	if err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("instantiate host module: %w", err)
	}
	return e, nil
}

func (e *engine) close(ctx context.Context) {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.rt.Close(ctx)
}

// load compiles the module (from the cache when a compile child put it
// there) and starts the first instance under InitTimeout. It returns an
// *InvalidModuleError, with the module's output, when either fails.
func (e *engine) load(ctx context.Context, wasm []byte) error {
	compiled, err := e.rt.CompileModule(ctx, wasm)
	if err != nil {
		return &InvalidModuleError{Reason: err.Error()}
	}
	e.compiled = compiled
	initCtx, cancel := context.WithTimeout(ctx, e.cfg.InitTimeout)
	defer cancel()
	log := newCallLog(1024)
	inst, err := e.newInstance(withCallLog(initCtx, log))
	if err != nil {
		reason := "instantiate: " + e.describe(ctx, nil, log, err)
		if lines := log.lines(); len(lines) > 0 {
			reason += " (output: " + strings.Join(lines, "; ") + ")"
		}
		return &InvalidModuleError{Reason: reason}
	}
	e.mu.Lock()
	e.idle = append(e.idle, inst)
	e.live = 1
	e.mu.Unlock()
	return nil
}

// describe is a failure's message with its class (timeout, trap, ...).
func (e *engine) describe(ctx context.Context, inst *instance, log *callLog, err error) string {
	_, msg := e.classify(ctx, inst, log, err)
	return msg
}

// call runs hook on an instance within timeout and reports the outcome as
// the protocol's result (status and message instead of typed errors).
func (e *engine) call(ctx context.Context, timeout time.Duration, hook string, input []byte) *callResult {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := newCallLog(e.cfg.MaxLogBytes)
	res := &callResult{}
	inst, err := e.acquire(ctx)
	if err != nil {
		res.status, res.message = e.classify(ctx, nil, log, err)
		res.message = clipMessage(res.message)
		res.duration, res.logs = time.Since(start), log.lines()
		return res
	}
	out, err := inst.call(withCallLog(ctx, log), e.cfg.MaxOutputBytes, hook, input)
	res.duration = time.Since(start)
	if err != nil {
		res.status, res.message = e.classify(ctx, inst, log, err)
	}
	e.release(inst, err == nil)
	res.output, res.logs = out, log.lines()
	res.message = clipMessage(res.message)
	return res
}

// maxErrorMessage bounds a failure's message (a trap's stack trace names
// up to 30 functions, with names as long as the module makes them).
const maxErrorMessage = 4 << 10

func clipMessage(s string) string {
	if len(s) <= maxErrorMessage {
		return s
	}
	return strings.ToValidUTF8(s[:maxErrorMessage], "") + "..."
}

// demoteAfter is how much CPU the next call may use before it is demoted:
// DemoteAfter, or a tenth of it (at least 1 ms) while the plugin's calls keep
// failing (a plugin burning CPU until its deadline fails every call).
func (e *engine) demoteAfter() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.callFails > 0 && e.cfg.DemoteAfter > 0 {
		return max(e.cfg.DemoteAfter/10, time.Millisecond)
	}
	return e.cfg.DemoteAfter
}

// errStartFailed wraps the last instance start failure while the engine
// waits before trying again.
var errStartFailed = errors.New("no instance could be started")

// errNoInstance: the call's deadline passed while it waited for an instance
// (all busy, or one still starting).
var errNoInstance = errors.New("no instance was ready before the deadline")

// acquire returns an idle instance, starting one in the background if the
// pool has room and nobody is starting one for this caller already, and
// waits for it within ctx.
func (e *engine) acquire(ctx context.Context) (*instance, error) {
	e.mu.Lock()
	e.waiting++
	defer func() {
		e.waiting--
		e.mu.Unlock()
	}()
	for {
		if n := len(e.idle); n > 0 {
			inst := e.idle[n-1]
			e.idle = e.idle[:n-1]
			return inst, nil
		}
		if e.closed {
			return nil, ErrClosed
		}
		var wake <-chan time.Time
		if e.live < e.cfg.PoolSize && e.starting < e.waiting {
			now := time.Now()
			switch {
			case now.Before(e.retryAt):
				return nil, fmt.Errorf("%w: %w", errStartFailed, e.startErr)
			case now.Before(e.replaceAt):
				// The plugin's calls keep failing: its instances come back
				// slowly, so a hostile plugin cannot make the sandbox spend
				// its time (and memory) starting them.
				t := time.NewTimer(e.replaceAt.Sub(now))
				defer t.Stop()
				wake = t.C
			default:
				e.startLocked()
			}
		}
		ch := e.changed
		e.mu.Unlock()
		select {
		case <-ch:
			e.mu.Lock()
		case <-wake:
			e.mu.Lock()
		case <-ctx.Done():
			e.mu.Lock()
			return nil, fmt.Errorf("%w: %w", errNoInstance, ctx.Err())
		}
	}
}

func (e *engine) broadcastLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// startLocked starts an instance in the background, under its own deadline
// and at the lowest priority once it runs long (demote).
func (e *engine) startLocked() {
	e.live++
	e.starting++
	go func() {
		done := demote(e.cfg.StartDemoteAfter)
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.InitTimeout)
		log := newCallLog(1024)
		inst, err := e.newInstance(withCallLog(ctx, log))
		var cerr error
		if err != nil {
			status, msg := e.classify(ctx, nil, log, err)
			cerr = classified{status: status, err: fmt.Errorf("start instance: %s%s", msg, outputSuffix(log))}
		}
		cancel()
		e.mu.Lock()
		defer e.mu.Unlock()
		e.starting--
		switch {
		case err != nil:
			e.live--
			e.initFails++
			e.retryAt = time.Now().Add(min(50*time.Millisecond<<min(e.initFails-1, 20), startBackoffMax))
			e.startErr = cerr
		case e.closed:
			e.live--
			inst.close(context.Background())
		default:
			e.initFails = 0
			e.idle = append(e.idle, inst)
		}
		e.broadcastLocked()
	}()
}

func outputSuffix(log *callLog) string {
	if lines := log.lines(); len(lines) > 0 {
		return " (output: " + strings.Join(lines, "; ") + ")"
	}
	return ""
}

// classified carries a status through errors.As (an instance start's
// failure, reported to later calls).
type classified struct {
	status uint64
	err    error
}

func (c classified) Error() string { return c.err.Error() }
func (c classified) Unwrap() error { return c.err }

// release returns a healthy instance to the pool; a failed one is closed,
// and a replacement is started at once if the pool would otherwise be empty.
func (e *engine) release(inst *instance, healthy bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if healthy && !e.closed {
		e.callFails = 0
		e.idle = append(e.idle, inst)
		e.broadcastLocked()
		return
	}
	e.live--
	e.callFails++
	e.replaceAt = time.Now().Add(replaceDelay(e.callFails))
	go inst.close(context.Background())
	if !e.closed && len(e.idle) == 0 && e.starting == 0 && e.live < e.cfg.PoolSize && !time.Now().Before(e.retryAt) &&
		!time.Now().Before(e.replaceAt) {
		e.startLocked()
	}
	e.broadcastLocked()
}

// replaceDelay is how long an instance discarded after fails failed calls in
// a row waits to be replaced: at once after one (a plugin that failed on one
// input), then from 50 ms doubling to 5 s.
func replaceDelay(fails int) time.Duration {
	if fails <= 1 {
		return 0
	}
	return min(50*time.Millisecond<<min(fails-2, 10), 5*time.Second)
}

// classify turns a failure into a protocol status and a message.
func (e *engine) classify(ctx context.Context, inst *instance, log *callLog, err error) (uint64, string) {
	var c classified
	switch {
	case errors.As(err, &c):
		return c.status, err.Error()
	case errors.Is(err, ErrOutputTooLarge):
		return statusOutputTooLarge, err.Error()
	case errors.Is(err, ErrInvalidOutput):
		return statusInvalidOutput, err.Error()
	case errors.Is(err, ErrClosed):
		return statusStartFailed, err.Error()
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return statusTimeout, "deadline exceeded"
		case sys.ExitCodeContextCanceled:
			if ctx.Err() == context.DeadlineExceeded {
				return statusTimeout, "deadline exceeded"
			}
			return statusCanceled, "canceled"
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return statusTimeout, err.Error()
	}
	if errors.Is(err, context.Canceled) {
		return statusCanceled, "canceled"
	}
	if log.contains("out of memory") {
		return statusMemory, err.Error()
	}
	if inst != nil {
		limit := uint64(e.cfg.MaxMemoryPages) * pageSize
		if uint64(inst.mem.Size())+memorySlackBytes >= limit {
			return statusMemory, err.Error()
		}
	}
	return statusTrap, err.Error()
}

// instance is one module instance. It is used by one call at a time.
type instance struct {
	mod    api.Module
	mem    api.Memory
	alloc  api.Function
	handle api.Function
}

func (e *engine) newInstance(ctx context.Context) (*instance, error) {
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: many instances of one module
		WithStartFunctions("_initialize")
	mod, err := e.rt.InstantiateModule(ctx, e.compiled, cfg)
	if err != nil {
		return nil, err
	}
	if mod.IsClosed() { // _initialize called proc_exit(0)
		return nil, errors.New("module exited during _initialize")
	}
	inst := &instance{mod: mod, mem: mod.ExportedMemory("memory"),
		alloc: mod.ExportedFunction("pm_alloc"), handle: mod.ExportedFunction("pm_handle")}
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

func (i *instance) call(ctx context.Context, maxOutput int, hook string, input []byte) ([]byte, error) {
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
	if int64(outLen) > int64(maxOutput) {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrOutputTooLarge, outLen, maxOutput)
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

var levelNames = map[uint32]string{0: "debug", 1: "info", 2: "warn", 3: "error"}

// hostLog implements promanage.log(level, ptr, len): it checks the deadline,
// and copies nothing once the call's log is full.
func (e *engine) hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	checkDeadline(ctx, mod)
	l, _ := ctx.Value(callLogKey{}).(*callLog)
	if l == nil {
		return
	}
	room := l.room()
	if room == 0 {
		return
	}
	level, ptr, n := uint32(stack[0]), uint32(stack[1]), uint32(stack[2])
	name, ok := levelNames[level]
	if !ok {
		name = "info"
	}
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		l.add("host", "promanage.log called with a range outside memory")
		return
	}
	if len(b) > room {
		b = b[:room+1] // enough to know the line does not fit
	}
	l.add(name, string(b))
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

// room is how many more bytes the log takes (0 once it is full).
func (l *callLog) room() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.truncated {
		return 0
	}
	return l.max - l.size
}

// add appends one line, valid UTF-8, or the truncation note when it does
// not fit.
func (l *callLog) add(prefix, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.truncated {
		return
	}
	line := strings.ToValidUTF8(prefix+": "+msg, "\uFFFD")
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

// write appends what a guest wrote to stdout or stderr, one line each.
func (l *callLog) write(stream string, b []byte) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		l.add(stream, line)
	}
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
