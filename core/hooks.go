package core

import (
	"context"
	"encoding/json"
	"fmt"

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

// HookRunner runs a tenant's validation plugins for a hook. Package plugins
// satisfies it; core never imports the Wasm runtime.
type HookRunner interface {
	RunValidation(ctx context.Context, tenantID uuid.UUID, hook string, input []byte) (Verdict, error)
}

// ValidationHooks calls the plugins' validation hooks. The zero value runs
// none.
type ValidationHooks struct{ Runner HookRunner }

type validationInput struct {
	Hook      string `json:"hook"`
	Operation string `json:"operation"`
	Input     any    `json:"input"`
	Current   any    `json:"current"`
}

// validate returns EPLUGINREJECTED when a plugin rejects the change. Plugin
// errors are already resolved by the runner according to each plugin's
// failure policy; an error here means the change must not proceed. Patches
// are ignored (see validatePatched).
func (h ValidationHooks) validate(ctx context.Context, sc tenant.Scope, hook, op string, input, current any) error {
	_, err := h.validatePatched(ctx, sc, hook, op, input, current)
	return err
}

// validatePatched is validate that also returns the input as patched by
// the plugins (nil when unchanged).
func (h ValidationHooks) validatePatched(ctx context.Context, sc tenant.Scope, hook, op string, input, current any) (json.RawMessage, error) {
	if h.Runner == nil {
		return nil, nil
	}
	b, err := json.Marshal(validationInput{Hook: hook, Operation: op, Input: input, Current: current})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", hook, err)
	}
	v, err := h.Runner.RunValidation(ctx, sc.ID, hook, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", hook, err)
	}
	if !v.Allowed {
		return nil, &Error{Code: EPLUGINREJECTED, Plugin: v.Plugin, Message: v.Message}
	}
	return v.Patched, nil
}
