//go:build linux

package plugins

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// demote runs the rest of the calling goroutine on its own OS thread and,
// once that thread has used d of CPU time, lowers it to nice 19: it then
// gets a sliver of the CPU when others want it (weight 15 against 1024) and
// other threads waking up preempt it, so a guest burning CPU until its
// deadline cannot slow other tenants' calls, while short calls (and a Go
// reactor's start, ~10 ms) never notice, and real work still progresses on
// a busy machine (SCHED_IDLE would starve it). CPU time, not wall time, so a
// loaded machine does not demote work that merely waited. An unprivileged
// thread cannot raise its priority again, so a demoted thread is never
// reused: the goroutine must return after calling the returned function, and
// the runtime then ends the thread. d <= 0 does nothing.
func demote(d time.Duration) (done func()) {
	if d <= 0 {
		return func() {}
	}
	runtime.LockOSThread()
	tid := syscall.Gettid()
	var (
		mu       sync.Mutex
		finished bool
		demoted  bool
		t        *time.Timer
	)
	var check func()
	check = func() {
		mu.Lock()
		defer mu.Unlock()
		if finished {
			return
		}
		if used := threadCPU(tid); used < d {
			t = time.AfterFunc(max(d-used, time.Millisecond), check)
			return
		}
		demoted = true
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19)
	}
	mu.Lock()
	t = time.AfterFunc(d, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		finished = true
		t.Stop()
		keep := !demoted
		mu.Unlock()
		if keep {
			runtime.UnlockOSThread()
		}
	}
}

// Scheduling policies (linux/sched.h).
const (
	schedOther = 0
	schedBatch = 3
)

func setPolicy(tid, policy int) {
	var param struct{ priority int32 }
	syscall.Syscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), uintptr(policy), uintptr(unsafe.Pointer(&param)))
}

// setProcessPolicy sets the policy of every thread of the process (threads
// created later inherit their creator's).
func setProcessPolicy(policy int) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			setPolicy(tid, policy)
		}
	}
}

// loaded ends a run child's start-up: its threads go from SCHED_BATCH back
// to SCHED_OTHER, so its calls wake up as promptly as any request.
func loaded() { setProcessPolicy(schedOther) }

// threadCPU is the CPU time thread tid of this process has used.
func threadCPU(tid int) time.Duration {
	// MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED) from the kernel's headers.
	clock := (^uintptr(tid) << 3) | 6
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clock, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

// applyChildLimits sets a sandbox child's own OS limits, before it reads any
// input: first in line for the OOM killer, no core dumps, few file descriptors, no privilege gain, an address
// space of what the Go runtime reserved at start plus the child's budget
// (the runtime reserves ~1.5 GiB of address space before main, so the limit
// cannot be set before exec), a soft heap limit, CPU time for compile
// children, and batch scheduling (compile children; run children until
// their module is loaded, so restarting a crashed sandbox does not compete
// with calls).
func applyChildLimits(cfg childConfig) error {
	set := func(res int, v uint64) error {
		return syscall.Setrlimit(res, &syscall.Rlimit{Cur: v, Max: v})
	}
	// Under memory pressure (the container's limit), the kernel kills a
	// sandbox before the host: any process may raise its own score.
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0)
	if err := set(syscall.RLIMIT_CORE, 0); err != nil {
		return fmt.Errorf("RLIMIT_CORE: %w", err)
	}
	if err := set(syscall.RLIMIT_NOFILE, 64); err != nil {
		return fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	if cfg.AddressSpace > 0 && !raceEnabled {
		vm, err := vmSize()
		if err != nil {
			return err
		}
		if err := set(syscall.RLIMIT_AS, vm+uint64(cfg.AddressSpace)); err != nil {
			return fmt.Errorf("RLIMIT_AS: %w", err)
		}
	}
	if cfg.CPUSeconds > 0 {
		// At the limit the kernel sends SIGKILL (soft == hard).
		if err := set(syscall.RLIMIT_CPU, uint64(cfg.CPUSeconds)); err != nil {
			return fmt.Errorf("RLIMIT_CPU: %w", err)
		}
	}
	if cfg.HeapLimit > 0 {
		debug.SetMemoryLimit(cfg.HeapLimit)
	}
	const prSetNoNewPrivs = 38
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("PR_SET_NO_NEW_PRIVS: %w", errno)
	}
	if cfg.Batch {
		// SCHED_BATCH: the same share of CPU, but never preempting a thread
		// that wakes up (a call).
		setProcessPolicy(schedBatch)
	}
	return nil
}

// vmSize is the process's current address space in bytes.
func vmSize() (uint64, error) {
	return procStatusBytes("/proc/self/status", "VmSize:")
}

// procStatusBytes reads a "kB" field of a /proc/<pid>/status file.
func procStatusBytes(path, field string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

// startBatch starts cmd from a thread running under SCHED_BATCH, so the
// child inherits it from its first instruction: the Go runtime's start and
// the package initialisation of a big binary (milliseconds of CPU) never
// compete with calls. (The child applies its own policy later.)
func startBatch(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := syscall.Gettid()
	setPolicy(tid, schedBatch)
	defer setPolicy(tid, schedOther)
	return cmd.Start()
}

// childProcAttr puts a child in its own process group (a terminal's ^C
// reaches the host, which then stops its children) and kills it if the
// host dies.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// defaultSandboxExecutable is the running binary, by a path that stays
// valid when the file is replaced on disk (an upgrade in place).
func defaultSandboxExecutable() (string, error) { return "/proc/self/exe", nil }
