package core_test

import (
	"os"
	"testing"

	"github.com/promanage/promanage/plugins"
)

// TestMain lets the plugin host re-execute this test binary as its sandbox
// child: the concurrency tests run real Wasm validation plugins.
func TestMain(m *testing.M) {
	plugins.SandboxMain()
	os.Exit(m.Run())
}
