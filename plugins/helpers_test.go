package plugins

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read testdata (rebuild with examples/plugins/build.sh): %v", err)
	}
	return b
}

func newTestHost(t testing.TB, opts *Options) *Host {
	t.Helper()
	h, err := NewHost(context.Background(), opts)
	if err != nil {
		t.Fatalf("NewHost: %v", err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h
}

func mustLoad(t testing.TB, h *Host, key, file string, m Manifest) *Plugin {
	t.Helper()
	p, err := h.Load(context.Background(), key, testdata(t, file), m)
	if err != nil {
		t.Fatalf("Load %s: %v", file, err)
	}
	return p
}

func validateManifest(name string, timeoutMS int) Manifest {
	return Manifest{Name: name, Hooks: []string{"project.validate"}, TimeoutMS: timeoutMS}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
