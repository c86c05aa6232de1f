package tenant

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Unavailable reports whether err means the database could not do the work
// right now, as opposed to a bug or a rule: the pool had no free connection
// in time, the server is unreachable, restarting or shutting down, a lock or
// statement timeout fired, or the transaction lost a serialization race or
// a deadlock. Retrying later can succeed, so the API answers 503 with
// Retry-After (core.ErrorCode maps it to EUNAVAILABLE); this is the one
// place that knows the database's transient failures.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrPoolTimeout) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, pgconn.ErrConnClosed) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "55P03", // lock_not_available: lock_timeout
			"57014",          // query_canceled: statement_timeout
			"57P01",          // admin_shutdown
			"57P02",          // crash_shutdown
			"57P03",          // cannot_connect_now: starting up or shutting down
			"25P03",          // idle_in_transaction_session_timeout
			"40001",          // serialization_failure
			"40P01",          // deadlock_detected
			"53300", "53400", // too_many_connections, configuration_limit_exceeded
			"53000", "53100", "53200", // insufficient resources, disk full, out of memory
			"58000", "58030": // system_error, io_error
			return true
		}
		return pgErr.Code[:2] == "08" // connection exceptions
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	// A statement whose context ended (the request's deadline) did not
	// fail on its own: the dependency was too slow.
	return errors.Is(err, context.DeadlineExceeded)
}
