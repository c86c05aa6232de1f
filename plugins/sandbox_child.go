package plugins

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// SandboxArg is the first argument that makes a promanage process a plugin
// sandbox child (`promanage plugin-sandbox <config>`, started by the Host,
// never by hand). Test binaries of packages that create a Host call
// SandboxMain from TestMain so the Host can re-execute them the same way.
const SandboxArg = "plugin-sandbox"

// sandboxEnv is set in every child's (otherwise empty) environment; a
// process that has it refuses to create a Host, so a binary that forgot to
// call SandboxMain fails instead of spawning children of its own.
const sandboxEnv = "PROMANAGE_PLUGIN_SANDBOX"

// maxRequestFrame bounds a frame from the host (a call's input is at most
// Options.MaxInputBytes; this only stops a runaway).
const maxRequestFrame = 64 << 20

// childConfig is a child's whole configuration, passed as its one JSON
// argument so the limits are in force before it reads any input.
type childConfig struct {
	Mode           string       `json:"mode"` // "compile" or "run"
	Engine         engineConfig `json:"engine"`
	MaxModuleBytes int64        `json:"max_module_bytes"`
	AddressSpace   int64        `json:"address_space"` // bytes above the address space at start; 0: unlimited
	HeapLimit      int64        `json:"heap_limit"`    // debug.SetMemoryLimit; 0: none
	CPUSeconds     int          `json:"cpu_seconds"`   // RLIMIT_CPU; 0: none
	Batch          bool         `json:"batch"`         // SCHED_BATCH for every thread: never preempts others on wake-up
}

// SandboxMain makes this process a sandbox child and exits if it was started
// as one (os.Args[1] == SandboxArg); otherwise it returns at once. Call it
// first in TestMain of every package whose tests create a Host.
func SandboxMain() {
	if len(os.Args) > 1 && os.Args[1] == SandboxArg {
		os.Exit(RunSandbox(os.Args[2:]))
	}
}

// RunSandbox runs a sandbox child: it applies its limits, then serves the
// host over file descriptors 3 (requests) and 4 (answers) until the host
// closes them. It returns the process's exit code.
func RunSandbox(args []string) int {
	if len(args) != 1 || os.Getenv(sandboxEnv) == "" {
		fmt.Fprintln(os.Stderr, "plugin-sandbox: started by the plugin host only")
		return 2
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(args[0]), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "plugin-sandbox: config:", err)
		return 2
	}
	if err := applyChildLimits(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "plugin-sandbox: limits:", err)
		return 3
	}
	c := &child{cfg: cfg, r: bufio.NewReaderSize(os.NewFile(3, "requests"), 64<<10), w: os.NewFile(4, "answers")}
	var e encoder
	e.uint(sandboxProtocol)
	e.uint(uint64(os.Getpid()))
	if err := c.send(frameHello, e.b); err != nil {
		return 4
	}
	switch cfg.Mode {
	case "compile":
		return c.compile()
	case "run":
		return c.run()
	}
	fmt.Fprintln(os.Stderr, "plugin-sandbox: unknown mode", cfg.Mode)
	return 2
}

type child struct {
	cfg childConfig
	r   *bufio.Reader
	wmu sync.Mutex
	w   io.Writer
}

func (c *child) send(typ byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return writeFrame(c.w, typ, payload)
}

// readModule reads the module the host wrote for this child, bounded.
func (c *child) readModule(payload []byte) ([]byte, error) {
	d := decoder{b: payload}
	path := d.string()
	if d.err != nil {
		return nil, d.err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, c.cfg.MaxModuleBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > c.cfg.MaxModuleBytes {
		return nil, fmt.Errorf("module larger than %d bytes", c.cfg.MaxModuleBytes)
	}
	return b, nil
}

// exitOnEOF ends the child when the host closes its end (or dies), even in
// the middle of a compilation.
func (c *child) exitOnEOF() {
	go func() {
		for {
			if _, _, err := readFrame(c.r, maxRequestFrame); err != nil {
				os.Exit(0)
			}
		}
	}()
}

func (c *child) reply(typ byte, err error) {
	res := &callResult{}
	if err != nil {
		res.status, res.message = statusInvalidModule, err.Error()
		var ime *InvalidModuleError
		if errors.As(err, &ime) {
			res.message = ime.Reason
		}
		res.message = clipMessage(res.message)
	}
	_ = c.send(typ, res.encode())
}

func (c *child) compile() int {
	typ, payload, err := readFrame(c.r, maxRequestFrame)
	if err != nil || typ != frameCompile {
		return 0
	}
	c.exitOnEOF()
	wasm, err := c.readModule(payload)
	if err == nil {
		err = compileOnly(context.Background(), c.cfg.Engine, wasm)
	}
	c.reply(frameCompiled, err)
	return 0
}

func (c *child) run() int {
	typ, payload, err := readFrame(c.r, maxRequestFrame)
	if err != nil || typ != frameLoad {
		return 0
	}
	ctx := context.Background()
	wasm, err := c.readModule(payload)
	var eng *engine
	if err == nil {
		if eng, err = newEngine(ctx, c.cfg.Engine); err == nil {
			err = eng.load(ctx, wasm)
		}
	}
	c.reply(frameLoaded, err)
	if err != nil {
		return 0
	}
	loaded()
	wasm = nil
	var (
		mu      sync.Mutex
		cancels = map[uint64]context.CancelFunc{}
	)
	for {
		typ, payload, err := readFrame(c.r, maxRequestFrame)
		if err != nil {
			return 0 // the host closed the pipe: unloaded, or gone
		}
		switch typ {
		case frameCall:
			req, err := decodeCallRequest(payload)
			if err != nil {
				return 5
			}
			callCtx, cancel := context.WithCancel(ctx)
			mu.Lock()
			cancels[req.id] = cancel
			mu.Unlock()
			go func() {
				res := onOwnThread(eng.demoteAfter(), func() *callResult {
					return eng.call(callCtx, req.timeout, req.hook, req.input)
				})
				mu.Lock()
				delete(cancels, req.id)
				mu.Unlock()
				cancel()
				res.id = req.id
				if err := c.send(frameResult, res.encode()); err != nil {
					os.Exit(0)
				}
			}()
		case frameCancel:
			d := decoder{b: payload}
			id := d.uint()
			mu.Lock()
			if cancel := cancels[id]; cancel != nil {
				cancel()
			}
			mu.Unlock()
		default:
			return 5
		}
	}
}

// onOwnThread runs fn on a goroutine of its own, demoted after d (see
// demote), and returns its result; the caller's thread keeps its priority.
func onOwnThread[T any](d time.Duration, fn func() T) T {
	if d <= 0 {
		return fn()
	}
	ch := make(chan T, 1)
	go func() {
		done := demote(d)
		defer done()
		ch <- fn()
	}()
	return <-ch
}
