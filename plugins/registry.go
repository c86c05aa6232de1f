package plugins

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
)

// Registry limits.
const (
	// MaxPluginsPerTenant bounds the plugins (names) of one tenant.
	MaxPluginsPerTenant = 50
	// keptVersions: older module versions of a plugin are deleted on upload.
	keptVersions = 10
	// maxFirstBytes is what document.validate sees of the content (ABI.md).
	maxFirstBytes = 4 << 10
	// defaultCacheTTL bounds how long another process (replica, worker) runs
	// a tenant's plugin set after it changed; the process that made the
	// change drops its entry at once.
	defaultCacheTTL = 2 * time.Second
)

// RegistryOptions connect the registry to the rest of the platform. Package
// plugins does not import tenant: the wiring adapts core's services to these.
type RegistryOptions struct {
	// Audit records a change in the tenant's audit log, in tx (the change's
	// transaction). Nil: changes are not audited.
	Audit func(tx *gorm.DB, tenantID uuid.UUID, actor core.Actor, action, pluginID string, details any) error
	// CacheTTL is how long a tenant's plugin set is trusted before it is
	// read again (default 2s).
	CacheTTL time.Duration
	// SlotWait is how long a plugin call waits for a free slot of its
	// tenant (the host's TenantConcurrency) and of the process
	// (MaxConcurrentCalls) before it fails with ErrBusy (default 3s); a
	// validation then answers 503 unless the plugin is fail_open.
	SlotWait time.Duration
	// SecretKey (PROMANAGE_SECRET_KEY) encrypts the plugins' webhook
	// signing secrets at rest (secret.go). Empty: no plugin can be created
	// (EUNAVAILABLE), and only secrets stored in clear before encryption
	// can sign webhooks.
	SecretKey []byte
	// Metrics, if set, counts every recorded invocation (metrics.go).
	Metrics *Metrics
}

// Registry stores tenants' plugins in PostgreSQL (public.plugins,
// plugin_versions, plugin_invocations, plugin_deliveries), loads them into the
// Host on first use, and dispatches hooks: it satisfies core.HookRunner for
// validation hooks and core.Consumer for notification hooks. Its methods
// return *core.Error for anything the client got wrong.
type Registry struct {
	db        *gorm.DB
	host      *Host
	deliverer *Deliverer
	opts      RegistryOptions
	rec       *recorder
	secrets   *SecretBox // nil without a secret key
	slots     *callSlots

	mu      sync.Mutex
	tenants map[uuid.UUID]*tenantEntry
}

// NewRegistry returns a registry on db running plugins in host and sending
// webhooks with deliverer.
func NewRegistry(db *gorm.DB, host *Host, deliverer *Deliverer, opts *RegistryOptions) *Registry {
	var o RegistryOptions
	if opts != nil {
		o = *opts
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = defaultCacheTTL
	}
	secrets, err := NewSecretBox(o.SecretKey)
	if err != nil {
		// Unreachable (a 32-byte HKDF output always makes an AES-GCM
		// cipher); without a box, creating plugins is refused.
		slog.Error("plugin secret encryption unavailable", "err", err)
	}
	o.SecretKey = nil // only the derived key is kept
	if o.SlotWait <= 0 {
		o.SlotWait = defaultSlotWait
	}
	ho := (*Options)(nil).withDefaults() // a registry without a host (tests of the records) runs nothing
	if host != nil {
		ho = host.Options()
	}
	return &Registry{db: db, host: host, deliverer: deliverer, opts: o, rec: newRecorder(db), secrets: secrets,
		slots:   newCallSlots(ho.TenantConcurrency, ho.MaxConcurrentCalls, o.SlotWait),
		tenants: map[uuid.UUID]*tenantEntry{}}
}

// Host returns the host the registry runs plugins in.
func (r *Registry) Host() *Host { return r.host }

// Close writes the invocation records still buffered.
func (r *Registry) Close(ctx context.Context) { r.rec.close(ctx) }

