// Package pdk is the plugin development kit for ProManage plugins written in
// Go. It implements the guest side of plugins/ABI.md: it exports pm_alloc and
// pm_handle, passes memory, decodes each hook's JSON input and encodes its
// result, so a plugin is a set of plain Go functions:
//
//	package main
//
//	import "github.com/promanage/promanage/plugins/pdk"
//
//	func init() {
//		pdk.OnValidate("project.validate", func(in *pdk.ValidationInput) (pdk.ValidationResult, error) {
//			var p pdk.Project
//			if err := in.DecodeInput(&p); err != nil {
//				return pdk.ValidationResult{}, err
//			}
//			if p.Name == "" {
//				return pdk.Reject("a project needs a name"), nil
//			}
//			return pdk.Allow(), nil
//		})
//	}
//
//	func main() {}
//
// Build it as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// Handlers are registered from init (run by _initialize), never from main,
// which a reactor does not run. The same code builds for the host OS, where
// Handle can be called directly from unit tests.
//
// The pdk must never import os/file or network APIs: the host refuses a
// module that imports WASI calls beyond those listed in ABI.md.
package pdk

import (
	"encoding/json"
	"fmt"
	"sync"
)

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

// BudgetSummary of a project, in minor units of Currency.
type BudgetSummary struct {
	Planned   int64  `json:"planned"`
	Spent     int64  `json:"spent"`
	Remaining int64  `json:"remaining"`
	Currency  string `json:"currency"`
}

// Project is the input of project.validate (and the data of project events).
type Project struct {
	ID          string `json:"id,omitempty"`
	Key         string `json:"key"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Status      string `json:"status,omitempty"`
	StartDate   string `json:"start_date,omitempty"` // YYYY-MM-DD
	Deadline    string `json:"deadline,omitempty"`   // YYYY-MM-DD
	Budget      *Money `json:"budget,omitempty"`
}

// ProjectContext is the project a task, expense or document belongs to.
type ProjectContext struct {
	ID            string         `json:"id"`
	Key           string         `json:"key"`
	Name          string         `json:"name"`
	Budget        *Money         `json:"budget,omitempty"`
	BudgetSummary *BudgetSummary `json:"budget_summary,omitempty"`
}

// Task is the input of task.validate.
type Task struct {
	ID         string `json:"id,omitempty"`
	ProjectID  string `json:"project_id,omitempty"`
	Title      string `json:"title"`
	Status     string `json:"status,omitempty"`
	AssigneeID string `json:"assignee_id,omitempty"`
	DueDate    string `json:"due_date,omitempty"`
}

// Expense is the input of expense.validate.
type Expense struct {
	ID          string `json:"id,omitempty"`
	ProjectID   string `json:"project_id,omitempty"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
	Category    string `json:"category,omitempty"`
	SpentOn     string `json:"spent_on,omitempty"`
	Note        string `json:"note,omitempty"`
}

// Document is the input of document.validate: the metadata of the upload and
// its first bytes (at most 4 KiB), base64-encoded.
type Document struct {
	ID               string          `json:"id,omitempty"`
	ProjectID        string          `json:"project_id,omitempty"`
	Title            string          `json:"title,omitempty"`
	Filename         string          `json:"filename,omitempty"`
	ContentType      string          `json:"content_type,omitempty"`
	Size             int64           `json:"size"`
	SHA256           string          `json:"sha256,omitempty"`
	Version          int             `json:"version,omitempty"`
	Metadata         json.RawMessage `json:"metadata,omitempty"`
	FirstBytesBase64 string          `json:"first_bytes_base64,omitempty"`
}

// ValidationInput is the input of every validation hook.
type ValidationInput struct {
	Hook      string          `json:"hook"`
	Tenant    string          `json:"tenant"`
	Config    json.RawMessage `json:"config"`
	Operation string          `json:"operation"` // "create" or "update"
	Input     json.RawMessage `json:"input"`
	Current   json.RawMessage `json:"current"` // null on create
	Project   *ProjectContext `json:"project,omitempty"`
}

// DecodeConfig unmarshals the plugin's config into v.
func (in *ValidationInput) DecodeConfig(v any) error { return decodeObject(in.Config, v) }

// DecodeInput unmarshals the entity being validated into v (e.g. *Project).
func (in *ValidationInput) DecodeInput(v any) error { return decodeObject(in.Input, v) }

// DecodeCurrent unmarshals the stored entity into v; it reports false on create.
func (in *ValidationInput) DecodeCurrent(v any) (bool, error) {
	if isNull(in.Current) {
		return false, nil
	}
	return true, json.Unmarshal(in.Current, v)
}

// ValidationResult is the answer of a validation hook.
type ValidationResult struct {
	Allow   bool            `json:"allow"`
	Message string          `json:"message,omitempty"`
	Patch   json.RawMessage `json:"patch,omitempty"` // JSON merge patch of the input
}

// Allow accepts the change.
func Allow() ValidationResult { return ValidationResult{Allow: true} }

