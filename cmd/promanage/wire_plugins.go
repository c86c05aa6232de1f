package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/plugins"
	"github.com/promanage/promanage/tenant"
)

// pluginRetention is how long invocation and delivery records are kept.
const pluginRetention = 30 * 24 * time.Hour

// pluginSystems holds the one plugin registry (and wazero runtime) of each
// app: serve, worker and dev share an app, and every area's services call
// validationHooks(), so they must all get the same runner.
// pluginSystem is the app's plugin host and registry, created on first use
// and closed with the app.
type pluginSystem struct {
	once     sync.Once
	host     *plugins.Host
	registry *plugins.Registry
}

func (ps *pluginSystem) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ps.registry != nil {
		ps.registry.Close(ctx) // flushes the invocation log
	}
	if ps.host != nil {
		ps.host.Close(ctx)
	}
}

// pluginOptions are the operator's sandbox limits from the configuration.
func (c *Config) pluginOptions() *plugins.Options {
	return &plugins.Options{
		CacheDir:           filepath.Join(c.DataDir, "wasm-cache"),
		MaxModuleBytes:     int64(c.PluginMaxModuleBytes),
		MaxMemoryPages:     uint32(max(c.PluginMaxMemoryMB, 0)) * 16, // 16 pages of 64 KiB per MiB
		PoolSize:           plugins.DefaultPoolSize,
		TenantConcurrency:  c.PluginTenantConcurrency,
		MaxConcurrentCalls: c.PluginMaxConcurrentCalls,
		ValidateTimeout:    c.PluginValidateTimeout,
		NotifyTimeout:      c.PluginNotifyTimeout,
		MaxTimeout:         c.PluginMaxTimeout,
		MaxConcurrentLoads: c.PluginMaxConcurrentLoads,
		CompileCPU:         c.PluginCompileCPU,
		CompileTimeout:     c.PluginCompileTimeout,
		MaxSandboxes:       c.PluginMaxSandboxes,
		SandboxMemoryMB:    c.PluginSandboxMemoryMB,
	}
}

func (c *Config) pluginAllowPrivate() bool {
	ok, _ := strconv.ParseBool(c.PluginAllowPrivate)
	return ok
}

// plugins returns the app's plugin registry, creating the plugin host on
// first use (compilation cache shared by its sandbox processes in
// <data-dir>/wasm-cache, or in a temporary directory if that one cannot be
// used).
func (a *app) plugins() *plugins.Registry {
	ps := &a.pluginSys
	ps.once.Do(func() {
		ctx := context.Background()
		opts := a.cfg.pluginOptions()
		host, err := plugins.NewHost(ctx, opts)
		if err != nil {
			slog.Warn("plugin compilation cache unavailable; caching compiled plugins in a temporary directory", "dir", opts.CacheDir, "err", err)
			opts.CacheDir = ""
			if host, err = plugins.NewHost(ctx, opts); err != nil {
				// Only a broken runtime gets here; plugins then fail like
				// any failing plugin, following their failure policy.
				slog.Error("plugin host unavailable", "err", err)
				return
			}
		}
		ps.host = host
		allowPrivate := a.cfg.pluginAllowPrivate()
		if allowPrivate {
			slog.Warn("PROMANAGE_PLUGIN_ALLOW_PRIVATE_ADDRESSES is on: plugin webhooks may reach private and loopback addresses (development only)")
		}
		if a.cfg.SecretKey == "" {
			slog.Warn("PROMANAGE_SECRET_KEY is not set: new plugins cannot be uploaded (their webhook signing secrets are stored encrypted with it)")
		}
		deliverer := plugins.NewDeliverer(&plugins.DelivererOptions{AllowPrivate: allowPrivate})
		// Hooks get their project context from core, loaded before the
		// change's transaction: the registry never reads a project itself.
		ps.registry = plugins.NewRegistry(a.db, host, deliverer, &plugins.RegistryOptions{
			CacheTTL:  a.cfg.PluginCacheTTL,
			SlotWait:  a.cfg.PluginSlotWait,
			SecretKey: []byte(a.cfg.SecretKey),
			Metrics:   a.pluginMetrics,
			Audit: func(tx *gorm.DB, tenantID uuid.UUID, actor core.Actor, action, pluginID string, details any) error {
				return core.RecordAudit(tx, tenant.ScopeOf(tenantID), actor, action, "plugin", pluginID, core.OutcomeSuccess, details)
			},
		})
	})
	return ps.registry
}

// pluginDeps wires the plugins area's services into the API.
func (a *app) pluginDeps() api.PluginDeps {
	return api.PluginDeps{Registry: a.plugins(), MaxModuleBytes: int64(a.cfg.PluginMaxModuleBytes)}
}

// pluginConsumers are the plugins area's outbox consumers (by name):
// "notifications" runs the event's tenant's notification plugins and
// delivers the webhooks they return.
func (a *app) pluginConsumers() map[string]core.Consumer {
	reg := a.plugins()
	if reg == nil {
		return map[string]core.Consumer{"notifications": core.ConsumerFunc(func(context.Context, core.Delivery) error {
			return errPluginHost
		})}
	}
	return map[string]core.Consumer{"notifications": reg.NotificationConsumer()}
}

var errPluginHost = &core.Error{Code: core.EUNAVAILABLE, Message: "the plugin host could not start"}

// pluginJobs are the plugins area's background jobs run by the worker:
// encrypting signing secrets still stored in clear (once, at start), and
// pruning invocation and delivery records past their retention.
func (a *app) pluginJobs() []func(ctx context.Context) error {
	reg := a.plugins()
	if reg == nil {
		return nil
	}
	return []func(ctx context.Context) error{func(ctx context.Context) error {
		if n, err := reg.UpgradeSecrets(ctx); err != nil && ctx.Err() == nil {
			slog.ErrorContext(ctx, "encrypt plugin signing secrets", "err", err)
		} else if n > 0 {
			slog.InfoContext(ctx, "encrypted plugin signing secrets stored in clear", "count", n)
		}
		return nil
	}, func(ctx context.Context) error {
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			if err := reg.Prune(ctx, pluginRetention); err != nil && ctx.Err() == nil {
				slog.ErrorContext(ctx, "prune plugin records", "err", err)
			}
			select {
			case <-ctx.Done():
				reg.Close(context.Background())
				return nil
			case <-t.C:
			}
		}
	}}
}

// validationHooks runs the tenants' validation plugins inside requests.
func (a *app) validationHooks() core.ValidationHooks {
	reg := a.plugins()
	if reg == nil {
		return core.ValidationHooks{Runner: unavailableRunner{}}
	}
	return core.ValidationHooks{Runner: reg}
}

// unavailableRunner refuses changes when the plugin host could not start:
// without it, no tenant's fail_closed plugin could be honoured.
type unavailableRunner struct{}

func (unavailableRunner) RunValidation(context.Context, uuid.UUID, core.ValidationRequest) (core.Verdict, error) {
	return core.Verdict{}, errPluginHost
}
