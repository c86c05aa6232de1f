package plugins

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Failure policies: what the caller does when a validation plugin fails
// (timeout, trap, bad output) rather than answering.
const (
	FailClosed = "fail_closed" // the change is rejected (the default)
	FailOpen   = "fail_open"   // the change goes through; the failure is logged
)

const (
	maxConfigBytes  = 32 << 10
	maxAllowedHosts = 32
	maxPriority     = 1000
)

var manifestName = regexp.MustCompile(`^[a-z][a-z0-9-]{1,47}$`)

// Manifest is what a tenant uploads beside the module. It is JSON in the API
// (snake_case names below).
type Manifest struct {
	Name          string          `json:"name"`
	Hooks         []string        `json:"hooks"`
	Config        json.RawMessage `json:"config,omitempty"`         // a JSON object handed to every call
	FailurePolicy string          `json:"failure_policy,omitempty"` // FailClosed (default) or FailOpen
	AllowedHosts  []string        `json:"allowed_hosts,omitempty"`  // webhook hosts: "api.example.com" or "*.example.com"
	Priority      int             `json:"priority,omitempty"`       // lower runs first among a tenant's plugins for one hook
	TimeoutMS     int             `json:"timeout_ms,omitempty"`     // 0: the hook's default
}

// FailOpen reports whether the caller should let a change through when this
// plugin fails.
func (m *Manifest) FailOpen() bool { return m.FailurePolicy == FailOpen }

// Handles reports whether the manifest declares hook.
func (m *Manifest) Handles(hook string) bool {
	for _, h := range m.Hooks {
		if h == hook {
			return true
		}
	}
	return false
}

// Validate returns an *InvalidManifestError for a manifest the platform cannot
// accept. Host.Load also checks TimeoutMS against the operator's MaxTimeout.
func (m *Manifest) Validate() error {
	bad := func(field, format string, a ...any) error {
		return &InvalidManifestError{Field: field, Reason: fmt.Sprintf(format, a...)}
	}
	if !manifestName.MatchString(m.Name) {
		return bad("name", "must match %s", manifestName)
	}
	if len(m.Hooks) == 0 {
		return bad("hooks", "at least one hook is required")
	}
	seen := map[string]bool{}
	for _, h := range m.Hooks {
		if !KnownHook(h) {
			return bad("hooks", "unknown hook %q", h)
		}
		if seen[h] {
			return bad("hooks", "duplicate hook %q", h)
		}
		seen[h] = true
	}
	if len(m.Config) > maxConfigBytes {
		return bad("config", "larger than %d bytes", maxConfigBytes)
	}
	if c := bytes.TrimSpace(m.Config); len(c) > 0 && !bytes.Equal(c, []byte("null")) {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(c, &obj); err != nil {
			return bad("config", "must be a JSON object")
		}
	}
	switch m.FailurePolicy {
	case "", FailClosed, FailOpen:
	default:
		return bad("failure_policy", "must be %q or %q", FailClosed, FailOpen)
	}
	if len(m.AllowedHosts) > maxAllowedHosts {
		return bad("allowed_hosts", "at most %d hosts", maxAllowedHosts)
	}
	for _, h := range m.AllowedHosts {
		if err := checkAllowedHost(h); err != nil {
			return bad("allowed_hosts", "%q: %s", h, err.Error())
		}
	}
	if m.Priority < -maxPriority || m.Priority > maxPriority {
		return bad("priority", "must be between %d and %d", -maxPriority, maxPriority)
	}
	if m.TimeoutMS < 0 || time.Duration(m.TimeoutMS)*time.Millisecond > maxTimeoutCeiling {
		return bad("timeout_ms", "must be between 0 and %d", maxTimeoutCeiling.Milliseconds())
	}
	return nil
}

// checkAllowedHost accepts a lowercase DNS name ("hooks.example.com"), a
// wildcard covering the subdomains of a name with at least two labels
// ("*.example.com", which does not match example.com itself), or an IP
// literal. Schemes, ports, paths and bare "*" are refused. Whether an address
// is public is decided at dial time, not here.
func checkAllowedHost(h string) error {
	if h == "" {
		return fmt.Errorf("empty")
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	name := h
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		name = rest
		if !strings.Contains(name, ".") {
			return fmt.Errorf("a wildcard needs at least two labels after it")
		}
	}
	if len(name) > 253 {
		return fmt.Errorf("too long")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("not a host name")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("not a host name")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("not a lowercase host name (no scheme, port or path)")
			}
		}
	}
	return nil
}

// hostAllowed reports whether host (from a URL, lowercased by the caller)
// matches one of the allowed patterns.
func hostAllowed(host string, allowed []string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, a := range allowed {
		if suffix, ok := strings.CutPrefix(a, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
			continue
		}
		if host == a {
			return true
		}
	}
	return false
}
