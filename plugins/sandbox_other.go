//go:build !linux

package plugins

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// On other systems (development machines) sandbox children run without OS
// limits or priority changes: the deadline watchdog and the structural
// pre-check still apply. Production runs on Linux.

func demote(time.Duration) func() { return func() {} }

func applyChildLimits(childConfig) error { return nil }

func loaded() {}

func startBatch(cmd *exec.Cmd) error { return cmd.Start() }

func procStatusBytes(string, string) (uint64, error) { return 0, errors.New("no /proc") }

func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func defaultSandboxExecutable() (string, error) { return os.Executable() }
