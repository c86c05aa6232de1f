package plugins

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Bounds of the sandbox processes (ABI.md section 5, RATIONALE.md).
const (
	// WatchdogSlack is how long past a call's deadline the host waits for
	// the child's answer before it kills the child. The child stops the
	// guest at the deadline itself; the watchdog is for a child that cannot
	// (a guest stuck where wazero does not look, a child starved of CPU).
	WatchdogSlack = 100 * time.Millisecond
	// sandboxStartTimeout bounds a child's start, from exec to its hello.
	sandboxStartTimeout = 10 * time.Second
	// loadOverhead bounds a run child's load beyond _initialize: decoding
	// and validating the module and reading its compiled code from the
	// cache (~0.1 s for an 8 MiB module).
	loadOverhead = 5 * time.Second
	// stderrTail is how much of a child's stderr is kept to explain its
	// death (a Go fatal error's first lines).
	stderrTail = 4 << 10
)

// sandboxProc is one child process and the host's end of its pipes.
type sandboxProc struct {
	cmd    *exec.Cmd
	req    *os.File
	wmu    sync.Mutex
	resp   *bufio.Reader
	stderr *tailBuffer
	limits string // for messages: "1024 MiB of address space", ...

	control  chan frame // hello, loaded, compiled
	waitDone chan struct{}
	stopping chan struct{} // closed when the host kills the child
	dead     chan struct{} // closed once the child is gone and deathErr is set
	gone     sync.Once     // onDeath runs once: at the kill, or at the death

	mu        sync.Mutex
	nextID    uint64
	pending   map[uint64]chan *callResult
	deathErr  error
	killedFor uint64 // the call whose deadline killed the child, if any
	killNote  string // why the host killed it, if it did
	onDeath   func(*sandboxProc)
}

type frame struct {
	typ     byte
	payload []byte
}

// maxAnswerFrame bounds a frame from a child: output, logs and a message.
func (h *Host) maxAnswerFrame() int {
	return h.opts.MaxOutputBytes + 4*h.opts.MaxLogBytes + 128<<10
}

// spawn starts a child with cfg (its mode, limits and engine) and waits for
// its hello.
func (h *Host) spawn(ctx context.Context, cfg childConfig, limits string) (*sandboxProc, error) {
	arg, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox pipe: %w", err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, fmt.Errorf("sandbox pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		respR.Close()
		respW.Close()
		return nil, fmt.Errorf("sandbox pipe: %w", err)
	}
	args := append(append([]string(nil), h.sandboxCmd[1:]...), SandboxArg, string(arg))
	cmd := exec.Command(h.sandboxCmd[0], args...)
	// An empty environment: the child must not see the process's secrets.
	cmd.Env = []string{sandboxEnv + "=1", "GOTRACEBACK=single"}
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{reqR, respW}
	cmd.Stderr = errW
	cmd.SysProcAttr = childProcAttr()
	err = startBatch(cmd)
	reqR.Close()
	respW.Close()
	errW.Close()
	if err != nil {
		reqW.Close()
		respR.Close()
		errR.Close()
		return nil, fmt.Errorf("start plugin sandbox: %w", err)
	}
	p := &sandboxProc{cmd: cmd, req: reqW, resp: bufio.NewReaderSize(respR, 64<<10), stderr: &tailBuffer{max: stderrTail},
		limits: limits, control: make(chan frame, 1), waitDone: make(chan struct{}), stopping: make(chan struct{}), dead: make(chan struct{}),
		pending: map[uint64]chan *callResult{}}
	h.trackProc(p, true)
	go func() {
		_, _ = io.Copy(p.stderr, errR)
		errR.Close()
	}()
	go func() {
		_ = cmd.Wait()
		close(p.waitDone)
	}()
	go p.readLoop(h.maxAnswerFrame(), func() {
		respR.Close()
		h.trackProc(p, false)
	})

	f, err := p.await(ctx, frameHello, sandboxStartTimeout, "did not start")
	if err != nil {
		return nil, fmt.Errorf("start plugin sandbox: %w", err)
	}
	d := decoder{b: f.payload}
	if v := d.uint(); d.err != nil || v != sandboxProtocol {
		p.kill("speaks another protocol version")
		return nil, fmt.Errorf("start plugin sandbox: protocol version %d, want %d (is SandboxMain called first?)", v, sandboxProtocol)
	}
	return p, nil
}

