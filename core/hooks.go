package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/promanage/promanage/tenant"
)

// Verdict is what the validation plugins of a tenant decided.
type Verdict struct {
	Allowed bool
	// Plugin and Message explain a rejection.
	Plugin  string
	Message string
	// Patched is the input after the plugins' merge patches (RFC 7396),
	// nil when no plugin returned a patch. Services that support patches
	// apply it and validate the result again with their own rules.
	Patched json.RawMessage
}

// Hook names a validation hook (plugins/ABI.md).
type Hook string

// The validation hooks.
const (
	HookProjectValidate  Hook = "project.validate"
	HookTaskValidate     Hook = "task.validate"
	HookExpenseValidate  Hook = "expense.validate"
	HookDocumentValidate Hook = "document.validate"
)

// Operation is the change a validation hook is asked about.
type Operation string

// Operations of validation hooks.
const (
	OpCreate     Operation = "create"
	OpUpdate     Operation = "update"
	OpAddVersion Operation = "add_version" // document.validate: a new version of a document
	OpRestore    Operation = "restore"     // document.validate: an earlier version made current again
)

// ValidationRequest is everything a validation hook is told about a change.
// Core loads it before the change's transaction and the plugins decide on
// it alone: they never read the database themselves, so a hook never holds
// (or waits for) a pooled connection. The transaction then re-checks what
// the request was built from and retries or refuses if it changed.
type ValidationRequest struct {
	Hook      Hook
	Operation Operation
	// Input is the entity as it would be stored after the change (a value
	// that marshals to the JSON of plugins/ABI.md); Current the stored one
	// before it (nil on create).
	Input   any
	Current any
	// Project is the owning project for task, expense and document hooks
	// (nil for project.validate).
	Project *ProjectContext
}

// ProjectContext is the owning project as task, expense and document hooks
// see it: {"id","key","name","budget","budget_summary"}.
type ProjectContext struct {
	ID            uuid.UUID      `json:"id"`
	Key           string         `json:"key"`
	Name          string         `json:"name"`
	Budget        *Money         `json:"budget"`
	BudgetSummary *BudgetSummary `json:"budget_summary"`
}

// HookRunner runs a tenant's validation plugins for a request. Package
// plugins satisfies it; core never imports the Wasm runtime. It is never
// called with a transaction open or a pooled connection held.
type HookRunner interface {
	RunValidation(ctx context.Context, tenantID uuid.UUID, req ValidationRequest) (Verdict, error)
}

// ValidationHooks calls the plugins' validation hooks. The zero value runs
// none.
type ValidationHooks struct{ Runner HookRunner }

// validate returns EPLUGINREJECTED when a plugin rejects the change. Plugin
// errors are already resolved by the runner according to each plugin's
// failure policy; an error here means the change must not proceed. Patches
// are ignored (see validatePatched).
func (h ValidationHooks) validate(ctx context.Context, sc tenant.Scope, req ValidationRequest) error {
	_, err := h.validatePatched(ctx, sc, req)
	return err
}

// validatePatched is validate that also returns the input as patched by
// the plugins (nil when unchanged).
func (h ValidationHooks) validatePatched(ctx context.Context, sc tenant.Scope, req ValidationRequest) (json.RawMessage, error) {
	if h.Runner == nil {
		return nil, nil
	}
	v, err := h.Runner.RunValidation(ctx, sc.ID, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", req.Hook, err)
	}
	if !v.Allowed {
		return nil, &Error{Code: EPLUGINREJECTED, Plugin: v.Plugin, Message: v.Message}
	}
	return v.Patched, nil
}

// ---- validate-then-write ----

// MaxWriteAttempts is how many times a validated write runs its load ->
// hook -> transaction cycle when the state the hook decided on changed
// before the transaction (another writer, another replica), before it
// answers ECONFLICT.
const MaxWriteAttempts = 3

// errStale is returned inside a write's transaction when the state its
// hook decided on changed since it was loaded: the cycle runs again.
var errStale = errors.New("the state the validation hooks decided on changed")

// retryStale runs attempt until it returns anything but errStale, at most
// MaxWriteAttempts times; then it answers ECONFLICT with what. Between
// attempts it waits a few random milliseconds (no connection is held), so
// writers of other replicas that collided do not collide again in step.
func retryStale(what string, attempt func() error) error {
	for i := 1; ; i++ {
		err := attempt()
		if !errors.Is(err, errStale) {
			return err
		}
		if i == MaxWriteAttempts {
			return &Error{Code: ECONFLICT, Message: what + " changed concurrently several times while the change was validated; retry"}
		}
		time.Sleep(time.Duration(1+rand.IntN(5*i)) * time.Millisecond)
	}
}

// WriteQueue lets one validate-then-write cycle per key (a project) run at a
// time in this process, so writers of one hot project take turns instead
// of all validating the same state and all but one failing their re-check.
// A writer waits at most Wait (default 3s) for its turn and never holds a
// database connection while it waits; past the wait it gets EUNAVAILABLE.
// Across replicas the re-check in the transaction still catches a conflict.
type WriteQueue struct {
	Wait time.Duration

	mu    sync.Mutex
	slots map[string]*queueSlot
}

type queueSlot struct {
	turn chan struct{} // holds a token while someone's turn runs
	refs int
	// state is what the last turn left for the next one (the state its
	// write committed), read and written only by the turn's holder.
	state any
}

// DefaultWriteQueueWait is WriteQueue.Wait when not set.
const DefaultWriteQueueWait = 3 * time.Second

// queueTurn is a writer's turn on a key.
type queueTurn struct {
	q    *WriteQueue
	key  string
	slot *queueSlot
}

// enter waits for key's turn; leave ends it. A nil queue lets everyone
// through at once.
func (q *WriteQueue) enter(ctx context.Context, key string) (*queueTurn, error) {
	if q == nil {
		return &queueTurn{}, nil
	}
	q.mu.Lock()
	if q.slots == nil {
		q.slots = map[string]*queueSlot{}
	}
	s := q.slots[key]
	if s == nil {
		s = &queueSlot{turn: make(chan struct{}, 1)}
		q.slots[key] = s
	}
	s.refs++
	q.mu.Unlock()
	wait := q.Wait
	if wait <= 0 {
		wait = DefaultWriteQueueWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.turn <- struct{}{}:
		return &queueTurn{q: q, key: key, slot: s}, nil
	case <-t.C:
		q.drop(key, s)
		return nil, &Error{Code: EUNAVAILABLE, Message: fmt.Sprintf("too many concurrent changes of this project: none could start within %v; retry shortly", wait)}
	case <-ctx.Done():
		q.drop(key, s)
		return nil, fmt.Errorf("wait for the write queue: %w", ctx.Err())
	}
}

func (q *WriteQueue) drop(key string, s *queueSlot) {
	q.mu.Lock()
	if s.refs--; s.refs == 0 {
		delete(q.slots, key) // nobody waits: the state left is dropped too
	}
	q.mu.Unlock()
}

// cached returns what the previous turn left and forgets it (nil if
// nothing, or after a turn that left nothing).
func (t *queueTurn) cached() any {
	if t.slot == nil {
		return nil
	}
	v := t.slot.state
	t.slot.state = nil
	return v
}

// keep leaves v for the next turn.
func (t *queueTurn) keep(v any) {
	if t.slot != nil {
		t.slot.state = v
	}
}

func (t *queueTurn) leave() {
	if t.slot == nil {
		return
	}
	<-t.slot.turn
	t.q.drop(t.key, t.slot)
}
