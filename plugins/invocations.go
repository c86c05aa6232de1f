package plugins

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/promanage/promanage/core"
)

// Invocation outcomes as the invocation log shows them.
const (
	OutcomeAllowed  = "allowed"  // validation: allowed
	OutcomeRejected = "rejected" // validation: rejected
	OutcomeOK       = "ok"       // notification: answered (its deliveries are listed separately)
	OutcomeFailed   = "failed"   // the plugin failed (see error)
)

// Recorder limits: records are written in batches off the request path; a
// burst beyond the buffer is dropped (and counted) rather than slowing
// requests down.
const (
	recorderBuffer   = 4096
	recorderBatch    = 200
	recorderInterval = 200 * time.Millisecond
)

type invocationRow struct {
	ID         uuid.UUID  `gorm:"column:id"`
	TenantID   uuid.UUID  `gorm:"column:tenant_id"`
	PluginID   uuid.UUID  `gorm:"column:plugin_id"`
	Version    int        `gorm:"column:version"`
	Hook       string     `gorm:"column:hook"`
	Outcome    string     `gorm:"column:outcome"`
	Message    string     `gorm:"column:message"`
	Error      string     `gorm:"column:error"`
	Result     *string    `gorm:"column:result"`
	Logs       string     `gorm:"column:logs"`
	DurationUS int64      `gorm:"column:duration_us"`
	DryRun     bool       `gorm:"column:dry_run"`
	EventID    *uuid.UUID `gorm:"column:event_id"`
	CreatedAt  time.Time  `gorm:"column:created_at"`
}

// record queues one invocation record.
func (r *Registry) record(tenantID, pluginID uuid.UUID, version int, hook string, inv *Invocation,
	vres *ValidationResult, nres *NotificationResult, err error, dryRun bool, eventID *uuid.UUID) {
	id, uerr := uuid.NewV7()
	if uerr != nil {
		return
	}
	row := invocationRow{ID: id, TenantID: tenantID, PluginID: pluginID, Version: version, Hook: hook,
		DryRun: dryRun, EventID: eventID, CreatedAt: time.Now().UTC(), Logs: "[]"}
	var result any
	switch {
	case err != nil:
		row.Outcome = OutcomeFailed
		row.Error = clip(err.Error())
		row.Message = "plugin " + FailureReason(err)
	case vres != nil && vres.Allow:
		row.Outcome, result = OutcomeAllowed, vres
	case vres != nil:
		row.Outcome, row.Message, result = OutcomeRejected, vres.Message, vres
	case nres != nil:
		row.Outcome, result = OutcomeOK, nres
		row.Message = fmt.Sprintf("%d deliveries", len(nres.Deliveries))
	}
	if result != nil {
		if b, err := json.Marshal(result); err == nil {
			if b, ok := sanitizeJSON(b); ok {
				s := string(b)
				row.Result = &s
			}
		}
	}
	if inv != nil {
		row.DurationUS = inv.Duration.Microseconds()
		if len(inv.Logs) > 0 {
			logs := make([]string, len(inv.Logs))
			for i, l := range inv.Logs {
				logs[i] = sanitizeText(l)
			}
			if b, err := json.Marshal(logs); err == nil {
				row.Logs = string(b)
			}
		}
	}
	row.Message, row.Error = sanitizeText(row.Message), sanitizeText(row.Error)
	r.opts.Metrics.observe(hook, row.Outcome, inv, dryRun)
	r.rec.add(row)
}

// recorder writes invocation records in batches from one goroutine, started
// on first use and stopped by close.
type recorder struct {
	db      *gorm.DB
	ch      chan invocationRow
	flush   chan chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	running atomic.Bool
	closed  atomic.Bool
	dropped atomic.Int64
}

func newRecorder(db *gorm.DB) *recorder {
	return &recorder{db: db, ch: make(chan invocationRow, recorderBuffer), flush: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
}

func (rc *recorder) start() {
	rc.once.Do(func() {
		rc.running.Store(true)
		go rc.run()
	})
}

func (rc *recorder) add(row invocationRow) {
	if rc.closed.Load() {
		return
	}
	rc.start()
	select {
	case rc.ch <- row:
	default:
		if n := rc.dropped.Add(1); n == 1 || n%1000 == 0 {
			slog.Warn("plugin invocation log buffer full; records dropped", "dropped", n)
		}
	}
}

// Flush waits until every invocation record queued so far is written.
func (r *Registry) Flush(ctx context.Context) {
	rc := r.rec
	if !rc.running.Load() {
		return
	}
	ack := make(chan struct{})
	select {
	case rc.flush <- ack:
		select {
		case <-ack:
		case <-ctx.Done():
		}
	case <-ctx.Done():
	case <-rc.done:
	}
}

// close writes what is queued and stops the goroutine.
func (rc *recorder) close(ctx context.Context) {
	if rc.closed.Swap(true) {
		return
	}
	rc.once.Do(func() {}) // a later add cannot start it any more
	if !rc.running.Load() {
		return
	}
	close(rc.stop)
	select {
	case <-rc.done:
	case <-ctx.Done():
	}
}

func (rc *recorder) run() {
	defer close(rc.done)
	tick := time.NewTicker(recorderInterval)
	defer tick.Stop()
	batch := make([]invocationRow, 0, recorderBatch)
	write := func() {
		if len(batch) == 0 {
			return
		}
		rc.write(batch)
		batch = batch[:0]
	}
	drain := func() {
		for {
			select {
			case row := <-rc.ch:
				batch = append(batch, row)
				if len(batch) >= recorderBatch {
					write()
				}
			default:
				write()
				return
			}
		}
	}
	for {
		select {
		case row := <-rc.ch:
			batch = append(batch, row)
			if len(batch) >= recorderBatch {
				write()
			}
		case <-tick.C:
			write()
		case ack := <-rc.flush:
			drain()
			close(ack)
		case <-rc.stop:
			drain()
			return
		}
	}
}

// write inserts a batch in one statement; if that fails, it inserts the
// rows one by one, so one row PostgreSQL refuses never loses the others
// (other tenants' records among them). Rows are idempotent by id.
func (rc *recorder) write(batch []invocationRow) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	insert := func(rows any) error {
		return rc.db.WithContext(ctx).Table("public.plugin_invocations").Clauses(clause.OnConflict{DoNothing: true}).Create(rows).Error
	}
	err := insert(batch)
	if err == nil || len(batch) == 1 {
		if err != nil {
			slog.Error("write plugin invocation record", "id", batch[0].ID, "tenant_id", batch[0].TenantID, "err", err)
		}
		return
	}
	failed := 0
	for i := range batch {
		if err := insert(&batch[i]); err != nil {
			failed++
			slog.Error("write plugin invocation record", "id", batch[i].ID, "tenant_id", batch[i].TenantID, "err", err)
		}
	}
	slog.Warn("plugin invocation batch refused; rows written one by one", "count", len(batch), "failed", failed, "batch_err", err)
}