// readLoop dispatches the child's frames until it dies.
func (p *sandboxProc) readLoop(max int, cleanup func()) {
	var err error
	defer func() {
		p.finish(err)
		cleanup()
	}()
	for {
		var typ byte
		var payload []byte
		typ, payload, err = readFrame(p.resp, max)
		if err != nil {
			return
		}
		switch typ {
		case frameResult:
			res, derr := decodeCallResult(payload, max)
			if derr != nil {
				err = derr
				p.kill("sent a malformed answer")
				return
			}
			p.mu.Lock()
			ch := p.pending[res.id]
			delete(p.pending, res.id)
			p.mu.Unlock()
			if ch != nil {
				ch <- res
			}
		case frameHello, frameLoaded, frameCompiled:
			select {
			case p.control <- frame{typ, payload}:
			default:
				err = errBadFrame
				p.kill("sent an unexpected frame")
				return
			}
		default:
			err = errBadFrame
			p.kill("sent an unknown frame")
			return
		}
	}
}

// finish records why the child is gone (after it exited) and wakes everyone
// waiting on it.
func (p *sandboxProc) finish(readErr error) {
	select {
	case <-p.waitDone:
	case <-time.After(time.Second):
		// It closed its pipe but lives on: end it.
		p.kill("closed its pipe")
		<-p.waitDone
	}
	p.mu.Lock()
	p.deathErr = p.describeDeath(readErr)
	close(p.dead)
	p.mu.Unlock()
	p.notifyGone()
}

// notifyGone tells the owner (once) that this child will serve no more
// calls, so it starts a replacement without waiting for the exit.
func (p *sandboxProc) notifyGone() {
	p.mu.Lock()
	fn := p.onDeath
	p.mu.Unlock()
	if fn != nil {
		p.gone.Do(func() { go fn(p) })
	}
}

// describeDeath classifies the end of a child: killed by the host (the
// reason it gave), out of memory (its address-space limit), or crashed.
func (p *sandboxProc) describeDeath(readErr error) error {
	state := "exited"
	if ps := p.cmd.ProcessState; ps != nil {
		state = ps.String()
	}
	tail := p.stderr.String()
	switch {
	case p.killNote != "":
		return fmt.Errorf("%w: the plugin sandbox process was stopped: %s", ErrTrap, p.killNote)
	case strings.Contains(tail, "out of memory") || strings.Contains(tail, "cannot allocate memory"):
		return fmt.Errorf("%w: the plugin sandbox process ran out of memory (%s) and was replaced", ErrMemoryLimit, p.limits)
	}
	msg := firstLine(tail)
	if msg == "" && readErr != nil && !errors.Is(readErr, io.EOF) {
		msg = readErr.Error()
	}
	if msg != "" {
		msg = ": " + msg
	}
	return fmt.Errorf("%w: the plugin sandbox process died (%s)%s", ErrTrap, state, msg)
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 200 {
				l = l[:200]
			}
			return strings.ToValidUTF8(l, "")
		}
	}
	return ""
}

// kill ends the child at once (SIGKILL); note says why, for the callers.
// Calls waiting on it return at once; the exit is reaped in the background.
func (p *sandboxProc) kill(note string) {
	p.mu.Lock()
	first := p.killNote == ""
	if first {
		p.killNote = note
		close(p.stopping)
	}
	p.mu.Unlock()
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
	if first {
		p.notifyGone()
	}
}

// close ends a child the host no longer needs.
func (p *sandboxProc) close() {
	p.wmu.Lock()
	_ = p.req.Close()
	p.wmu.Unlock()
	p.kill("unloaded")
}

// cpuTime is the CPU time the child used (known once it is dead).
func (p *sandboxProc) cpuTime() time.Duration {
	ps := p.cmd.ProcessState
	if ps == nil {
		return 0
	}
	return ps.UserTime() + ps.SystemTime()
}

// isDead reports whether the child is dead or being killed.
func (p *sandboxProc) isDead() bool {
	select {
	case <-p.dead:
		return true
	case <-p.stopping:
		return true
	default:
		return false
	}
}

func (p *sandboxProc) send(typ byte, payload []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return writeFrame(p.req, typ, payload)
}

// await waits for the child's next control frame of type want, killing the
// child after limit or when ctx ends.
func (p *sandboxProc) await(ctx context.Context, want byte, limit time.Duration, onLimit string) (frame, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case f := <-p.control:
		if f.typ != want {
			p.kill("sent an unexpected frame")
			return frame{}, errBadFrame
		}
		return f, nil
	case <-t.C:
		p.kill(onLimit)
		<-p.dead
		return frame{}, errLimit{onLimit}
	case <-ctx.Done():
		p.kill("its caller gave up")
		return frame{}, ctx.Err()
	case <-p.dead:
		return frame{}, p.deathErr
	}
}

