package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/promanage/promanage/internal/testenv"
)

// SIGTERM (here: cancelling Run's context) lets an in-flight request finish
// before the process exits. The request is held inside its handler by an
// advisory lock the test owns (member changes take a per-tenant lock).
func TestGracefulShutdownFinishesInFlightRequests(t *testing.T) {
	db := testenv.DB(t)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	m := NewMain(io.Discard, io.Discard)
	m.ready = ready
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, []string{"serve", "-database-url", testenv.DatabaseURL(), "-redis-url", testenv.RedisURL(),
			"-kratos-public-url", testenv.KratosURL(), "-http-addr", "127.0.0.1:0", "-log-level", "error", "-shutdown-timeout", "10s"})
	}()
	base := "http://" + <-ready
	owner := testenv.SignUp(t, "shutdown")
	c := client{t: t, base: base, token: owner.Token}
	slug := testenv.Slug("bye")
	tn := c.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug}).json(t)

	// Hold the tenant's membership lock in a transaction of our own.
	tx := db.Begin()
	if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 1))", tn["id"]).Error; err != nil {
		t.Fatal(err)
	}
	result := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("PUT", base+"/v1/tenants/"+slug+"/members/"+owner.ID.String(), strings.NewReader(`{"role":"owner"}`))
		req.Header.Set("Authorization", "Bearer "+owner.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			result <- -1
			return
		}
		resp.Body.Close()
		result <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond) // the request is now waiting inside its handler
	cancel()                           // SIGTERM
	select {
	case err := <-done:
		t.Fatalf("server exited with a request in flight: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	tx.Rollback()
	if got := <-result; got != http.StatusOK {
		t.Fatalf("in-flight request got %d, want 200", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit after draining")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("server still accepts connections after shutdown")
	}
}
