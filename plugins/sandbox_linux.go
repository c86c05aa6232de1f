//go:build linux

package plugins

import (
	"fmt"
	"os"
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
// once that thread has used d of CPU time, lowers it to the lowest CPU
// priority (nice 19): a guest burning CPU until its deadline then only takes
// CPU time nobody else wants, so it cannot slow other tenants' calls, while
// short calls (and a Go reactor's start, ~10 ms) never notice. CPU time, not
// wall time, so a loaded machine does not demote work that merely waited.
// An unprivileged process cannot raise a priority again, so a demoted thread
// is never reused: the goroutine must return after calling the returned
// function, and the runtime then ends the thread. d <= 0 does nothing.
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
// input: no core dumps, few file descriptors, no privilege gain, an address
// space of what the Go runtime reserved at start plus the child's budget
// (the runtime reserves ~1.5 GiB of address space before main, so the limit
// cannot be set before exec), a soft heap limit, CPU time for compile
// children, and batch scheduling for compile children.
func applyChildLimits(cfg childConfig) error {
	set := func(res int, v uint64) error {
		return syscall.Setrlimit(res, &syscall.Rlimit{Cur: v, Max: v})
	}
	if err := set(syscall.RLIMIT_CORE, 0); err != nil {
		return fmt.Errorf("RLIMIT_CORE: %w", err)
	}
	if err := set(syscall.RLIMIT_NOFILE, 64); err != nil {
		return fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	if cfg.AddressSpace > 0 {
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
		// SCHED_BATCH: the same share of CPU, but never preempting a task
		// that wakes up (a call); threads created later inherit it.
		const schedBatch = 3
		var param struct{ priority int32 }
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				syscall.Syscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), schedBatch, uintptr(unsafe.Pointer(&param)))
			}
		}
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

// childProcAttr puts a child in its own process group (a terminal's ^C
// reaches the host, which then stops its children) and kills it if the
// host dies.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// defaultSandboxExecutable is the running binary, by a path that stays
// valid when the file is replaced on disk (an upgrade in place).
func defaultSandboxExecutable() (string, error) { return "/proc/self/exe", nil }
