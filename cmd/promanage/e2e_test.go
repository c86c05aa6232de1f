package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/promanage/promanage/internal/testenv"
)

// server starts `promanage serve` on a free port against the test services
// and returns its base URL. It stops when the test ends.
func server(t *testing.T, extra ...string) string {
	t.Helper()
	testenv.DB(t) // public schema migrated
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	m := NewMain(io.Discard, io.Discard)
	m.ready = ready
	args := append([]string{"serve", "-database-url", testenv.DatabaseURL(), "-redis-url", testenv.RedisURL(),
		"-kratos-public-url", testenv.KratosURL(), "-kratos-admin-url", testenv.KratosAdminURL(), "-http-addr", "127.0.0.1:0", "-data-dir", t.TempDir(),
		"-log-level", "error",
		// Every test creates tenants from 127.0.0.1 and the limiter's
		// counters live in the shared Redis: the per-address creation limit
		// is off unless a test turns it on (a later flag wins).
		"-rate-limit-tenant-create", "0"}, extra...)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, args) }()
	select {
	case addr := <-ready:
		watchContract(t, addr)
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
		return "http://" + addr
	case err := <-done:
		cancel()
		t.Fatalf("serve did not start: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("serve did not start in 20s")
	}
	return ""
}

type client struct {
	t     *testing.T
	base  string
	token string
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %s", r.Body)
	}
	return m
}

func (c client) do(method, path string, body any, headers ...string) response {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			j, _ := json.Marshal(b)
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (c client) want(status int, method, path string, body any, headers ...string) response {
	c.t.Helper()
	r := c.do(method, path, body, headers...)
	if r.Status != status {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, status, r.Body)
	}
	return r
}
