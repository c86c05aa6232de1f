package plugins

import "slices"

// Validation hooks run synchronously inside a request; their result is a
// ValidationResult.
var ValidationHooks = []string{
	"project.validate",
	"task.validate",
	"expense.validate",
	"document.validate",
}

// NotificationHooks run in the worker from the outbox; their result is a
// NotificationResult.
var NotificationHooks = []string{
	"project.created",
	"project.updated",
	"project.deleted",
	"task.done",
	"expense.recorded",
	"budget.threshold_crossed",
	"deadline.approaching",
	"project.overdue",
	"document.uploaded",
	"member.added",
}

// IsValidationHook reports whether hook is one of ValidationHooks.
func IsValidationHook(hook string) bool { return slices.Contains(ValidationHooks, hook) }

// IsNotificationHook reports whether hook is one of NotificationHooks.
func IsNotificationHook(hook string) bool { return slices.Contains(NotificationHooks, hook) }

// KnownHook reports whether hook is a validation or notification hook.
func KnownHook(hook string) bool { return IsValidationHook(hook) || IsNotificationHook(hook) }