// PluginInfo is a plugin as the API shows it.
type PluginInfo struct {
	ID            uuid.UUID       `json:"id"`
	Name          string          `json:"name"`
	Enabled       bool            `json:"enabled"`
	Version       int             `json:"version"`
	Hooks         []string        `json:"hooks"`
	Config        json.RawMessage `json:"config"`
	FailurePolicy string          `json:"failure_policy"`
	AllowedHosts  []string        `json:"allowed_hosts"`
	Priority      int             `json:"priority"`
	TimeoutMS     int             `json:"timeout_ms"`
	Module        ModuleInfo      `json:"module"`
	CreatedBy     *uuid.UUID      `json:"created_by"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
	ETag          string          `json:"etag"`
	Revision      int64           `json:"-"`
	// SigningSecret is the HMAC key of the plugin's webhooks. It is only
	// set in the response of the upload that created the plugin.
	SigningSecret string `json:"signing_secret,omitempty"`
}

// ModuleInfo describes the current version's module.
type ModuleInfo struct {
	Size     int       `json:"size"`
	SHA256   string    `json:"sha256"`
	Uploaded time.Time `json:"uploaded_at"`
}

type pluginRow struct {
	ID            uuid.UUID  `gorm:"column:id"`
	Name          string     `gorm:"column:name"`
	Enabled       bool       `gorm:"column:enabled"`
	Version       int        `gorm:"column:current_version"`
	Config        string     `gorm:"column:config"`
	FailurePolicy string     `gorm:"column:failure_policy"`
	AllowedHosts  string     `gorm:"column:allowed_hosts"`
	Priority      int        `gorm:"column:priority"`
	TimeoutMS     int        `gorm:"column:timeout_ms"`
	Revision      int64      `gorm:"column:revision"`
	CreatedBy     *uuid.UUID `gorm:"column:created_by"`
	CreatedAt     time.Time  `gorm:"column:created_at"`
	UpdatedAt     time.Time  `gorm:"column:updated_at"`
	Hooks         string     `gorm:"column:hooks"`
	Size          int        `gorm:"column:size"`
	SHA256        string     `gorm:"column:sha256"`
	Uploaded      time.Time  `gorm:"column:uploaded_at"`
}

const pluginSelect = `SELECT p.id, p.name, p.enabled, p.current_version, p.config::text AS config, p.failure_policy,
	p.allowed_hosts::text AS allowed_hosts, p.priority, p.timeout_ms, p.revision, p.created_by, p.created_at, p.updated_at,
	v.hooks::text AS hooks, v.size, v.sha256, v.created_at AS uploaded_at
	FROM public.plugins p JOIN public.plugin_versions v ON v.plugin_id = p.id AND v.version = p.current_version`

func (row *pluginRow) info() *PluginInfo {
	p := &PluginInfo{ID: row.ID, Name: row.Name, Enabled: row.Enabled, Version: row.Version,
		Config: json.RawMessage(row.Config), FailurePolicy: row.FailurePolicy, Priority: row.Priority,
		TimeoutMS: row.TimeoutMS, CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt.UTC(), UpdatedAt: row.UpdatedAt.UTC(),
		Module:   ModuleInfo{Size: row.Size, SHA256: row.SHA256, Uploaded: row.Uploaded.UTC()},
		ETag:     core.ETag(row.Revision),
		Revision: row.Revision,
	}
	_ = json.Unmarshal([]byte(row.Hooks), &p.Hooks)
	_ = json.Unmarshal([]byte(row.AllowedHosts), &p.AllowedHosts)
	if p.AllowedHosts == nil {
		p.AllowedHosts = []string{}
	}
	return p
}

// Upload validates and compiles a module against the manifest and stores it:
// a new plugin (created is true and SigningSecret set), or a new version of
// the tenant's plugin of that name, whose settings the manifest replaces
// (enabled stays as it was). The signing secret is stored encrypted
// (secret.go). It returns EINVALID with the reason for a bad manifest or
// module, EQUOTA when the tenant has MaxPluginsPerTenant, and EUNAVAILABLE
// for a new plugin when the server has no PROMANAGE_SECRET_KEY.
func (r *Registry) Upload(ctx context.Context, tenantID uuid.UUID, actor core.Actor, wasm []byte, m Manifest) (info *PluginInfo, created bool, err error) {
	if err := m.Validate(); err != nil {
		return nil, false, invalidErr(err)
	}
	if m.FailurePolicy == "" {
		m.FailurePolicy = FailClosed
	}
	versionID, err := uuid.NewV7()
	if err != nil {
		return nil, false, err
	}
	key := versionID.String()
	if _, err := r.host.LoadFor(ctx, tenantID.String(), key, wasm, Manifest{Name: m.Name, Hooks: m.Hooks, TimeoutMS: m.TimeoutMS}); err != nil {
		return nil, false, invalidErr(err)
	}
	committed := false
	defer func() {
		if !committed {
			r.host.Unload(key)
		}
	}()
	sum := sha256.Sum256(wasm)
	config := "{}"
	if c := strings.TrimSpace(string(m.Config)); c != "" && c != "null" {
		config = c
	}
	hooks, _ := json.Marshal(m.Hooks)
	hosts, _ := json.Marshal(nonNil(m.AllowedHosts))
	manifest, _ := json.Marshal(Manifest{Name: m.Name, Hooks: m.Hooks, Config: json.RawMessage(config), FailurePolicy: m.FailurePolicy,
		AllowedHosts: m.AllowedHosts, Priority: m.Priority, TimeoutMS: m.TimeoutMS})
	var actorID *uuid.UUID
	if actor.UserID != uuid.Nil {
		actorID = &actor.UserID
	}
	var pluginID uuid.UUID
	var secret string
	err = r.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var cur []struct {
			ID      uuid.UUID `gorm:"column:id"`
			Version int       `gorm:"column:current_version"`
		}
		if err := tx.Raw("SELECT id, current_version FROM public.plugins WHERE tenant_id = ? AND name = ? FOR UPDATE", tenantID, m.Name).Scan(&cur).Error; err != nil {
			return err
		}
		version := 1
		if len(cur) == 0 {
			var n int64
			if err := tx.Raw("SELECT count(*) FROM public.plugins WHERE tenant_id = ?", tenantID).Scan(&n).Error; err != nil {
				return err
			}
			if n >= MaxPluginsPerTenant {
				return &core.Error{Code: core.EQUOTA, Message: fmt.Sprintf("a tenant may have at most %d plugins", MaxPluginsPerTenant)}
			}
			if r.secrets == nil {
				return &core.Error{Code: core.EUNAVAILABLE, Message: "new plugins cannot be uploaded: the server has no PROMANAGE_SECRET_KEY " +
					"to encrypt the plugin's webhook signing secret (new versions of existing plugins can still be uploaded)"}
			}
			if pluginID, err = uuid.NewV7(); err != nil {
				return err
			}
			if secret, err = newSigningSecret(); err != nil {
				return err
			}
			var sealed string
			if sealed, err = r.secrets.Seal(pluginID, secret); err != nil {
				return err
			}
			created = true
			if err := tx.Exec(`INSERT INTO public.plugins (id, tenant_id, name, enabled, current_version, config, failure_policy,
				allowed_hosts, priority, timeout_ms, signing_secret, revision, created_by)
				VALUES (?, ?, ?, true, 1, ?, ?, ?, ?, ?, ?, 1, ?)`,
				pluginID, tenantID, m.Name, config, m.FailurePolicy, string(hosts), m.Priority, m.TimeoutMS, sealed, actorID).Error; err != nil {
				return err
			}
		} else {
			pluginID, version = cur[0].ID, cur[0].Version+1
			if err := tx.Exec(`UPDATE public.plugins SET current_version = ?, config = ?, failure_policy = ?, allowed_hosts = ?,
				priority = ?, timeout_ms = ?, revision = revision + 1, updated_at = now() WHERE id = ?`,
				version, config, m.FailurePolicy, string(hosts), m.Priority, m.TimeoutMS, pluginID).Error; err != nil {
				return err
			}
		}
		if err := tx.Exec(`INSERT INTO public.plugin_versions (id, plugin_id, tenant_id, version, hooks, manifest, module, size, sha256, created_by)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			versionID, pluginID, tenantID, version, string(hooks), string(manifest), wasm, len(wasm), hex.EncodeToString(sum[:]), actorID).Error; err != nil {
			return err
		}
		if err := tx.Exec("DELETE FROM public.plugin_versions WHERE plugin_id = ? AND version <= ?", pluginID, version-keptVersions).Error; err != nil {
			return err
		}
		return r.audit(tx, tenantID, actor, "plugin.upload", pluginID, map[string]any{"name": m.Name, "version": version, "sha256": hex.EncodeToString(sum[:])})
	})
	if isUniqueViolation(err) {
		return nil, false, &core.Error{Code: core.ECONFLICT, Message: "a plugin named " + m.Name + " is being uploaded concurrently; retry"}
	}
	if err != nil {
		if core.ErrorCode(err) != core.EINTERNAL {
			return nil, false, err
		}
		return nil, false, fmt.Errorf("upload plugin %s: %w", m.Name, err)
	}
	committed = true
	r.markLoaded(tenantID, key)
	r.Invalidate(tenantID)
	info, err = r.Get(ctx, tenantID, pluginID)
	if err != nil {
		return nil, false, err
	}
	info.SigningSecret = secret
	return info, created, nil
}

func newSigningSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b), nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// invalidErr turns the host's and the manifest's errors into EINVALID.
func invalidErr(err error) error {
	var me *InvalidModuleError
	var fe *InvalidManifestError
	switch {
	case errors.As(err, &me):
		return core.Invalid(core.FieldError{Field: "module", Message: me.Reason})
	case errors.As(err, &fe):
		return core.Invalid(core.FieldError{Field: "manifest." + fe.Field, Message: fe.Reason})
	case errors.Is(err, ErrBusy):
		return &core.Error{Code: core.EUNAVAILABLE, Message: "the plugin host is busy compiling other modules; try again shortly", Err: err}
	}
	return err
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func (r *Registry) audit(tx *gorm.DB, tenantID uuid.UUID, actor core.Actor, action string, id uuid.UUID, details any) error {
	if r.opts.Audit == nil {
		return nil
	}
	return r.opts.Audit(tx, tenantID, actor, action, id.String(), details)
}

// List returns the tenant's plugins by name.
func (r *Registry) List(ctx context.Context, tenantID uuid.UUID) ([]*PluginInfo, error) {
	var rows []pluginRow
	if err := r.db.WithContext(ctx).Raw(pluginSelect+" WHERE p.tenant_id = ? ORDER BY p.name", tenantID).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	out := make([]*PluginInfo, len(rows))
	for i := range rows {
		out[i] = rows[i].info()
	}
	return out, nil
}

// Get returns one plugin. It returns ENOTFOUND if the tenant has no plugin
// with that id.
func (r *Registry) Get(ctx context.Context, tenantID, id uuid.UUID) (*PluginInfo, error) {
	var rows []pluginRow
	if err := r.db.WithContext(ctx).Raw(pluginSelect+" WHERE p.tenant_id = ? AND p.id = ?", tenantID, id).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("get plugin: %w", err)
	}
	if len(rows) == 0 {
		return nil, &core.Error{Code: core.ENOTFOUND, Message: "plugin not found"}
	}
	return rows[0].info(), nil
}