// Reject refuses the change; the user sees message (HTTP 422).
func Reject(message string) ValidationResult { return ValidationResult{Message: message} }

// Rejectf is Reject with fmt.Sprintf formatting.
func Rejectf(format string, a ...any) ValidationResult { return Reject(fmt.Sprintf(format, a...)) }

// AllowWithPatch accepts the change after merging patch (marshalled to a JSON
// object) into the input.
func AllowWithPatch(patch any) (ValidationResult, error) {
	b, err := json.Marshal(patch)
	if err != nil {
		return ValidationResult{}, err
	}
	return ValidationResult{Allow: true, Patch: b}, nil
}

// Event is the domain event a notification hook reacts to.
type Event struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Tenant     string          `json:"tenant"`
	OccurredAt string          `json:"occurred_at"` // RFC 3339
	Data       json.RawMessage `json:"data"`
}

// DecodeData unmarshals the event's data into v.
func (e *Event) DecodeData(v any) error { return decodeObject(e.Data, v) }

// NotificationInput is the input of every notification hook.
type NotificationInput struct {
	Hook   string          `json:"hook"`
	Tenant string          `json:"tenant"`
	Config json.RawMessage `json:"config"`
	Event  Event           `json:"event"`
}

// DecodeConfig unmarshals the plugin's config into v.
func (in *NotificationInput) DecodeConfig(v any) error { return decodeObject(in.Config, v) }

// Delivery is a webhook the host should send (signed, to an allowed host).
type Delivery struct {
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"` // default POST
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"` // JSON; a JSON string is sent as text
}

// JSONBody marshals v as a delivery body.
func JSONBody(v any) (json.RawMessage, error) { return json.Marshal(v) }

// TextBody makes a text/plain delivery body.
func TextBody(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// NotificationResult is the answer of a notification hook.
type NotificationResult struct {
	Deliveries []Delivery `json:"deliveries"`
}

// ValidateFunc handles a validation hook. An error makes the call fail (the
// plugin's failure policy applies); a rejection is a result, not an error.
type ValidateFunc func(in *ValidationInput) (ValidationResult, error)

// NotifyFunc handles a notification hook.
type NotifyFunc func(in *NotificationInput) (NotificationResult, error)

var (
	mu       sync.Mutex
	validate = map[string]ValidateFunc{}
	notify   = map[string]NotifyFunc{}
)

// OnValidate registers fn for a validation hook ("project.validate", ...).
// Call it from init.
func OnValidate(hook string, fn ValidateFunc) {
	mu.Lock()
	defer mu.Unlock()
	validate[hook] = fn
}

// OnNotify registers fn for a notification hook ("project.created", ...).
// Call it from init.
func OnNotify(hook string, fn NotifyFunc) {
	mu.Lock()
	defer mu.Unlock()
	notify[hook] = fn
}

// Handle dispatches one call: it is what pm_handle runs, exposed so plugin
// logic can be unit-tested natively. It always returns JSON: the hook's
// result, or {"error": "..."} if the handler failed, panicked or is missing.
func Handle(hook string, input []byte) (out []byte) {
	defer func() {
		if r := recover(); r != nil {
			out = errorResult(fmt.Errorf("panic: %v", r))
		}
	}()
	mu.Lock()
	vf, nf := validate[hook], notify[hook]
	mu.Unlock()
	var res any
	switch {
	case vf != nil:
		var in ValidationInput
		if err := json.Unmarshal(input, &in); err != nil {
			return errorResult(fmt.Errorf("decode input: %w", err))
		}
		r, err := vf(&in)
		if err != nil {
			return errorResult(err)
		}
		res = r
	case nf != nil:
		var in NotificationInput
		if err := json.Unmarshal(input, &in); err != nil {
			return errorResult(fmt.Errorf("decode input: %w", err))
		}
		r, err := nf(&in)
		if err != nil {
			return errorResult(err)
		}
		if r.Deliveries == nil {
			r.Deliveries = []Delivery{}
		}
		res = r
	default:
		return errorResult(fmt.Errorf("no handler for hook %q", hook))
	}
	b, err := json.Marshal(res)
	if err != nil {
		return errorResult(fmt.Errorf("encode result: %w", err))
	}
	return b
}

func errorResult(err error) []byte {
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	return b
}

func decodeObject(raw json.RawMessage, v any) error {
	if isNull(raw) {
		return nil
	}
	return json.Unmarshal(raw, v)
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// Log levels of promanage.log.
const (
	LevelDebug int32 = 0
	LevelInfo  int32 = 1
	LevelWarn  int32 = 2
	LevelError int32 = 3
)

// Log writes msg to the invocation log the tenant sees (bounded by the host).
func Log(level int32, msg string) { hostLog(level, msg) }

// Logf is Log with fmt.Sprintf formatting.
func Logf(level int32, format string, a ...any) { hostLog(level, fmt.Sprintf(format, a...)) }
