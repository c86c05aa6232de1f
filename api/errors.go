package api

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/promanage/promanage/core"
)

// problem is an RFC 9457 problem details body.
type problem struct {
	Type      string            `json:"type"`
	Title     string            `json:"title"`
	Status    int               `json:"status"`
	Detail    string            `json:"detail,omitempty"`
	Code      string            `json:"code"`
	RequestID string            `json:"request_id,omitempty"`
	Errors    []core.FieldError `json:"errors,omitempty"`
	Plugin    string            `json:"plugin,omitempty"`
}

// statusOf is the one place that maps error codes to HTTP status codes.
func statusOf(code string) int {
	switch code {
	case core.EINVALID, core.EPLUGINREJECTED, CodeIdempotencyKeyReused:
		return http.StatusUnprocessableEntity
	case core.ENOTFOUND:
		return http.StatusNotFound
	case core.ECONFLICT:
		return http.StatusConflict
	case core.EFORBIDDEN, core.ESUSPENDED:
		return http.StatusForbidden
	case core.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case core.EPRECONDITION:
		return http.StatusPreconditionFailed
	case core.EPRECONDREQ:
		return http.StatusPreconditionRequired
	case core.ETOOLARGE, core.EQUOTA:
		return http.StatusRequestEntityTooLarge
	case core.EUNSUPPORTED:
		return http.StatusUnsupportedMediaType
	case core.ERATELIMITED:
		return http.StatusTooManyRequests
	case core.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// codeOfStatus maps fiber's own errors (unknown route, body too large, ...)
// to our codes.
func codeOfStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return core.ENOTFOUND
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestEntityTooLarge:
		return core.ETOOLARGE
	case http.StatusUnsupportedMediaType:
		return core.EUNSUPPORTED
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusRequestTimeout:
		return "timeout"
	case http.StatusTooManyRequests:
		return core.ERATELIMITED
	}
	if status >= 500 {
		return core.EINTERNAL
	}
	return "bad_request"
}

// errorHandler turns every error a handler returns into problem+json. The
// client sees a stable code and a safe message; causes of internal errors go
// only to the log, with the request id.
func errorHandler(c *fiber.Ctx, err error) error {
	rid := requestID(c)
	var p problem
	var fe *fiber.Error
	var ce *core.Error
	switch {
	case errors.As(err, &ce):
		p = problem{Status: statusOf(ce.Code), Code: ce.Code, Detail: ce.Message, Errors: ce.Fields, Plugin: ce.Plugin}
		if p.Status >= 500 {
			slog.ErrorContext(c.UserContext(), "request failed", "request_id", rid, "code", ce.Code, "err", err)
			if p.Status == http.StatusInternalServerError {
				p.Detail = "internal error" // only curated 503 messages reach the client
			}
		}
	case errors.As(err, &fe):
		p = problem{Status: fe.Code, Code: codeOfStatus(fe.Code), Detail: fe.Message}
		if fe.Code >= 500 {
			slog.ErrorContext(c.UserContext(), "request failed", "request_id", rid, "err", err)
			p.Detail = "internal error"
		}
	case core.ErrorCode(err) == core.EUNAVAILABLE:
		// A dependency failed for now (database unreachable or saturated,
		// a lock or statement timeout, a bucket timing out): 503, never 500.
		slog.ErrorContext(c.UserContext(), "request failed: dependency unavailable", "request_id", rid, "err", err)
		p = problem{Status: http.StatusServiceUnavailable, Code: core.EUNAVAILABLE,
			Detail: "a service this request needs is temporarily unavailable or busy; retry after the time in Retry-After"}
	default:
		slog.ErrorContext(c.UserContext(), "request failed", "request_id", rid, "err", err)
		p = problem{Status: http.StatusInternalServerError, Code: core.EINTERNAL, Detail: "internal error"}
	}
	p.Title = http.StatusText(p.Status)
	p.Type = "https://promanage.dev/problems/" + p.Code
	p.RequestID = rid
	if p.Status == http.StatusUnauthorized {
		c.Set("WWW-Authenticate", `Bearer realm="promanage"`)
	}
	if p.Status == http.StatusServiceUnavailable && len(c.Response().Header.Peek(fiber.HeaderRetryAfter)) == 0 {
		c.Set(fiber.HeaderRetryAfter, retryAfterSeconds)
	}
	c.Status(p.Status)
	c.Set(fiber.HeaderContentType, "application/problem+json")
	b, _ := jsonMarshal(p)
	return c.Send(b)
}

// retryAfterSeconds is the Retry-After of a 503: the bounded waits that
// produce one (a pooled connection, a lock, a plugin slot, a busy project's
// write queue) are a few seconds, and the outages the chaos run exercises
// recover within a few seconds of the dependency returning.
const retryAfterSeconds = "2"

func errf(code, msg string) error { return &core.Error{Code: code, Message: msg} }