// PluginUpdate changes a plugin's settings; nil fields stay as they are.
type PluginUpdate struct {
	Enabled       *bool
	Config        *json.RawMessage
	FailurePolicy *string
	AllowedHosts  *[]string
	Priority      *int
	TimeoutMS     *int
}

// Update changes a plugin's settings if its revision is still revision. It
// returns ENOTFOUND, EPRECONDITION when the plugin changed meanwhile, and
// EINVALID for settings the manifest rules refuse.
func (r *Registry) Update(ctx context.Context, tenantID uuid.UUID, actor core.Actor, id uuid.UUID, revision int64, u PluginUpdate) (*PluginInfo, error) {
	cur, err := r.Get(ctx, tenantID, id)
	if err != nil {
		return nil, err
	}
	if cur.Revision != revision {
		return nil, &core.Error{Code: core.EPRECONDITION, Message: "If-Match does not match the plugin's ETag"}
	}
	m := Manifest{Name: cur.Name, Hooks: cur.Hooks, Config: cur.Config, FailurePolicy: cur.FailurePolicy,
		AllowedHosts: cur.AllowedHosts, Priority: cur.Priority, TimeoutMS: cur.TimeoutMS}
	enabled := cur.Enabled
	changed := []string{}
	if u.Enabled != nil {
		enabled = *u.Enabled
		changed = append(changed, "enabled")
	}
	if u.Config != nil {
		m.Config = *u.Config
		if c := strings.TrimSpace(string(m.Config)); c == "" || c == "null" {
			m.Config = json.RawMessage("{}")
		}
		changed = append(changed, "config")
	}
	if u.FailurePolicy != nil {
		m.FailurePolicy = *u.FailurePolicy
		changed = append(changed, "failure_policy")
	}
	if u.AllowedHosts != nil {
		m.AllowedHosts = nonNil(*u.AllowedHosts)
		changed = append(changed, "allowed_hosts")
	}
	if u.Priority != nil {
		m.Priority = *u.Priority
		changed = append(changed, "priority")
	}
	if u.TimeoutMS != nil {
		m.TimeoutMS = *u.TimeoutMS
		changed = append(changed, "timeout_ms")
	}
	if m.FailurePolicy == "" {
		return nil, core.Invalid(core.FieldError{Field: "failure_policy", Message: fmt.Sprintf("must be %q or %q", FailClosed, FailOpen)})
	}
	if err := m.Validate(); err != nil {
		var fe *InvalidManifestError
		if errors.As(err, &fe) {
			return nil, core.Invalid(core.FieldError{Field: fe.Field, Message: fe.Reason})
		}
		return nil, err
	}
	if max := r.host.Options().MaxTimeout; time.Duration(m.TimeoutMS)*time.Millisecond > max {
		return nil, core.Invalid(core.FieldError{Field: "timeout_ms", Message: fmt.Sprintf("must be at most %d", max.Milliseconds())})
	}
	hosts, _ := json.Marshal(m.AllowedHosts)
	err = r.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Exec(`UPDATE public.plugins SET enabled = ?, config = ?, failure_policy = ?, allowed_hosts = ?, priority = ?,
			timeout_ms = ?, revision = revision + 1, updated_at = now() WHERE id = ? AND tenant_id = ? AND revision = ?`,
			enabled, string(m.Config), m.FailurePolicy, string(hosts), m.Priority, m.TimeoutMS, id, tenantID, revision)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return &core.Error{Code: core.EPRECONDITION, Message: "If-Match does not match the plugin's ETag"}
		}
		return r.audit(tx, tenantID, actor, "plugin.update", id, map[string]any{"name": cur.Name, "changed": changed, "enabled": enabled})
	})
	if err != nil {
		if core.ErrorCode(err) != core.EINTERNAL {
			return nil, err
		}
		return nil, fmt.Errorf("update plugin: %w", err)
	}
	r.Invalidate(tenantID)
	return r.Get(ctx, tenantID, id)
}

