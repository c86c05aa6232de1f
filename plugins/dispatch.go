package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
)

// NotificationConsumer returns the outbox consumer that runs the event's
// tenant's notification plugins and delivers the webhooks they return.
func (r *Registry) NotificationConsumer() core.Consumer { return core.ConsumerFunc(r.HandleEvent) }

type deliveryRow struct {
	ID      uuid.UUID `gorm:"column:id"`
	Idx     int       `gorm:"column:idx"`
	Request string    `gorm:"column:request"`
	State   string    `gorm:"column:state"`
}

// DeliveryID is the ProManage-Delivery id of the index-th webhook a plugin
// asked for on an event: the same on every retry of the event.
func DeliveryID(eventID, pluginID uuid.UUID, index int) uuid.UUID {
	return uuid.NewSHA1(eventID, []byte(pluginID.String()+"/"+strconv.Itoa(index)))
}

// HandleEvent runs every enabled plugin of the event's tenant that handles
// the event type, stores the deliveries each returns (once per event and
// plugin: a retried event reuses them, so a delivery keeps its id and
// content), and sends those not yet sent. A plugin failure or a retryable
// delivery failure returns an error so the outbox worker retries with
// backoff (deliveries already made are skipped); if only permanent failures
// remain (host not allowed, non-public address, 4xx) the error wraps
// core.ErrPermanent and the event is parked at once.
func (r *Registry) HandleEvent(ctx context.Context, d core.Delivery) error {
	if !IsNotificationHook(d.Event.Type) {
		return nil
	}
	slug, all, err := r.activeSince(ctx, d.TenantID, d.Event.OccurredAt)
	if err != nil {
		return err
	}
	var retry, permanent []error
	for _, a := range handling(all, d.Event.Type) {
		rows, err := r.deliveries(ctx, d, a)
		if err != nil {
			retry = append(retry, fmt.Errorf("plugin %s: %w", a.Name, err))
			continue
		}
		if rows == nil {
			in := NotificationInput{Hook: d.Event.Type, Tenant: slug, Config: a.Config, Event: Event{
				ID: d.Event.ID.String(), Type: d.Event.Type, Tenant: slug, OccurredAt: d.Event.OccurredAt.UTC(), Data: d.Event.Payload}}
			b, err := in.Encode()
			if err != nil {
				return fmt.Errorf("notify %s: %w", d.Event.Type, err)
			}
			inv, err := r.call(ctx, d.TenantID, a, d.Event.Type, b)
			var res *NotificationResult
			if err == nil {
				res, err = DecodeNotificationResult(inv.Output)
			}
			eventID := d.Event.ID
			r.record(d.TenantID, a.ID, a.Version, d.Event.Type, inv, nil, res, err, false, &eventID)
			if err != nil {
				retry = append(retry, fmt.Errorf("plugin %s: %w", a.Name, err))
				continue
			}
			if rows, err = r.storeDeliveries(ctx, d, a, res.Deliveries); err != nil {
				retry = append(retry, fmt.Errorf("plugin %s: %w", a.Name, err))
				continue
			}
		}
		for _, row := range rows {
			if row.State != "pending" {
				continue
			}
			if err := r.send(ctx, d.TenantID, a, row); err != nil {
				if Retryable(err) {
					retry = append(retry, fmt.Errorf("plugin %s delivery %s: %w", a.Name, row.ID, err))
				} else {
					permanent = append(permanent, fmt.Errorf("plugin %s delivery %s: %w", a.Name, row.ID, err))
				}
			}
		}
	}
	if len(retry) > 0 {
		return errors.Join(append(retry, permanent...)...)
	}
	if len(permanent) > 0 {
		return fmt.Errorf("%w: %w", core.ErrPermanent, errors.Join(permanent...))
	}
	return nil
}

