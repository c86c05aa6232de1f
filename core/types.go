package core

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/text/currency"
)

// Actor is who performs a change, for the audit log and events.
type Actor struct {
	UserID    uuid.UUID
	RequestID string
}

// Date is a calendar date, YYYY-MM-DD in JSON. The zero Date means "none".
type Date struct{ t time.Time }

const dateLayout = "2006-01-02"

// ParseDate parses YYYY-MM-DD.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(dateLayout, s)
	if err != nil {
		return Date{}, fmt.Errorf("must be a date YYYY-MM-DD")
	}
	return Date{t}, nil
}

// DateOf returns the calendar date of t in UTC.
func DateOf(t time.Time) Date {
	y, m, d := t.UTC().Date()
	return Date{time.Date(y, m, d, 0, 0, 0, 0, time.UTC)}
}

func (d Date) IsZero() bool         { return d.t.IsZero() }
func (d Date) Time() time.Time      { return d.t }
func (d Date) String() string       { return d.t.Format(dateLayout) }
func (d Date) Before(o Date) bool   { return d.t.Before(o.t) }
func (d Date) After(o Date) bool    { return d.t.After(o.t) }
func (d Date) AddDays(n int) Date   { return Date{d.t.AddDate(0, 0, n)} }
func (d Date) DaysUntil(o Date) int { return int((o.t.Unix() - d.t.Unix()) / 86400) }

func (d Date) MarshalJSON() ([]byte, error) {
	if d.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(d.String())
}

func (d *Date) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*d = Date{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("must be a date YYYY-MM-DD")
	}
	v, err := ParseDate(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// datePtr returns nil for the zero date, for nullable date columns.
func datePtr(d Date) *time.Time {
	if d.IsZero() {
		return nil
	}
	t := d.t
	return &t
}

func dateFrom(t *time.Time) Date {
	if t == nil {
		return Date{}
	}
	return DateOf(*t)
}

// Money is an amount in minor units of an ISO 4217 currency. Arithmetic on
// money is done in int64 only; overflow is an error, never a rounding.
type Money struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

// ValidCurrency reports whether c is a recognised ISO 4217 code (upper case).
func ValidCurrency(c string) bool {
	if len(c) != 3 || strings.ToUpper(c) != c {
		return false
	}
	_, err := currency.ParseISO(c)
	return err == nil
}

// AddMinor adds two amounts, failing on int64 overflow.
func AddMinor(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}

// Page is one page of a list.
type Page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Limits of list pages.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// ClampLimit applies the default and maximum page size.
func ClampLimit(n int) int {
	if n <= 0 {
		return DefaultLimit
	}
	return min(n, MaxLimit)
}

// encodeCursor makes an opaque cursor from the last item's id.
func encodeCursor(id uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString(id[:])
}

// decodeCursor returns EINVALID for a cursor this server did not make.
func decodeCursor(s string) (uuid.UUID, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 16 {
		return uuid.Nil, Invalid(FieldError{Field: "cursor", Message: "invalid cursor"})
	}
	return uuid.UUID(b), nil
}

// ETag formats a resource version as a strong entity tag.
func ETag(version int64) string { return fmt.Sprintf(`"%d"`, version) }

// ParseETag parses an If-Match value made by ETag; ok is false otherwise.
func ParseETag(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	var v int64
	if _, err := fmt.Sscanf(s, `"%d"`, &v); err != nil || ETag(v) != s {
		return 0, false
	}
	return v, true
}

// RawJSON is JSON text stored in a jsonb column. It is a string, not a
// []byte, because pgx sends []byte parameters as bytea.
type RawJSON string

// MarshalJSON emits the text as is.
func (r RawJSON) MarshalJSON() ([]byte, error) {
	if r == "" {
		return []byte("null"), nil
	}
	return []byte(r), nil
}