// Delete removes a plugin with all its versions, invocation records and
// delivery records. It returns ENOTFOUND if the tenant has no such plugin.
func (r *Registry) Delete(ctx context.Context, tenantID uuid.UUID, actor core.Actor, id uuid.UUID) error {
	var name string
	err := r.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var names []string
		if err := tx.Raw("DELETE FROM public.plugins WHERE id = ? AND tenant_id = ? RETURNING name", id, tenantID).Scan(&names).Error; err != nil {
			return err
		}
		if len(names) == 0 {
			return &core.Error{Code: core.ENOTFOUND, Message: "plugin not found"}
		}
		name = names[0]
		if err := tx.Exec("DELETE FROM public.plugin_invocations WHERE tenant_id = ? AND plugin_id = ?", tenantID, id).Error; err != nil {
			return err
		}
		return r.audit(tx, tenantID, actor, "plugin.delete", id, map[string]any{"name": name})
	})
	if err != nil {
		if core.ErrorCode(err) != core.EINTERNAL {
			return err
		}
		return fmt.Errorf("delete plugin: %w", err)
	}
	r.Invalidate(tenantID)
	return nil
}

// activePlugin is one enabled plugin of a tenant with its current version.
type activePlugin struct {
	ID            uuid.UUID
	Name          string
	VersionID     uuid.UUID
	Version       int
	Hooks         []string
	Config        json.RawMessage
	FailurePolicy string
	AllowedHosts  []string
	Priority      int
	TimeoutMS     int
	// Secret is the stored signing secret (sealed, or legacy clear text):
	// it is opened only to sign a delivery.
	Secret string
}

func (a *activePlugin) key() string { return a.VersionID.String() }

func (a *activePlugin) timeout() time.Duration { return time.Duration(a.TimeoutMS) * time.Millisecond }

// tenantEntry caches a tenant's enabled plugins, ordered by priority then
// name, and remembers which versions this process loaded for the tenant so
// versions no longer current are unloaded.
type tenantEntry struct {
	mu       sync.Mutex
	loadedAt time.Time
	slug     string
	active   []*activePlugin
	loaded   map[string]bool
}

// Invalidate drops the cached plugin set of a tenant (after a change).
func (r *Registry) Invalidate(tenantID uuid.UUID) {
	r.mu.Lock()
	e := r.tenants[tenantID]
	r.mu.Unlock()
	if e != nil {
		e.mu.Lock()
		e.loadedAt = time.Time{}
		e.mu.Unlock()
	}
}