// deliveries returns the stored deliveries of (event, plugin), or nil if the
// plugin has not run for the event yet.
func (r *Registry) deliveries(ctx context.Context, d core.Delivery, a *activePlugin) ([]deliveryRow, error) {
	var rows []deliveryRow
	err := r.db.WithContext(ctx).Raw(`SELECT id, idx, request::text AS request, state FROM public.plugin_deliveries
		WHERE event_id = ? AND plugin_id = ? ORDER BY idx`, d.Event.ID, a.ID).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("load deliveries: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	return rows, nil
}

func (r *Registry) storeDeliveries(ctx context.Context, d core.Delivery, a *activePlugin, ds []Delivery) ([]deliveryRow, error) {
	if len(ds) == 0 {
		return []deliveryRow{}, nil
	}
	err := r.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for i, del := range ds {
			b, err := json.Marshal(del)
			if err != nil {
				return err
			}
			if err := tx.Exec(`INSERT INTO public.plugin_deliveries (id, tenant_id, plugin_id, event_id, idx, request)
				VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
				DeliveryID(d.Event.ID, a.ID, i), d.TenantID, a.ID, d.Event.ID, i, string(b)).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store deliveries: %w", err)
	}
	return r.deliveries(ctx, d, a)
}

// send delivers one stored webhook and records the outcome.
func (r *Registry) send(ctx context.Context, tenantID uuid.UUID, a *activePlugin, row deliveryRow) error {
	var del Delivery
	if err := json.Unmarshal([]byte(row.Request), &del); err != nil {
		return &DeliveryError{Err: fmt.Errorf("%w: stored request: %w", ErrInvalidDelivery, err)}
	}
	var status int
	secret, err := r.secrets.Open(a.ID, a.Secret)
	if err != nil {
		// The key is missing or changed, or the value was altered
		// (secret.go): retried, as the operator can restore the key, and
		// parked by the outbox in the end.
		err = &DeliveryError{Retryable: true, Err: fmt.Errorf("%w: the server's secret key is missing or changed, or the stored value was altered; "+
			"restore the key, or delete and re-upload the plugin to get a new secret", err)}
	} else {
		status, err = r.deliverer.Deliver(ctx, del, a.AllowedHosts, []byte(secret), row.ID.String())
	}
	state, msg := "delivered", ""
	if err != nil {
		msg = clip(err.Error())
		state = "failed"
		if Retryable(err) {
			state = "pending"
		}
	}
	if uerr := r.db.WithContext(context.WithoutCancel(ctx)).Exec(`UPDATE public.plugin_deliveries
		SET state = ?, status = ?, attempts = attempts + 1, last_error = ?, updated_at = now() WHERE id = ?`,
		state, status, msg, row.ID).Error; uerr != nil && err == nil {
		// Delivered but not recorded: the retry would send it again, which
		// the stable delivery id lets the receiver drop.
		return fmt.Errorf("record delivery %s: %w", row.ID, uerr)
	}
	return err
}

// DeliveryInfo is one webhook delivery as the API shows it.
type DeliveryInfo struct {
	ID        uuid.UUID       `json:"id"`
	EventID   uuid.UUID       `json:"event_id"`
	Index     int             `json:"index"`
	Request   json.RawMessage `json:"request"`
	State     string          `json:"state"`
	Attempts  int             `json:"attempts"`
	Status    int             `json:"status"`
	LastError string          `json:"last_error"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// Deliveries lists a plugin's most recent webhook deliveries (at most limit,
// default 50). It returns ENOTFOUND if the tenant has no such plugin.
func (r *Registry) Deliveries(ctx context.Context, tenantID, id uuid.UUID, limit int) ([]DeliveryInfo, error) {
	if _, err := r.Get(ctx, tenantID, id); err != nil {
		return nil, err
	}
	var rows []struct {
		ID        uuid.UUID `gorm:"column:id"`
		EventID   uuid.UUID `gorm:"column:event_id"`
		Idx       int       `gorm:"column:idx"`
		Request   string    `gorm:"column:request"`
		State     string    `gorm:"column:state"`
		Attempts  int       `gorm:"column:attempts"`
		Status    int       `gorm:"column:status"`
		LastError string    `gorm:"column:last_error"`
		CreatedAt time.Time `gorm:"column:created_at"`
		UpdatedAt time.Time `gorm:"column:updated_at"`
	}
	err := r.db.WithContext(ctx).Raw(`SELECT id, event_id, idx, request::text AS request, state, attempts, status, last_error, created_at, updated_at
		FROM public.plugin_deliveries WHERE tenant_id = ? AND plugin_id = ? ORDER BY created_at DESC, idx LIMIT ?`,
		tenantID, id, core.ClampLimit(limit)).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	out := make([]DeliveryInfo, len(rows))
	for i, row := range rows {
		out[i] = DeliveryInfo{ID: row.ID, EventID: row.EventID, Index: row.Idx, Request: json.RawMessage(row.Request), State: row.State,
			Attempts: row.Attempts, Status: row.Status, LastError: row.LastError, CreatedAt: row.CreatedAt.UTC(), UpdatedAt: row.UpdatedAt.UTC()}
	}
	return out, nil
}

// TestRun is a dry run of one hook of a plugin.
type TestRun struct {
	Hook string
	// Event is what `promanage plugin run` reads on stdin: for a validation
	// hook a complete input, or {"operation","input","current","project"},
	// or just the entity (a create); for a notification hook the event.
	Event json.RawMessage
	// Config, if set, replaces the plugin's config for this run.
	Config json.RawMessage
}

// TestResult is what a dry run produced. Result is the plugin's decoded
// answer; Error is set when it failed (then Result may be absent).
type TestResult struct {
	Hook       string          `json:"hook"`
	Version    int             `json:"version"`
	Result     json.RawMessage `json:"result"`
	Error      string          `json:"error,omitempty"`
	DurationMS float64         `json:"duration_ms"`
	Logs       []string        `json:"logs"`
}

// Test dry-runs one hook of a plugin (enabled or not) on a given event with
// the same sandbox, limits and deadline as a real call; it never delivers
// webhooks. The run is recorded as a dry-run invocation. It returns
// ENOTFOUND for an unknown plugin and EINVALID for a hook the plugin does
// not declare or an event that is not a JSON object.
func (r *Registry) Test(ctx context.Context, tenantID uuid.UUID, tenantSlug string, id uuid.UUID, t TestRun) (*TestResult, error) {
	info, err := r.Get(ctx, tenantID, id)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(info.Hooks, t.Hook) {
		return nil, core.Invalid(core.FieldError{Field: "hook", Message: fmt.Sprintf("the plugin handles %v", info.Hooks)})
	}
	config := info.Config
	if len(t.Config) > 0 {
		var obj map[string]json.RawMessage
		if json.Unmarshal(t.Config, &obj) != nil || len(t.Config) > maxConfigBytes {
			return nil, core.Invalid(core.FieldError{Field: "config", Message: fmt.Sprintf("must be a JSON object of at most %d bytes", maxConfigBytes)})
		}
		config = t.Config
	}
	input, err := buildLocalInput(t.Hook, tenantSlug, config, t.Event)
	if err != nil {
		return nil, core.Invalid(core.FieldError{Field: "event", Message: err.Error()})
	}
	var v struct {
		ID uuid.UUID `gorm:"column:id"`
	}
	if err := r.db.WithContext(ctx).Raw("SELECT id FROM public.plugin_versions WHERE plugin_id = ? AND version = ?", id, info.Version).Scan(&v).Error; err != nil {
		return nil, fmt.Errorf("test plugin: %w", err)
	}
	a := &activePlugin{ID: id, Name: info.Name, VersionID: v.ID, Version: info.Version, Hooks: info.Hooks, TimeoutMS: info.TimeoutMS}
	inv, err := r.call(ctx, tenantID, a, t.Hook, input)
	res := &TestResult{Hook: t.Hook, Version: info.Version, Logs: []string{}}
	var vres *ValidationResult
	var nres *NotificationResult
	if err == nil {
		if IsValidationHook(t.Hook) {
			if vres, err = DecodeValidationResult(inv.Output); err == nil {
				res.Result, _ = json.Marshal(vres)
			}
		} else if nres, err = DecodeNotificationResult(inv.Output); err == nil {
			res.Result, _ = json.Marshal(nres)
		}
	}
	if inv != nil {
		res.DurationMS = float64(inv.Duration.Microseconds()) / 1000
		if inv.Logs != nil {
			res.Logs = inv.Logs
		}
	}
	if err != nil {
		var me *InvalidModuleError
		if inv == nil && !errors.As(err, &me) && !errors.Is(err, ErrBusy) && !errors.Is(err, ErrInputTooLarge) {
			return nil, fmt.Errorf("test plugin: %w", err)
		}
		res.Error = "plugin " + FailureReason(err)
	}
	r.record(tenantID, id, info.Version, t.Hook, inv, vres, nres, err, true, nil)
	return res, nil
}