// sanitizeText makes s storable in a PostgreSQL text column and readable:
// valid UTF-8, without NUL (which PostgreSQL refuses in text).
func sanitizeText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	return s
}

// sanitizeJSON re-encodes a JSON document with every string (and key)
// sanitized: jsonb refuses \u0000 even escaped. Numbers keep their text.
// ok is false when b is not JSON.
func sanitizeJSON(b []byte) ([]byte, bool) {
	if !bytes.Contains(b, []byte(`\u0000`)) && utf8.Valid(b) {
		return b, true
	}
	var v any
	if err := unmarshalNumbers(b, &v); err != nil {
		return nil, false
	}
	out, err := json.Marshal(sanitizeValue(v))
	return out, err == nil
}

func sanitizeValue(v any) any {
	switch x := v.(type) {
	case string:
		return sanitizeText(x)
	case []any:
		for i := range x {
			x[i] = sanitizeValue(x[i])
		}
		return x
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[sanitizeText(k)] = sanitizeValue(e)
		}
		return out
	}
	return v
}

// InvocationInfo is one invocation record as the API shows it.
type InvocationInfo struct {
	ID         uuid.UUID       `json:"id"`
	Hook       string          `json:"hook"`
	Version    int             `json:"version"`
	Outcome    string          `json:"outcome"`
	Message    string          `json:"message"`
	Result     json.RawMessage `json:"result"`
	Error      string          `json:"error"`
	DurationMS float64         `json:"duration_ms"`
	Logs       json.RawMessage `json:"logs"`
	DryRun     bool            `json:"dry_run"`
	EventID    *uuid.UUID      `json:"event_id"`
	At         time.Time       `json:"at"`
}

// Invocations lists a plugin's invocation records, newest first, with an
// opaque cursor. It returns ENOTFOUND if the tenant has no such plugin and
// EINVALID for a bad cursor.
func (r *Registry) Invocations(ctx context.Context, tenantID, id uuid.UUID, limit int, cursor string) (*core.Page[InvocationInfo], error) {
	if _, err := r.Get(ctx, tenantID, id); err != nil {
		return nil, err
	}
	limit = core.ClampLimit(limit)
	q := r.db.WithContext(ctx).Table("public.plugin_invocations").
		Select("id, hook, version, outcome, message, error, result::text AS result, logs::text AS logs, duration_us, dry_run, event_id, created_at").
		Where("tenant_id = ? AND plugin_id = ?", tenantID, id)
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || len(b) != 16 {
			return nil, core.Invalid(core.FieldError{Field: "cursor", Message: "invalid cursor"})
		}
		q = q.Where("id < ?", uuid.UUID(b))
	}
	var rows []invocationRow
	if err := q.Order("id DESC").Limit(limit + 1).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("list invocations: %w", err)
	}
	page := &core.Page[InvocationInfo]{Items: []InvocationInfo{}}
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1].ID
		page.NextCursor = base64.RawURLEncoding.EncodeToString(last[:])
	}
	for _, row := range rows {
		info := InvocationInfo{ID: row.ID, Hook: row.Hook, Version: row.Version, Outcome: row.Outcome, Message: row.Message,
			Error: row.Error, DurationMS: float64(row.DurationUS) / 1000, Logs: json.RawMessage(row.Logs), DryRun: row.DryRun,
			EventID: row.EventID, At: row.CreatedAt.UTC()}
		if row.Result != nil {
			info.Result = json.RawMessage(*row.Result)
		}
		page.Items = append(page.Items, info)
	}
	return page, nil
}

// Prune deletes invocation and delivery records older than retention.
func (r *Registry) Prune(ctx context.Context, retention time.Duration) error {
	cutoff := time.Now().Add(-retention)
	err := errors.Join(
		r.db.WithContext(ctx).Exec("DELETE FROM public.plugin_invocations WHERE created_at < ?", cutoff).Error,
		r.db.WithContext(ctx).Exec("DELETE FROM public.plugin_deliveries WHERE created_at < ? AND state <> 'pending'", cutoff).Error,
	)
	if err != nil {
		return fmt.Errorf("prune plugin records: %w", err)
	}
	return nil
}