type activeRow struct {
	ID            uuid.UUID `gorm:"column:id"`
	Name          string    `gorm:"column:name"`
	Config        string    `gorm:"column:config"`
	FailurePolicy string    `gorm:"column:failure_policy"`
	AllowedHosts  string    `gorm:"column:allowed_hosts"`
	Priority      int       `gorm:"column:priority"`
	TimeoutMS     int       `gorm:"column:timeout_ms"`
	Secret        string    `gorm:"column:signing_secret"`
	VersionID     uuid.UUID `gorm:"column:version_id"`
	Version       int       `gorm:"column:version"`
	Hooks         string    `gorm:"column:hooks"`
}

// active returns the tenant's slug and enabled plugins (one query when the
// cache is stale; none otherwise).
func (r *Registry) active(ctx context.Context, tenantID uuid.UUID) (string, []*activePlugin, error) {
	return r.activeSince(ctx, tenantID, time.Time{})
}

// clockSkew is the margin between the database's clock (an event's
// occurred_at) and this process's.
const clockSkew = time.Second

// activeSince is active with a cache entry only trusted if it was read after
// since (plus clock skew): an event is handled by exactly the plugins enabled
// when it occurred, even if another process changed them a moment before.
func (r *Registry) activeSince(ctx context.Context, tenantID uuid.UUID, since time.Time) (string, []*activePlugin, error) {
	r.mu.Lock()
	e := r.tenants[tenantID]
	if e == nil {
		e = &tenantEntry{loaded: map[string]bool{}}
		r.tenants[tenantID] = e
	}
	r.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.loadedAt.IsZero() && time.Since(e.loadedAt) < r.opts.CacheTTL && (since.IsZero() || e.loadedAt.After(since.Add(clockSkew))) {
		return e.slug, e.active, nil
	}
	var rows []activeRow
	err := r.db.WithContext(ctx).Raw(`SELECT p.id, p.name, p.config::text AS config, p.failure_policy, p.allowed_hosts::text AS allowed_hosts,
		p.priority, p.timeout_ms, p.signing_secret, v.id AS version_id, v.version, v.hooks::text AS hooks
		FROM public.plugins p JOIN public.plugin_versions v ON v.plugin_id = p.id AND v.version = p.current_version
		WHERE p.tenant_id = ? AND p.enabled`, tenantID).Scan(&rows).Error
	if err != nil {
		return "", nil, fmt.Errorf("load plugins of tenant %s: %w", tenantID, err)
	}
	slug := e.slug
	if len(rows) > 0 && slug == "" {
		if err := r.db.WithContext(ctx).Raw("SELECT slug FROM public.tenants WHERE id = ?", tenantID).Scan(&slug).Error; err != nil {
			return "", nil, fmt.Errorf("load tenant %s: %w", tenantID, err)
		}
	}
	list := make([]*activePlugin, 0, len(rows))
	current := map[string]bool{}
	for i := range rows {
		if IsLegacySecret(rows[i].Secret) {
			rows[i].Secret = r.upgradeSecret(ctx, rows[i].ID, rows[i].Secret)
		}
	}
	for _, row := range rows {
		a := &activePlugin{ID: row.ID, Name: row.Name, VersionID: row.VersionID, Version: row.Version, Config: json.RawMessage(row.Config),
			FailurePolicy: row.FailurePolicy, Priority: row.Priority, TimeoutMS: row.TimeoutMS, Secret: row.Secret}
		_ = json.Unmarshal([]byte(row.Hooks), &a.Hooks)
		_ = json.Unmarshal([]byte(row.AllowedHosts), &a.AllowedHosts)
		list = append(list, a)
		current[a.key()] = true
	}
	slices.SortFunc(list, func(a, b *activePlugin) int {
		if a.Priority != b.Priority {
			return a.Priority - b.Priority
		}
		return strings.Compare(a.Name, b.Name)
	})
	for key := range e.loaded {
		if !current[key] {
			r.host.Unload(key)
			delete(e.loaded, key)
		}
	}
	e.slug, e.active, e.loadedAt = slug, list, time.Now()
	return slug, list, nil
}

func handling(list []*activePlugin, hook string) []*activePlugin {
	var out []*activePlugin
	for _, a := range list {
		if slices.Contains(a.Hooks, hook) {
			out = append(out, a)
		}
	}
	return out
}

