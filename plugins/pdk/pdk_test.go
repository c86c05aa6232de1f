package pdk

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestHandle(t *testing.T) {
	OnValidate("task.validate", func(in *ValidationInput) (ValidationResult, error) {
		var task Task
		if err := in.DecodeInput(&task); err != nil {
			return ValidationResult{}, err
		}
		if task.Title == "" {
			return Reject("a task needs a title"), nil
		}
		if task.Title == "boom" {
			panic("boom")
		}
		return AllowWithPatch(map[string]string{"title": strings.TrimSpace(task.Title)})
	})
	OnNotify("task.done", func(in *NotificationInput) (NotificationResult, error) {
		return NotificationResult{}, nil
	})
	tests := []struct {
		name, hook, input, want string
	}{
		{"Reject", "task.validate", `{"input":{"title":""}}`, `{"allow":false,"message":"a task needs a title"}`},
		{"Patch", "task.validate", `{"input":{"title":" x "}}`, `{"allow":true,"patch":{"title":"x"}}`},
		{"PanicIsAnError", "task.validate", `{"input":{"title":"boom"}}`, `{"error":"panic: boom"}`},
		{"BadInput", "task.validate", `{"input":`, `{"error":"decode input: unexpected end of JSON input"}`},
		{"UnknownHook", "project.validate", `{}`, `{"error":"no handler for hook \"project.validate\""}`},
		{"EmptyDeliveriesAreAnArray", "task.done", `{"event":{"id":"e"}}`, `{"deliveries":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Handle(tt.hook, []byte(tt.input))
			if !json.Valid(got) || string(got) != tt.want {
				t.Errorf("Handle = %s, want %s", got, tt.want)
			}
		})
	}
}
