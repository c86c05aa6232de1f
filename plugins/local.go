package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// LocalRun describes one run of `promanage plugin run`.
type LocalRun struct {
	Module []byte          // the .wasm bytes
	Hook   string          // e.g. "project.validate"
	Config json.RawMessage // the plugin's config (a JSON object), may be empty
	Tenant string          // slug shown to the plugin; default "local"
	// Payload is what the user feeds on stdin. For a notification hook: the
	// event ({"id","type","tenant","occurred_at","data"}) or a complete
	// input (an object with "event"). For a validation hook: a complete input
	// or an object with "operation", "input", "current" (and "project"), or
	// just the entity, taken as input of a "create".
	Payload  []byte
	Manifest *Manifest // optional; default: name "local", Hooks [Hook], Config
	Options  *Options  // the operator limits to apply; nil: the defaults
}

// LocalResult is what RunLocal prints.
type LocalResult struct {
	Invocation   *Invocation
	Validation   *ValidationResult   // set for a validation hook
	Notification *NotificationResult // set for a notification hook
}

// RunLocal runs one hook exactly as the server would: a Host with the same
// sandbox and limits, Load's checks, Call's deadline and the result decoding
// the caller does. The Invocation in the result is set even on error when the
// plugin ran, so its logs can be shown.
func RunLocal(ctx context.Context, r LocalRun) (*LocalResult, error) {
	if !KnownHook(r.Hook) {
		return nil, fmt.Errorf("run plugin: %w: %q", ErrHookNotDeclared, r.Hook)
	}
	tenant := r.Tenant
	if tenant == "" {
		tenant = "local"
	}
	m := Manifest{Name: "local", Hooks: []string{r.Hook}, Config: r.Config}
	if r.Manifest != nil {
		m = *r.Manifest
		if len(r.Config) > 0 {
			m.Config = r.Config
		}
	}
	input, err := buildLocalInput(r.Hook, tenant, m.Config, r.Payload)
	if err != nil {
		return nil, fmt.Errorf("run plugin: %w", err)
	}
	h, err := NewHost(ctx, r.Options)
	if err != nil {
		return nil, err
	}
	defer h.Close(context.WithoutCancel(ctx))
	p, err := h.Load(ctx, "local", r.Module, m)
	if err != nil {
		return nil, err
	}
	inv, err := h.Call(ctx, p, tenant, r.Hook, input)
	res := &LocalResult{Invocation: inv}
	if err != nil {
		return res, err
	}
	if IsValidationHook(r.Hook) {
		res.Validation, err = DecodeValidationResult(inv.Output)
	} else {
		res.Notification, err = DecodeNotificationResult(inv.Output)
	}
	return res, err
}

func buildLocalInput(hook, tenant string, config json.RawMessage, payload []byte) ([]byte, error) {
	payload = bytes.TrimSpace(payload)
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil {
		return nil, fmt.Errorf("input must be a JSON object: %w", err)
	}
	if IsNotificationHook(hook) {
		in := NotificationInput{Hook: hook, Tenant: tenant, Config: config}
		ev := payload
		if e, ok := obj["event"]; ok {
			ev = e
		}
		if err := json.Unmarshal(ev, &in.Event); err != nil {
			return nil, fmt.Errorf("event: %w", err)
		}
		if in.Event.Type == "" {
			in.Event.Type = hook
		}
		if in.Event.Tenant == "" {
			in.Event.Tenant = tenant
		}
		if in.Event.OccurredAt.IsZero() {
			in.Event.OccurredAt = time.Now().UTC().Truncate(time.Second)
		}
		return in.Encode()
	}
	in := ValidationInput{Hook: hook, Tenant: tenant, Config: config, Operation: "create", Input: payload}
	if i, ok := obj["input"]; ok {
		in.Input = i
		in.Current = obj["current"]
		in.Project = obj["project"]
		if op, ok := obj["operation"]; ok {
			if err := json.Unmarshal(op, &in.Operation); err != nil {
				return nil, fmt.Errorf("operation: %w", err)
			}
		}
	}
	if in.Operation != "create" && in.Operation != "update" {
		return nil, fmt.Errorf(`operation must be "create" or "update"`)
	}
	return in.Encode()
}