// plugin returns the loaded plugin of a version, loading its module from the
// database on first use in this process.
func (r *Registry) plugin(ctx context.Context, tenantID uuid.UUID, name string, versionID uuid.UUID, hooks []string) (*Plugin, error) {
	key := versionID.String()
	if p := r.host.Plugin(key); p != nil {
		return p, nil
	}
	var mod struct {
		Module []byte `gorm:"column:module"`
	}
	if err := r.db.WithContext(ctx).Raw("SELECT module FROM public.plugin_versions WHERE id = ? AND tenant_id = ?", versionID, tenantID).Scan(&mod).Error; err != nil {
		return nil, fmt.Errorf("load plugin %s module: %w", name, err)
	}
	if len(mod.Module) == 0 {
		return nil, fmt.Errorf("plugin %s: version %s: %w", name, versionID, ErrClosed)
	}
	p, err := r.host.LoadFor(ctx, tenantID.String(), key, mod.Module, Manifest{Name: name, Hooks: hooks})
	if err != nil {
		return nil, err
	}
	r.markLoaded(tenantID, key)
	return p, nil
}

// markLoaded remembers that this process loaded a version for the tenant, so
// the next refresh of the tenant's set unloads it once it is not current.
func (r *Registry) markLoaded(tenantID uuid.UUID, key string) {
	r.mu.Lock()
	e := r.tenants[tenantID]
	if e == nil {
		e = &tenantEntry{loaded: map[string]bool{}}
		r.tenants[tenantID] = e
	}
	r.mu.Unlock()
	e.mu.Lock()
	e.loaded[key] = true
	e.mu.Unlock()
}

// call runs one hook of an active plugin, loading it if needed, and retries
// once if the version was unloaded meanwhile (a concurrent cache refresh).
// It first waits (at most SlotWait) for a call slot of the tenant and of the
// process, so the host's own short wait for a slot is not what decides
// under load; no slot in time is ErrBusy.
func (r *Registry) call(ctx context.Context, tenantID uuid.UUID, a *activePlugin, hook string, input []byte) (*Invocation, error) {
	release, err := r.slots.acquire(ctx, tenantID)
	if err != nil {
		return nil, fmt.Errorf("plugin %s %s: %w", a.Name, hook, err)
	}
	defer release()
	for attempt := 0; ; attempt++ {
		p, err := r.plugin(ctx, tenantID, a.Name, a.VersionID, a.Hooks)
		if err != nil {
			return nil, err
		}
		inv, err := r.host.CallTimeout(ctx, p, tenantID.String(), hook, input, a.timeout())
		if errors.Is(err, ErrClosed) && attempt == 0 && inv == nil {
			continue
		}
		return inv, err
	}
}

// RunValidation runs the tenant's enabled plugins that handle req.Hook, in
// priority-then-name order, each under its own deadline; the first
// rejection wins. The plugins get req as ABI.md's JSON input: core loaded
// everything in it (the project context included), so nothing here reads
// the database but the cached plugin list. A plugin that fails (timeout,
// trap, bad output, ...) rejects the change if its failure policy is
// fail_closed and is skipped if fail_open; one that could not get a call
// slot in time (ErrBusy) is skipped if fail_open and otherwise answers
// EUNAVAILABLE (503: the platform, not the plugin, is short of capacity).
// Each call is recorded in the invocation log asynchronously. An error means
// the change must not proceed.
func (r *Registry) RunValidation(ctx context.Context, tenantID uuid.UUID, req core.ValidationRequest) (core.Verdict, error) {
	hook := string(req.Hook)
	slug, all, err := r.active(ctx, tenantID)
	if err != nil {
		return core.Verdict{}, err
	}
	list := handling(all, hook)
	if len(list) == 0 {
		return core.Verdict{Allowed: true}, nil
	}
	input, err := json.Marshal(req.Input)
	if err != nil {
		return core.Verdict{}, fmt.Errorf("run %s: encode input: %w", hook, err)
	}
	var current, project json.RawMessage
	if req.Current != nil {
		if current, err = json.Marshal(req.Current); err != nil {
			return core.Verdict{}, fmt.Errorf("run %s: encode current: %w", hook, err)
		}
	}
	if req.Project != nil && req.Hook != core.HookProjectValidate {
		if project, err = json.Marshal(req.Project); err != nil {
			return core.Verdict{}, fmt.Errorf("run %s: encode project: %w", hook, err)
		}
	}
	if req.Hook == core.HookDocumentValidate {
		input = capFirstBytes(input)
	}
	patched := false
	for _, a := range list {
		in := ValidationInput{Hook: hook, Tenant: slug, Config: a.Config, Operation: string(req.Operation),
			Input: input, Current: current, Project: project}
		b, err := in.Encode()
		if err != nil {
			return core.Verdict{}, fmt.Errorf("run %s: %w", hook, err)
		}
		inv, err := r.call(ctx, tenantID, a, hook, b)
		var res *ValidationResult
		if err == nil {
			res, err = DecodeValidationResult(inv.Output)
		}
		r.record(tenantID, a.ID, a.Version, hook, inv, res, nil, err, false, nil)
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return core.Verdict{}, fmt.Errorf("run %s: %w", hook, ctx.Err())
			}
			if a.FailurePolicy == FailOpen {
				slog.WarnContext(ctx, "validation plugin failed; fail_open lets the change through",
					"tenant_id", tenantID, "plugin", a.Name, "hook", hook, "err", err)
				continue
			}
			if errors.Is(err, ErrBusy) {
				return core.Verdict{}, &core.Error{Code: core.EUNAVAILABLE, Err: err,
					Message: fmt.Sprintf("plugin %s could not run: the tenant's plugins are at their concurrency limit; retry shortly", a.Name)}
			}
			return core.Verdict{Allowed: false, Plugin: a.Name,
				Message: fmt.Sprintf("plugin %s failed (%s) and its failure policy is fail_closed: the change was not applied", a.Name, FailureReason(err))}, nil
		}
		if !res.Allow {
			return core.Verdict{Allowed: false, Plugin: a.Name, Message: res.Message}, nil
		}
		if len(res.Patch) > 0 && string(res.Patch) != "null" {
			// Later plugins see the patched input; core validates the
			// result again with its own rules.
			merged, err := MergePatch(input, res.Patch)
			if err != nil {
				return core.Verdict{Allowed: false, Plugin: a.Name,
					Message: fmt.Sprintf("plugin %s returned an invalid patch: %v", a.Name, err)}, nil
			}
			input, patched = merged, true
		}
	}
	v := core.Verdict{Allowed: true}
	if patched {
		v.Patched = input
	}
	return v, nil
}

