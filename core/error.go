// Package core holds ProManage's product domain: projects, tasks, milestones,
// expenses, documents, members, the audit log and domain events, with their
// business rules. Services take a tenant scope explicitly; core never reads a
// tenant from a global, never imports an HTTP or Wasm library, and never lets
// a query run without naming its tenant's schema.
package core

import (
	"errors"
	"fmt"

	"gocloud.dev/gcerrors"

	"github.com/promanage/promanage/tenant"
)

// Error codes. They are stable: clients match on them (the API exposes them as
// the `code` member of problem+json bodies) and the mapping to HTTP status
// codes lives in exactly one place, package api.
const (
	ECONFLICT       = "conflict"
	EINTERNAL       = "internal"
	EINVALID        = "invalid"
	ENOTFOUND       = "not_found"
	EFORBIDDEN      = "forbidden"
	EUNAUTHORIZED   = "unauthorized"
	EPRECONDITION   = "precondition_failed"
	EPRECONDREQ     = "precondition_required"
	ETOOLARGE       = "too_large"
	EQUOTA          = "quota_exceeded"
	EUNSUPPORTED    = "unsupported_media_type"
	ERATELIMITED    = "rate_limited"
	EUNAVAILABLE    = "unavailable"
	ESUSPENDED      = "tenant_suspended"
	EPLUGINREJECTED = "plugin_rejected"
)

// FieldError describes one invalid input field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is the one error type of the domain. Message is safe to show to the
// client; Err is the cause, only ever logged.
type Error struct {
	Code    string
	Message string
	Fields  []FieldError
	// Plugin names the plugin that rejected a change (code plugin_rejected).
	Plugin string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the code of the first *Error in err's chain;
// EUNAVAILABLE for a dependency that failed for now (see Unavailable); and
// EINTERNAL for anything else.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	if Unavailable(err) {
		return EUNAVAILABLE
	}
	return EINTERNAL
}

// Unavailable reports whether err is a dependency failing for now rather
// than a bug: the database's transient failures (tenant.Unavailable: no
// pooled connection in time, server down or restarting, lock or statement
// timeout, ...), a network error reaching any dependency, a bucket that
// timed out or is throttling, or the request's deadline. It is the one
// classification of infrastructure errors; handlers never decide it
// themselves.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code == EUNAVAILABLE
	}
	if tenant.Unavailable(err) {
		return true
	}
	switch gcerrors.Code(err) {
	case gcerrors.DeadlineExceeded, gcerrors.ResourceExhausted:
		return true
	}
	return false
}

// Invalid builds an EINVALID error carrying field details.
func Invalid(fields ...FieldError) *Error {
	msg := "invalid input"
	if len(fields) == 1 {
		msg = fields[0].Field + ": " + fields[0].Message
	}
	return &Error{Code: EINVALID, Message: msg, Fields: fields}
}

// Validator collects field errors.
type Validator struct{ fields []FieldError }

// Check records msg for field unless ok.
func (v *Validator) Check(ok bool, field, msg string) {
	if !ok {
		v.fields = append(v.fields, FieldError{Field: field, Message: msg})
	}
}

// Err returns nil or an EINVALID error with all recorded fields.
func (v *Validator) Err() error {
	if len(v.fields) == 0 {
		return nil
	}
	return Invalid(v.fields...)
}
