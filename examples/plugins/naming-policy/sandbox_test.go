package namingpolicy_test

import (
	"os"
	"testing"

	"github.com/promanage/promanage/plugins"
)

// TestMain lets the plugin host re-execute this test binary as its sandbox
// child (plugins.SandboxMain).
func TestMain(m *testing.M) {
	plugins.SandboxMain()
	os.Exit(m.Run())
}
