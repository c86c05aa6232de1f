package plugins

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
)

// defaultSlotWait is RegistryOptions.SlotWait when not set.
const defaultSlotWait = 3 * time.Second

// callSlots bounds the plugin calls the registry starts: at most perTenant
// at once per tenant and total at once in the process, the same caps the
// host enforces. Callers queue here, in arrival order, for up to wait
// (or their context's end), so a burst of one tenant's writes takes turns
// instead of failing on the host's wait, which is only as long as the
// hook's deadline. A tenant queued behind its own cap holds none of the
// process's slots.
type callSlots struct {
	perTenant int
	global    chan struct{}
	wait      time.Duration

	mu      sync.Mutex
	tenants map[uuid.UUID]*tenantSlots
}

type tenantSlots struct {
	ch   chan struct{}
	refs int
}

func newCallSlots(perTenant, total int, wait time.Duration) *callSlots {
	return &callSlots{perTenant: max(perTenant, 1), global: make(chan struct{}, max(total, 1)), wait: wait,
		tenants: map[uuid.UUID]*tenantSlots{}}
}

// acquire waits for a slot of the tenant, then of the process. It returns
// ErrBusy when none was free within the wait.
func (s *callSlots) acquire(ctx context.Context, tenantID uuid.UUID) (release func(), err error) {
	s.mu.Lock()
	t := s.tenants[tenantID]
	if t == nil {
		t = &tenantSlots{ch: make(chan struct{}, s.perTenant)}
		s.tenants[tenantID] = t
	}
	t.refs++
	s.mu.Unlock()
	drop := func() {
		s.mu.Lock()
		if t.refs--; t.refs == 0 {
			delete(s.tenants, tenantID)
		}
		s.mu.Unlock()
	}
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	select {
	case t.ch <- struct{}{}:
	case <-timer.C:
		drop()
		return nil, fmt.Errorf("%w: the tenant's %d plugin call slots stayed taken for %v", ErrBusy, s.perTenant, s.wait)
	case <-ctx.Done():
		drop()
		return nil, fmt.Errorf("%w: waiting for a plugin call slot: %w", ErrBusy, ctx.Err())
	}
	select {
	case s.global <- struct{}{}:
	case <-timer.C:
		<-t.ch
		drop()
		return nil, fmt.Errorf("%w: the process's %d plugin call slots stayed taken for %v", ErrBusy, cap(s.global), s.wait)
	case <-ctx.Done():
		<-t.ch
		drop()
		return nil, fmt.Errorf("%w: waiting for a plugin call slot: %w", ErrBusy, ctx.Err())
	}
	return func() {
		<-s.global
		<-t.ch
		drop()
	}, nil
}
