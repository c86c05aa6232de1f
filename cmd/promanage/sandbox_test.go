package main

import (
	"os"
	"testing"

	"github.com/promanage/promanage/plugins"
)

// TestMain lets the plugin host re-execute this test binary as its sandbox
// child, as the promanage binary does with `promanage plugin-sandbox`.
func TestMain(m *testing.M) {
	plugins.SandboxMain()
	os.Exit(m.Run())
}
