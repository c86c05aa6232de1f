package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"gocloud.dev/blob"
	"gorm.io/gorm"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/identity"
	"github.com/promanage/promanage/plugins"
	"github.com/promanage/promanage/rbac"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

// app is the set of long-lived dependencies shared by serve, worker and dev.
type app struct {
	cfg         Config
	db          *gorm.DB
	redis       redis.UniversalClient // nil without PROMANAGE_REDIS_URL
	registry    *tenant.Registry
	enforcers   *rbac.Enforcers
	invalidator *rbac.Invalidator
	events      core.EventSink
	bucket      *blob.Bucket // documents, from PROMANAGE_BLOB_URL
	pluginSys   pluginSystem // plugin host and registry, see wire_plugins.go
	// metrics is the process's Prometheus registry (metrics.go), served on
	// PROMANAGE_METRICS_ADDR; pluginMetrics counts plugin invocations in it.
	metrics       *api.Metrics
	pluginMetrics *plugins.Metrics
}

// outboxConsumers are the worker's consumers; every event gets one delivery
// row per consumer.
var outboxConsumers = []string{"notifications"}

func openApp(ctx context.Context, cfg Config) (*app, error) {
	dbo, err := cfg.dbOptions()
	if err != nil {
		return nil, err
	}
	db, err := tenant.OpenDB(ctx, cfg.DatabaseURL, dbo)
	if err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, db: db, registry: tenant.NewRegistry(db, nil), events: core.EventSink{Consumers: outboxConsumers}}
	if a.metrics, a.pluginMetrics, err = newMetrics(db); err != nil {
		a.close()
		return nil, err
	}
	if cfg.RedisURL != "" {
		if a.redis, err = openRedis(cfg.RedisURL); err != nil {
			a.close()
			return nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := a.redis.Ping(pctx).Err(); err != nil {
			slog.Warn("redis does not answer yet; continuing (readiness reports it)", "err", err)
		}
	} else {
		slog.Warn("PROMANAGE_REDIS_URL is not set: using in-process session cache and invalidation; run ONE replica only")
	}
	a.enforcers, err = rbac.NewEnforcers(db, nil)
	if err != nil {
		a.close()
		return nil, err
	}
	a.invalidator = &rbac.Invalidator{Redis: a.redis, Enforcers: a.enforcers, OnChange: func(uuid.UUID) { a.registry.InvalidateAll() }}
	if a.bucket, err = storage.OpenBucket(ctx, cfg.blobURL()); err != nil {
		a.close()
		return nil, err
	}
	if err := a.checkDocumentConfig(); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// dbOptions are the pool's size, bounded waits, statement mode and pooler
// from the configuration.
func (c *Config) dbOptions() (*tenant.DBOptions, error) {
	o, err := c.connOptions()
	if err != nil {
		return nil, err
	}
	o.MaxOpenConns, o.AcquireTimeout = c.DBMaxConns, c.DBAcquireTimeout
	o.StatementTimeout, o.LockTimeout, o.IdleInTransactionTimeout = c.DBStatementTimeout, c.DBLockTimeout, c.DBIdleInTxTimeout
	return o, nil
}

// connOptions are the statement mode and the pooler, the options every
// pool on PROMANAGE_DATABASE_URL takes (migrate's too).
func (c *Config) connOptions() (*tenant.DBOptions, error) {
	mode, err := tenant.ParseStatementMode(c.DBStatementMode)
	if err != nil {
		return nil, fmt.Errorf("PROMANAGE_DB_STATEMENT_MODE: %w", err)
	}
	pooler, err := tenant.ParsePooler(c.DBPooler)
	if err != nil {
		return nil, fmt.Errorf("PROMANAGE_DB_POOLER: %w", err)
	}
	return &tenant.DBOptions{StatementMode: mode, Pooler: pooler}, nil
}

func (a *app) close() {
	a.pluginSys.close()
	if a.bucket != nil {
		a.bucket.Close()
	}
	if a.redis != nil {
		a.redis.Close()
	}
	if a.db != nil {
		tenant.SQLDB(a.db).Close()
	}
}

// readyChecks are the dependencies /readyz reports on, for the API and the
// worker alike: only the database pool is required (RATIONALE.md,
// "Readiness"); Kratos, the bucket and Redis are reported.
func (a *app) readyChecks() []api.ReadyCheck {
	checks := []api.ReadyCheck{
		{Name: "postgres", Required: true, Check: func(ctx context.Context) error { return tenant.Ping(ctx, a.db) }},
		{Name: "kratos", Check: func(ctx context.Context) error { return httpOK(ctx, a.cfg.KratosPublicURL+"/health/ready") }},
	}
	checks = append(checks, api.ReadyCheck{Name: "bucket", Check: func(ctx context.Context) error {
		ok, err := a.bucket.IsAccessible(ctx)
		if err == nil && !ok {
			err = fmt.Errorf("bucket not accessible")
		}
		return err
	}})
	if a.redis != nil {
		checks = append(checks, api.ReadyCheck{Name: "redis", Check: func(ctx context.Context) error { return a.redis.Ping(ctx).Err() }})
	}
	return checks
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return nil
}

// server builds the API on the app's dependencies.
func (a *app) server() *api.Server {
	var cache identity.SessionCache
	if a.redis != nil {
		cache = identity.NewRedisCache(a.redis)
	}
	auth := identity.NewAuthenticator(identity.Options{KratosPublicURL: a.cfg.KratosPublicURL, KratosAdminURL: a.cfg.KratosAdminURL,
		Cache: cache, DB: a.db, SharedTTL: a.cfg.SessionCacheTTL})
	policies := &api.PolicyStore{Enforcers: a.enforcers, Notify: a.invalidator.Publish}
	grace := time.Duration(a.cfg.TenantDeleteDays) * 24 * time.Hour
	return api.New(api.Deps{
		DB:        a.db,
		Registry:  a.registry,
		Auth:      auth,
		Enforcers: a.enforcers,
		Tenants: &core.TenantService{DB: a.db, Registry: a.registry, Policies: policies, Events: a.events, DeleteGrace: grace,
			MaxOwnedPerUser: a.cfg.TenantsPerUser},
		Members:   &core.MemberService{DB: a.db, Policies: policies, Events: a.events},
		Projects:  &core.ProjectService{DB: a.db, Events: a.events, Hooks: a.validationHooks()},
		Audit:     &core.AuditService{DB: a.db},
		Ready:     a.readyChecks(),
		Metrics:   a.metrics,
		Work:      a.workDeps(),
		Documents: a.documentDeps(),
		Plugins:   a.pluginDeps(),
		Access:    a.accessDeps(),
	}, &api.Options{AllowedOrigins: a.cfg.origins(), TrustedProxies: a.cfg.trustedProxies()})
}

// checkSchema refuses to serve a database whose public schema is behind.
func (a *app) checkSchema(ctx context.Context) error {
	var current int
	err := a.db.WithContext(ctx).Raw("SELECT coalesce(max(version), 0) FROM public.schema_migrations").Scan(&current).Error
	if err != nil || current < len(tenant.PublicMigrations()) {
		return fmt.Errorf("the database schema is not up to date: run `promanage migrate` first")
	}
	return nil
}

// clusterStateReload is how often a Redis Cluster client re-reads the slot
// map while it is in use. go-redis re-reads it on MOVED and ASK answers but
// not when a master stops answering, and its default is a minute: after a
// failover, the keys of the failed master's slots (a third of rate limits,
// cached sessions and idempotency keys on three masters) would fail for up
// to that long. Reading it is one CLUSTER SLOTS per process per period.
const clusterStateReload = 2 * time.Second

// openRedis opens PROMANAGE_REDIS_URL: redis:// or rediss:// (one server,
// go-redis' ParseURL), or redis+cluster:// or rediss+cluster:// (a Redis
// Cluster: the URL's host and every addr= parameter are seed nodes, with
// go-redis' ParseClusterURL options; the cluster has no database number).
func openRedis(rawURL string) (redis.UniversalClient, error) {
	redisLogOnce.Do(func() { redis.SetLogger(redisLogger{}) })
	for _, scheme := range []string{"redis", "rediss"} {
		if rest, ok := strings.CutPrefix(rawURL, scheme+"+cluster://"); ok {
			u, err := url.Parse(scheme + "://" + rest)
			if err != nil {
				return nil, fmt.Errorf("parse redis cluster url: %w", err)
			}
			if u.Path != "" && u.Path != "/" && u.Path != "/0" {
				return nil, fmt.Errorf("parse redis cluster url: a Redis Cluster has only database 0, not %s", strings.TrimPrefix(u.Path, "/"))
			}
			opt, err := redis.ParseClusterURL(scheme + "://" + rest)
			if err != nil {
				return nil, fmt.Errorf("parse redis cluster url: %w", err)
			}
			opt.ClusterStateReloadInterval = clusterStateReload
			return redis.NewClusterClient(opt), nil
		}
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	return redis.NewClient(opt), nil
}

var redisLogOnce sync.Once

// redisLogger sends go-redis' own messages (dial failures, ...) to the
// structured log instead of plain lines on stderr; repeated dial failures
// while Redis is down are rate-limited to one line per second.
type redisLogger struct{}

var redisLogLast atomic.Int64

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	now := time.Now().UnixNano()
	if last := redisLogLast.Load(); now-last < int64(time.Second) || !redisLogLast.CompareAndSwap(last, now) {
		return
	}
	slog.WarnContext(ctx, "redis client", "msg", fmt.Sprintf(format, v...))
}