// errLimit: the host killed a child at a time limit.
type errLimit struct{ what string }

func (e errLimit) Error() string { return e.what }

// roundTrip sends one request and waits for its control answer, decoded.
func (p *sandboxProc) roundTrip(ctx context.Context, typ byte, payload []byte, want byte, limit time.Duration, onLimit string) (*callResult, error) {
	if err := p.send(typ, payload); err != nil {
		select {
		case <-p.dead:
			return nil, p.deathErr
		case <-time.After(time.Second):
			return nil, err
		}
	}
	f, err := p.await(ctx, want, limit, onLimit)
	if err != nil {
		return nil, err
	}
	res, err := decodeCallResult(f.payload, 64)
	if err != nil {
		p.kill("sent a malformed answer")
		return nil, err
	}
	return res, nil
}

// call runs one hook call in the child. The watchdog kills the child if no
// answer came by timeout + WatchdogSlack; ctx ending asks the child to stop
// the guest (the call then answers canceled). A nil result comes with the
// error that ended the child.
func (p *sandboxProc) call(ctx context.Context, timeout time.Duration, hook string, input []byte) (*callResult, error) {
	ch := make(chan *callResult, 1)
	p.mu.Lock()
	if p.isDead() {
		err := p.stoppedErr()
		p.mu.Unlock()
		return nil, err
	}
	p.nextID++
	id := p.nextID
	p.pending[id] = ch
	p.mu.Unlock()

	watchdog := time.AfterFunc(timeout+WatchdogSlack, func() {
		p.mu.Lock()
		_, waiting := p.pending[id]
		if waiting && p.killedFor == 0 {
			p.killedFor = id
		}
		p.mu.Unlock()
		if waiting {
			p.kill(fmt.Sprintf("a call did not answer within its deadline of %v plus %v", timeout, WatchdogSlack))
		}
	})
	defer watchdog.Stop()
	req := callRequest{id: id, timeout: timeout, hook: hook, input: input}
	if err := p.send(frameCall, req.encode()); err != nil {
		p.kill("its request pipe broke")
	}
	done := ctx.Done()
	for {
		select {
		case res := <-ch:
			return res, nil
		case <-p.stopping:
			return p.failed(ch, id, timeout)
		case <-p.dead:
			return p.failed(ch, id, timeout)
		case <-done:
			done = nil
			var e encoder
			e.uint(id)
			_ = p.send(frameCancel, e.b)
		}
	}
}

// failed is a pending call's outcome once its child is killed or dead: its
// answer if it came first, ErrTimeout if its own deadline killed the child,
// else why the child ended.
func (p *sandboxProc) failed(ch chan *callResult, id uint64, timeout time.Duration) (*callResult, error) {
	select {
	case res := <-ch:
		return res, nil
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pending, id)
	if p.killedFor == id {
		return nil, fmt.Errorf("%w: the plugin sandbox process did not answer within the deadline of %v plus %v and was killed", ErrTimeout, timeout, WatchdogSlack)
	}
	return nil, p.stoppedErr()
}

// stoppedErr explains a dead or killed child (p.mu held).
func (p *sandboxProc) stoppedErr() error {
	if p.deathErr != nil {
		return p.deathErr
	}
	return fmt.Errorf("%w: the plugin sandbox process was stopped: %s", ErrTrap, p.killNote)
}

// tailBuffer keeps the first and the last bytes written to it, at most max
// in all: enough to explain a crash whatever the child prints.
type tailBuffer struct {
	mu   sync.Mutex
	max  int
	head []byte
	tail []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(b)
	if room := t.max/2 - len(t.head); room > 0 {
		k := min(room, len(b))
		t.head = append(t.head, b[:k]...)
		b = b[k:]
	}
	if len(b) > 0 {
		t.tail = append(t.tail, b...)
		if over := len(t.tail) - t.max/2; over > 0 {
			t.tail = append(t.tail[:0], t.tail[over:]...)
		}
	}
	return n, nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.head) + string(t.tail)
}

// logDeath records an unexpected child death for operators.
func logDeath(plugin, tenant string, err error) {
	slog.Warn("plugin sandbox process ended", "plugin", plugin, "tenant", tenant, "err", err)
}
