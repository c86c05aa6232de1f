package plugins

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// ValidationInput is the JSON input of a validation hook (ABI.md). The wiring
// code fills it from core's types and passes Encode's bytes to Host.Call.
type ValidationInput struct {
	Hook      string          `json:"hook"`
	Tenant    string          `json:"tenant"` // slug
	Config    json.RawMessage `json:"config"`
	Operation string          `json:"operation"` // "create" or "update"
	Input     json.RawMessage `json:"input"`     // the entity as it would be stored
	Current   json.RawMessage `json:"current"`   // the stored entity on update, null on create
	// Project is the owning project (id, key, name, budget, budget_summary)
	// for task, expense and document hooks; absent for project.validate.
	Project json.RawMessage `json:"project,omitempty"`
}

// Encode returns the JSON input, with an empty config as {} and an absent
// current entity as null.
func (in ValidationInput) Encode() ([]byte, error) {
	if len(in.Config) == 0 {
		in.Config = json.RawMessage("{}")
	}
	if len(in.Current) == 0 {
		in.Current = json.RawMessage("null")
	}
	return json.Marshal(in)
}

// Event is a domain event from the outbox, as plugins see it.
type Event struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Tenant     string          `json:"tenant"`
	OccurredAt time.Time       `json:"occurred_at"`
	Data       json.RawMessage `json:"data"`
}

// NotificationInput is the JSON input of a notification hook (ABI.md).
type NotificationInput struct {
	Hook   string          `json:"hook"`
	Tenant string          `json:"tenant"`
	Config json.RawMessage `json:"config"`
	Event  Event           `json:"event"`
}

// Encode returns the JSON input, with an empty config as {} and empty data as {}.
func (in NotificationInput) Encode() ([]byte, error) {
	if len(in.Config) == 0 {
		in.Config = json.RawMessage("{}")
	}
	if len(in.Event.Data) == 0 {
		in.Event.Data = json.RawMessage("{}")
	}
	return json.Marshal(in)
}

// ValidationResult is a validation hook's answer.
type ValidationResult struct {
	Allow   bool            `json:"allow"`
	Message string          `json:"message,omitempty"` // shown to the user on rejection
	Patch   json.RawMessage `json:"patch,omitempty"`   // JSON merge patch (RFC 7396) of the input, or nil
}

const (
	maxMessageBytes = 1000
	maxDeliveries   = 10
	maxHeaders      = 20
)

// DecodeValidationResult parses and checks a validation hook's output. It
// returns ErrPluginFailed (with the plugin's message) for {"error": ...} and
// ErrInvalidOutput for anything not shaped like a ValidationResult.
func DecodeValidationResult(out []byte) (*ValidationResult, error) {
	var raw struct {
		Allow   *bool           `json:"allow"`
		Message string          `json:"message"`
		Patch   json.RawMessage `json:"patch"`
		Error   string          `json:"error"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOutput, err)
	}
	if raw.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrPluginFailed, clip(raw.Error))
	}
	if raw.Allow == nil {
		return nil, fmt.Errorf(`%w: "allow" is missing`, ErrInvalidOutput)
	}
	r := &ValidationResult{Allow: *raw.Allow, Message: clip(raw.Message)}
	if p := bytes.TrimSpace(raw.Patch); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		if p[0] != '{' {
			return nil, fmt.Errorf(`%w: "patch" must be a JSON object`, ErrInvalidOutput)
		}
		r.Patch = append(json.RawMessage(nil), p...)
	}
	if !r.Allow && r.Message == "" {
		r.Message = "rejected by plugin"
	}
	return r, nil
}

// Delivery is one webhook a notification hook asks the host to send.
type Delivery struct {
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"` // POST (default), PUT or PATCH
	Headers map[string]string `json:"headers,omitempty"`
	// Body is sent as is when it is a JSON string's content (text/plain) or
	// as JSON otherwise (application/json), unless Headers sets Content-Type.
	Body json.RawMessage `json:"body,omitempty"`
}

// NotificationResult is a notification hook's answer.
type NotificationResult struct {
	Deliveries []Delivery `json:"deliveries"`
}

// DecodeNotificationResult parses and checks a notification hook's output:
// at most 10 deliveries, absolute http(s) URLs, POST/PUT/PATCH, and no header
// the host owns (Host, Content-Length, ProManage-*, hop-by-hop). Whether a
// URL's host is allowed is checked by the Deliverer. Errors: ErrPluginFailed,
// ErrInvalidOutput.
func DecodeNotificationResult(out []byte) (*NotificationResult, error) {
	var raw struct {
		Deliveries []Delivery `json:"deliveries"`
		Error      string     `json:"error"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOutput, err)
	}
	if raw.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrPluginFailed, clip(raw.Error))
	}
	if len(raw.Deliveries) > maxDeliveries {
		return nil, fmt.Errorf("%w: %d deliveries, at most %d", ErrInvalidOutput, len(raw.Deliveries), maxDeliveries)
	}
	for i := range raw.Deliveries {
		if err := raw.Deliveries[i].check(); err != nil {
			return nil, fmt.Errorf("%w: delivery %d: %w", ErrInvalidOutput, i, err)
		}
	}
	return &NotificationResult{Deliveries: raw.Deliveries}, nil
}

// check validates and normalises a delivery (Method upper-cased, defaulted).
func (d *Delivery) check() error {
	u, err := url.Parse(d.URL)
	if err != nil {
		return fmt.Errorf("bad url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url scheme must be http or https")
	}
	if u.Hostname() == "" {
		return fmt.Errorf("url has no host")
	}
	d.Method = strings.ToUpper(d.Method)
	switch d.Method {
	case "":
		d.Method = "POST"
	case "POST", "PUT", "PATCH":
	default:
		return fmt.Errorf("method %q not allowed", d.Method)
	}
	if len(d.Headers) > maxHeaders {
		return fmt.Errorf("at most %d headers", maxHeaders)
	}
	for k, v := range d.Headers {
		if !validHeaderName(k) {
			return fmt.Errorf("bad header name %q", k)
		}
		if reservedHeader(k) {
			return fmt.Errorf("header %q is set by the host", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("bad value for header %q", k)
		}
	}
	return nil
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func reservedHeader(k string) bool {
	k = strings.ToLower(k)
	switch k {
	case "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
		"upgrade", "expect", "proxy-authorization", "proxy-connection", "user-agent":
		return true
	}
	return strings.HasPrefix(k, "promanage-")
}

// clip bounds a guest-provided message and makes it valid UTF-8.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxMessageBytes {
		return s
	}
	s = s[:maxMessageBytes]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
