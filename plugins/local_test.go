package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRunLocalValidation(t *testing.T) {
	wasm, err := os.ReadFile("../examples/plugins/naming-policy/naming-policy.wasm")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		payload string
		allow   bool
	}{
		{"BareEntity", `{"key":"bad key","name":"x"}`, false},
		{"FullShape", `{"operation":"update","input":{"key":"GOOD"},"current":{"key":"OLD"}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := RunLocal(context.Background(), LocalRun{Module: wasm, Hook: "project.validate", Payload: []byte(tt.payload)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Validation == nil || res.Validation.Allow != tt.allow {
				t.Fatalf("validation = %+v, want allow=%v", res.Validation, tt.allow)
			}
		})
	}
}

func TestRunLocalNotification(t *testing.T) {
	event := `{"id":"e1","type":"project.created","data":{"key":"WEB"}}`
	res, err := RunLocal(context.Background(), LocalRun{
		Module: testdata(t, "notify.wasm"), Hook: "project.created",
		Config: json.RawMessage(`{"url":"https://hooks.example.com/pm"}`), Payload: []byte(event),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Notification == nil || len(res.Notification.Deliveries) != 1 || res.Notification.Deliveries[0].Method != "POST" {
		t.Fatalf("notification = %+v", res.Notification)
	}
	// The plugin logged the input the host built: the event wrapped with
	// hook, tenant and config, as the worker would send it.
	if len(res.Invocation.Logs) != 1 {
		t.Fatalf("logs = %q", res.Invocation.Logs)
	}
	var in NotificationInput
	if err := json.Unmarshal([]byte(strings.TrimPrefix(res.Invocation.Logs[0], "debug: ")), &in); err != nil {
		t.Fatalf("logged input: %v", err)
	}
	if in.Hook != "project.created" || in.Tenant != "local" || in.Event.ID != "e1" || string(in.Config) != `{"url":"https://hooks.example.com/pm"}` {
		t.Errorf("input = %+v", in)
	}
}

func TestRunLocalAppliesServerLimits(t *testing.T) {
	// Same sandbox as the server: a looping plugin times out, an invalid
	// module is refused the same way.
	_, err := RunLocal(context.Background(), LocalRun{Module: testdata(t, "hostile.wasm"), Hook: "project.validate", Payload: []byte(`"loop"`)})
	if err == nil {
		t.Error("non-object payload accepted")
	}
	_, err = RunLocal(context.Background(), LocalRun{Module: testdata(t, "hostile.wasm"), Hook: "project.validate",
		Payload: []byte(`{"input":{}}`), Options: &Options{ValidateTimeout: 50 * time.Millisecond}})
	if !errors.Is(err, ErrTrap) { // "{" selects no mode: hostile traps
		t.Errorf("trapping plugin: %v, want ErrTrap", err)
	}
	_, err = RunLocal(context.Background(), LocalRun{Module: testdata(t, "import_path_open.wasm"), Hook: "project.validate"})
	var ime *InvalidModuleError
	if !errors.As(err, &ime) {
		t.Errorf("forbidden import: %v, want InvalidModuleError", err)
	}
}
