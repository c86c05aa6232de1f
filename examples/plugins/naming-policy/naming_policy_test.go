// Package namingpolicy_test checks the hand-written naming-policy.wasm
// through the plugin host.
package namingpolicy_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/promanage/promanage/plugins"
)

func TestNamingPolicyWasm(t *testing.T) {
	wasm, err := os.ReadFile("naming-policy.wasm")
	if err != nil {
		t.Fatalf("read module (build with examples/plugins/build.sh): %v", err)
	}
	ctx := context.Background()
	h, err := plugins.NewHost(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	p, err := h.Load(ctx, "naming-policy-v1", wasm, plugins.Manifest{Name: "naming-policy", Hooks: []string{"project.validate"}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	tests := []struct {
		name  string
		input string // the "input" entity
		allow bool
	}{
		{"Valid", `{"key":"WEB","name":"Website"}`, true},
		{"ValidWithDigits", `{"name":"x","key":"PM2025"}`, true},
		{"TwoChars", `{"key":"AB"}`, true},
		{"TenChars", `{"key":"ABCDEFGHIJ"}`, true},
		{"OneChar", `{"key":"A"}`, false},
		{"ElevenChars", `{"key":"ABCDEFGHIJK"}`, false},
		{"Lowercase", `{"key":"web"}`, false},
		{"LeadingDigit", `{"key":"1WEB"}`, false},
		{"Hyphen", `{"key":"WEB-1"}`, false},
		{"Empty", `{"key":""}`, false},
		{"Escaped", `{"key":"W\u0045B"}`, false},
		{"NotAString", `{"key":42}`, false},
		{"NoKey", `{"name":"only a rename"}`, true},
		// "key" elsewhere must not be mistaken for input.key.
		{"NestedKeyIgnored", `{"meta":{"key":"bad key"},"tags":["key",{"key":1}],"key":"OK1"}`, true},
		{"WhitespaceAround", "{ \"key\" :\n \"OK\" }", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, _ := plugins.ValidationInput{
				Hook: "project.validate", Tenant: "acme", Operation: "create",
				// config and current come first, with decoy "input" and "key" members
				Config:  json.RawMessage(`{"input":{"key":"lower"},"key":"x"}`),
				Input:   json.RawMessage(tt.input),
				Current: json.RawMessage(`{"key":"old-key"}`),
			}.Encode()
			inv, err := h.Call(ctx, p, "acme", "project.validate", in)
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			res, err := plugins.DecodeValidationResult(inv.Output)
			if err != nil {
				t.Fatalf("decode %s: %v", inv.Output, err)
			}
			if res.Allow != tt.allow {
				t.Errorf("allow = %v (%q), want %v", res.Allow, res.Message, tt.allow)
			}
			if !res.Allow && (len(inv.Logs) != 1 || inv.Logs[0] != "info: naming-policy: rejected a project key") {
				t.Errorf("logs = %q, want the rejection log line", inv.Logs)
			}
		})
	}
}
