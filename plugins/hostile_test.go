package plugins

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// bystander calls a well-behaved plugin of another tenant in a loop until
// stopped, and records failures and the slowest call.
type bystander struct {
	calls, failures atomic.Int64
	slowest         atomic.Int64 // nanoseconds
	firstErr        atomic.Value
	stop            chan struct{}
	done            chan struct{}
}

func startBystander(t *testing.T, h *Host) *bystander {
	t.Helper()
	// A generous deadline: this measures containment, not speed, on a shared
	// machine that may be running the race detector.
	p := mustLoad(t, h, "bystander-good", "good.wasm", validateManifest("good", 1000))
	b := &bystander{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			select {
			case <-b.stop:
				return
			default:
			}
			start := time.Now()
			inv, err := h.Call(context.Background(), p, "tenant-b", "project.validate", []byte(`{"input":{}}`))
			if err == nil {
				var res *ValidationResult
				if res, err = DecodeValidationResult(inv.Output); err == nil && !res.Allow {
					err = errors.New("good plugin rejected")
				}
			}
			d := time.Since(start)
			b.calls.Add(1)
			if err != nil {
				b.failures.Add(1)
				b.firstErr.CompareAndSwap(nil, err)
			}
			for {
				old := b.slowest.Load()
				if int64(d) <= old || b.slowest.CompareAndSwap(old, int64(d)) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return b
}

func (b *bystander) check(t *testing.T) {
	t.Helper()
	close(b.stop)
	<-b.done
	slowest := time.Duration(b.slowest.Load())
	t.Logf("bystander tenant: %d calls, %d failures, slowest %v", b.calls.Load(), b.failures.Load(), slowest)
	if b.calls.Load() == 0 {
		t.Error("bystander made no calls")
	}
	if n := b.failures.Load(); n > 0 {
		t.Errorf("bystander: %d calls failed, first: %v", n, b.firstErr.Load())
	}
	if slowest > time.Second {
		t.Errorf("bystander's slowest call took %v, want < 1s", slowest)
	}
}

// TestHostilePluginsAreContained runs each misbehaviour of hostile.wasm for
// tenant a: every one ends in its typed error, the instance is replaced (a
// following good call on the same plugin works), and tenant b's
// well-behaved plugin keeps answering meanwhile.
func TestHostilePluginsAreContained(t *testing.T) {
	h := newTestHost(t, &Options{PoolSize: 2})
	// 1s: "grow" copies up to 16 MiB at each step, slow under the race detector.
	p := mustLoad(t, h, "hostile", "hostile.wasm", validateManifest("hostile", 1000))
	b := startBystander(t, h)

	tests := []struct {
		mode string
		want error
	}{
		{"loop", ErrTimeout},
		{"grow", ErrMemoryLimit},
		{"recurse", ErrTrap},
		{"bigout", ErrOutputTooLarge},
		{"xbounds", ErrTrap},
		{"trap", ErrTrap},
		{"exit", ErrTrap},
		{"junk", ErrInvalidOutput},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			start := time.Now()
			inv, err := h.Call(context.Background(), p, "tenant-a", "project.validate", []byte(`"`+tt.mode+`"`))
			if !errors.Is(err, tt.want) {
				t.Fatalf("%s: err = %v, want %v", tt.mode, err, tt.want)
			}
			if inv == nil || inv.Output != nil {
				t.Errorf("%s: invocation = %+v, want one without output", tt.mode, inv)
			}
			t.Logf("%s: %v after %v", tt.mode, err, time.Since(start))
			if _, err := h.Call(context.Background(), p, "tenant-a", "project.validate", []byte(`"ok"`)); err != nil {
				t.Fatalf("good call after %s: %v", tt.mode, err)
			}
		})
	}
	// The caller's own context bounds a call too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := h.Call(ctx, p, "tenant-a", "project.validate", []byte(`"loop"`)); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled call = %v, want context.Canceled", err)
	}
	b.check(t)
}