// MergePatch applies a JSON merge patch (RFC 7396) to a JSON document.
func MergePatch(doc, patch json.RawMessage) (json.RawMessage, error) {
	var d, p any
	if len(doc) > 0 {
		if err := unmarshalNumbers(doc, &d); err != nil {
			return nil, fmt.Errorf("document: %w", err)
		}
	}
	if err := unmarshalNumbers(patch, &p); err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	return json.Marshal(mergeValue(d, p))
}

// unmarshalNumbers is json.Unmarshal into an any that keeps numbers as
// their text (json.Number): through float64, integers past 2^53 (money in
// minor units) would come back rounded.
func unmarshalNumbers(b []byte, v *any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON: data after the value")
	}
	return nil
}

func mergeValue(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergeValue(tm[k], v)
	}
	return tm
}

// FailureReason is a short, client-safe description of a plugin failure.
func FailureReason(err error) string {
	switch {
	case errors.Is(err, ErrTimeout):
		return "timed out"
	case errors.Is(err, ErrMemoryLimit):
		return "exceeded its memory limit"
	case errors.Is(err, ErrTrap):
		return "trapped"
	case errors.Is(err, ErrOutputTooLarge):
		return "output too large"
	case errors.Is(err, ErrInvalidOutput):
		return "invalid output"
	case errors.Is(err, ErrPluginFailed):
		_, msg, _ := strings.Cut(err.Error(), ErrPluginFailed.Error()+": ")
		return "reported an error: " + clip(msg)
	case errors.Is(err, ErrInputTooLarge):
		return "input too large"
	case errors.Is(err, ErrBusy):
		return "no capacity to run it in time"
	case errors.Is(err, ErrHookNotDeclared):
		return "hook not declared"
	case errors.Is(err, ErrClosed):
		return "unloaded"
	}
	var me *InvalidModuleError
	if errors.As(err, &me) {
		return "module cannot be loaded: " + clip(me.Reason)
	}
	return "could not be run"
}

// capFirstBytes keeps at most the first 4 KiB of first_bytes_base64.
func capFirstBytes(input json.RawMessage) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(input, &obj) != nil {
		return input
	}
	raw, ok := obj["first_bytes_base64"]
	if !ok {
		return input
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return input
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) <= maxFirstBytes {
		return input
	}
	obj["first_bytes_base64"], _ = json.Marshal(base64.StdEncoding.EncodeToString(b[:maxFirstBytes]))
	out, err := json.Marshal(obj)
	if err != nil {
		return input
	}
	return out
}
