package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/promanage/promanage/plugins"
	"github.com/promanage/promanage/plugins/pdk"
)

const testConfig = `{"max_budget_minor":1000000,"max_expense_minor":300000}`

func projectInput(amount int64) []byte {
	in, _ := plugins.ValidationInput{
		Hook: "project.validate", Tenant: "acme", Config: json.RawMessage(testConfig), Operation: "create",
		Input: json.RawMessage(`{"key":"WEB","name":"Website","budget":{"amount_minor":` + itoa(amount) + `,"currency":"EUR"}}`),
	}.Encode()
	return in
}

func expenseInput(op string, amount, spent, planned int64, current string) []byte {
	in, _ := plugins.ValidationInput{
		Hook: "expense.validate", Tenant: "acme", Config: json.RawMessage(testConfig), Operation: op,
		Input:   json.RawMessage(`{"amount_minor":` + itoa(amount) + `,"currency":"EUR","category":"travel","spent_on":"2025-03-01"}`),
		Current: json.RawMessage(current),
		Project: json.RawMessage(`{"id":"p1","key":"WEB","name":"Website","budget":{"amount_minor":` + itoa(planned) +
			`,"currency":"EUR"},"budget_summary":{"planned":` + itoa(planned) + `,"spent":` + itoa(spent) +
			`,"remaining":` + itoa(planned-spent) + `,"currency":"EUR"}}`),
	}.Encode()
	return in
}

// TestBudgetGuardWasm loads the committed budget-guard.wasm through the host,
// exactly as the server would, and checks its decisions.
func TestBudgetGuardWasm(t *testing.T) {
	wasm, err := os.ReadFile("budget-guard.wasm")
	if err != nil {
		t.Fatalf("read module (build with examples/plugins/build.sh): %v", err)
	}
	ctx := context.Background()
	h, err := plugins.NewHost(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	p, err := h.Load(ctx, "budget-guard-v1", wasm, plugins.Manifest{
		Name: "budget-guard", Hooks: []string{"project.validate", "expense.validate"},
		Config: json.RawMessage(testConfig), FailurePolicy: plugins.FailClosed,
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	tests := []struct {
		name, hook string
		input      []byte
		allow      bool
		message    string
	}{
		{"ProjectUnderCap", "project.validate", projectInput(999_999), true, ""},
		{"ProjectAtCap", "project.validate", projectInput(1_000_000), true, ""},
		{"ProjectOverCap", "project.validate", projectInput(1_000_001), false, "budget 10000.01 EUR exceeds the cap of 10000.00 EUR"},
		{"ExpenseFits", "expense.validate", expenseInput("create", 100_000, 400_000, 600_000, "null"), true, ""},
		{"ExpenseOverProjectBudget", "expense.validate", expenseInput("create", 250_000, 400_000, 600_000, "null"), false, "over the budget of 6000.00 EUR"},
		{"ExpenseOverSingleCap", "expense.validate", expenseInput("create", 300_001, 0, 600_000, "null"), false, "per-expense cap"},
		{"ExpenseUpdateReplacesOldAmount", "expense.validate", expenseInput("update", 250_000, 400_000, 600_000, `{"amount_minor":100000,"currency":"EUR"}`), true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := h.Call(ctx, p, "acme", tt.hook, tt.input)
			if err != nil {
				t.Fatalf("Call: %v (logs %q)", err, invLogs(inv))
			}
			res, err := plugins.DecodeValidationResult(inv.Output)
			if err != nil {
				t.Fatalf("decode %s: %v", inv.Output, err)
			}
			if res.Allow != tt.allow || !strings.Contains(res.Message, tt.message) {
				t.Errorf("got allow=%v message=%q, want allow=%v message containing %q", res.Allow, res.Message, tt.allow, tt.message)
			}
			if !tt.allow && tt.hook == "project.validate" && (len(inv.Logs) == 0 || !strings.HasPrefix(inv.Logs[0], "info: project WEB")) {
				t.Errorf("logs = %q, want the plugin's info line", inv.Logs)
			}
		})
	}
	t.Run("MissingConfigIsAPluginError", func(t *testing.T) {
		in, _ := plugins.ValidationInput{Hook: "project.validate", Tenant: "acme", Operation: "create", Input: json.RawMessage(`{"key":"X1"}`)}.Encode()
		inv, err := h.Call(ctx, p, "acme", "project.validate", in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := plugins.DecodeValidationResult(inv.Output); !errors.Is(err, plugins.ErrPluginFailed) {
			t.Errorf("decode = %v, want ErrPluginFailed", err)
		}
	})
}

// The same logic runs natively through pdk.Handle, which is how plugin
// authors unit-test without a host.
func TestBudgetGuardNative(t *testing.T) {
	var res pdk.ValidationResult
	if err := json.Unmarshal(pdk.Handle("project.validate", projectInput(2_000_000)), &res); err != nil {
		t.Fatal(err)
	}
	if res.Allow {
		t.Errorf("budget over the cap allowed: %+v", res)
	}
}

func invLogs(inv *plugins.Invocation) []string {
	if inv == nil {
		return nil
	}
	return inv.Logs
}