// TestConcurrentSlowCalls fires 50 concurrent slow calls for one tenant:
// they are bounded by the tenant's cap and the pool, each either succeeds,
// times out or is refused as busy, and the other tenant is not starved.
func TestConcurrentSlowCalls(t *testing.T) {
	const n = 50
	h := newTestHost(t, &Options{PoolSize: 4, TenantConcurrency: 4})
	p := mustLoad(t, h, "hostile", "hostile.wasm", validateManifest("hostile", 2000))
	b := startBystander(t, h)

	var (
		wg                 sync.WaitGroup
		ok, busy, timedOut atomic.Int64
		mu                 sync.Mutex
		other              []error
	)
	call := func(mode string) {
		defer wg.Done()
		_, err := h.Call(context.Background(), p, "tenant-a", "project.validate", []byte(`"`+mode+`"`))
		switch {
		case err == nil:
			ok.Add(1)
		case errors.Is(err, ErrBusy):
			busy.Add(1)
		case errors.Is(err, ErrTimeout):
			timedOut.Add(1)
		default:
			mu.Lock()
			other = append(other, err)
			mu.Unlock()
		}
	}
	start := time.Now()
	// Two calls that never finish take two of the tenant's four slots until
	// they time out; 48 slow calls share the rest.
	wg.Add(2)
	go call("loop")
	go call("loop")
	time.Sleep(50 * time.Millisecond)
	for i := 2; i < n; i++ {
		wg.Add(1)
		go call("slow")
	}
	wg.Wait()
	t.Logf("%d calls in %v: %d ok, %d busy, %d timed out", n, time.Since(start), ok.Load(), busy.Load(), timedOut.Load())
	if len(other) > 0 {
		t.Errorf("unexpected errors: %v", other)
	}
	if ok.Load() == 0 {
		t.Error("no slow call succeeded")
	}
	if timedOut.Load() < 2 {
		t.Errorf("%d calls timed out, want at least the 2 looping ones", timedOut.Load())
	}
	b.check(t)
	if _, err := h.Call(context.Background(), p, "tenant-a", "project.validate", []byte(`"ok"`)); err != nil {
		t.Fatalf("good call afterwards: %v", err)
	}
}

// The warm validation call of the two example plugins, through the real
// path (Host.Call: slots, the pipe to the sandbox process and back) and in
// process (the engine the sandbox runs, called directly: what a call cost
// before the sandbox), measured in the same run. Besides ns/op, each
// reports the p50 and p99 of single calls in microseconds.
func BenchmarkValidateWarm(b *testing.B) {
	benchValidate(b, "../../examples/plugins/naming-policy/naming-policy.wasm", validateManifest("naming-policy", 0))
}

// BenchmarkValidateWarmGo is the same for a Go (pdk) plugin: JSON decoding
// and encoding in the guest dominate.
func BenchmarkValidateWarmGo(b *testing.B) {
	m := validateManifest("budget-guard", 0)
	m.Config = []byte(`{"max_budget_minor":1000000}`)
	benchValidate(b, "../../examples/plugins/budget-guard/budget-guard.wasm", m)
}

func benchValidate(b *testing.B, file string, m Manifest) {
	in, _ := ValidationInput{Hook: "project.validate", Tenant: "acme", Operation: "create", Config: m.Config,
		Input: []byte(`{"key":"PM1","name":"Platform","budget":{"amount_minor":100000,"currency":"EUR"}}`)}.Encode()
	ctx := context.Background()
	check := func(out []byte) {
		if res, err := DecodeValidationResult(out); err != nil || !res.Allow {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.Run("sandbox", func(b *testing.B) {
		h := newTestHost(b, nil)
		p := mustLoad(b, h, "bench", file, m)
		for i := 0; i < 20; i++ { // warm up the pool and the pipes
			h.Call(ctx, p, "acme", "project.validate", in)
		}
		lat := make([]time.Duration, 0, 4096)
		var inner []time.Duration
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			start := time.Now()
			inv, err := h.Call(ctx, p, "acme", "project.validate", in)
			lat = append(lat, time.Since(start))
			if inv != nil {
				inner = append(inner, inv.Duration)
			}
			if err != nil {
				b.Fatal(err)
			}
			check(inv.Output)
		}
		reportPercentiles(b, lat)
		if len(inner) > 0 {
			b.ReportMetric(float64(percentile(inner, 50).Nanoseconds())/1000, "child-p50-us")
		}
	})
	b.Run("inprocess", func(b *testing.B) {
		o := (&Options{}).withDefaults()
		e, err := newEngine(ctx, engineConfig{MaxMemoryPages: o.MaxMemoryPages, MaxLogBytes: o.MaxLogBytes,
			MaxOutputBytes: o.MaxOutputBytes, PoolSize: o.PoolSize, InitTimeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { e.close(ctx) })
		if err := e.load(ctx, testdata(b, file)); err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, 4096)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			start := time.Now()
			res := e.call(ctx, o.ValidateTimeout, "project.validate", in)
			lat = append(lat, time.Since(start))
			if res.status != statusOK {
				b.Fatal(res.message)
			}
			check(res.output)
		}
		reportPercentiles(b, lat)
	})
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(float64(percentile(lat, 50).Nanoseconds())/1000, "p50-us")
	b.ReportMetric(float64(percentile(lat, 99).Nanoseconds())/1000, "p99-us")
}
