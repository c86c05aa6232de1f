package plugins

import (
	"os"
	"testing"
)

// TestMain lets the Host re-execute this test binary as its sandbox child
// (see SandboxMain).
func TestMain(m *testing.M) {
	SandboxMain()
	os.Exit(m.Run())
}
