package plugins

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Call slots: a tenant's calls beyond its cap queue and all get through
// while the wait allows; past the wait they fail with ErrBusy, and a tenant
// at its cap takes none of the process's slots from the others.
func TestCallSlots(t *testing.T) {
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	t.Run("BurstQueuesAndCompletes", func(t *testing.T) {
		s := newCallSlots(2, 4, 2*time.Second)
		var wg sync.WaitGroup
		var mu sync.Mutex
		running, peak, errs := 0, 0, 0
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				release, err := s.acquire(context.Background(), a)
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					return
				}
				mu.Lock()
				running++
				peak = max(peak, running)
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
				mu.Lock()
				running--
				mu.Unlock()
				release()
			}()
		}
		wg.Wait()
		if errs != 0 || peak != 2 {
			t.Fatalf("%d calls failed, %d ran at once; want 0 and the tenant's cap 2", errs, peak)
		}
		if len(s.tenants) != 0 {
			t.Fatalf("%d tenant entries left after every call ended", len(s.tenants))
		}
	})
	t.Run("WaitIsBounded", func(t *testing.T) {
		s := newCallSlots(1, 2, 150*time.Millisecond)
		ra, err := s.acquire(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := s.acquire(context.Background(), a); !errors.Is(err, ErrBusy) {
			t.Fatalf("second call of a saturated tenant: %v, want ErrBusy", err)
		}
		if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
			t.Fatalf("ErrBusy after %v, want about the 150ms wait", d)
		}
		rb, err := s.acquire(context.Background(), b)
		if err != nil {
			t.Fatalf("another tenant while a is at its cap: %v", err)
		}
		if _, err := s.acquire(context.Background(), c); !errors.Is(err, ErrBusy) {
			t.Fatalf("a third tenant while the process is at its cap: %v, want ErrBusy", err)
		}
		ra()
		rc, err := s.acquire(context.Background(), c)
		if err != nil {
			t.Fatalf("after a slot was released: %v", err)
		}
		rb()
		rc()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		hold, _ := s.acquire(context.Background(), a)
		if _, err := s.acquire(ctx, a); !errors.Is(err, ErrBusy) || !errors.Is(err, context.Canceled) {
			t.Fatalf("a cancelled wait: %v", err)
		}
		hold()
	})
}
