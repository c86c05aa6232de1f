package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/promanage/promanage/tenant"
)

// Config is every setting of the binary. Each field is read from its
// PROMANAGE_* environment variable and may be overridden by a flag; README.md
// documents them all (a test checks that the README names each one).
type Config struct {
	DatabaseURL      string
	RedisURL         string
	BlobURL          string
	KratosPublicURL  string
	KratosAdminURL   string
	HTTPAddr         string
	MetricsAddr      string
	DataDir          string
	LogLevel         string
	LogFormat        string
	AllowedOrigins   string
	SecretKey        string
	ShutdownTimeout  time.Duration
	DBMaxConns       int
	TenantDeleteDays int
	MigrateParallel  int
	// Documents (issue 5): platform defaults of the per-tenant limits.
	StorageQuotaBytes int
	MaxFileBytes      int
	// Access (issue 3): tokens, hooks and rate limits.
	JWKSURL         string
	JWTIssuer       string
	JWTAudience     string
	HookAPIKey      string
	RateLimitUser   int
	RateLimitTenant int
	RateLimitWindow time.Duration
	RateLimitAuth   int
	TrustedProxies  string
	PurgeInterval   time.Duration
	// Access hardening (issue 12): tenant creation limits.
	TenantsPerUser        int
	RateLimitTenantCreate int
	IdempotencyKeysPerDay int
	SessionCacheTTL       time.Duration
	// Plugins (issue 6): operator limits of the Wasm sandbox and webhooks.
	PluginAllowPrivate       string
	PluginMaxModuleBytes     int
	PluginMaxMemoryMB        int
	PluginValidateTimeout    time.Duration
	PluginNotifyTimeout      time.Duration
	PluginMaxTimeout         time.Duration
	PluginTenantConcurrency  int
	PluginMaxConcurrentCalls int
	PluginCacheTTL           time.Duration
	// Bounded waits (issue 11): no request waits on a saturated pool, a
	// lock, a plugin slot or a busy project longer than these.
	DBAcquireTimeout   time.Duration
	DBStatementTimeout time.Duration
	DBLockTimeout      time.Duration
	DBIdleInTxTimeout  time.Duration
	WriteQueueWait     time.Duration
	PluginSlotWait     time.Duration
	OutboxLease        time.Duration
	// Plugin sandbox (issue 10): compilation budgets and sandbox processes.
	PluginCompileCPU         time.Duration
	PluginCompileTimeout     time.Duration
	PluginMaxConcurrentLoads int
	PluginMaxSandboxes       int
	PluginSandboxMemoryMB    int
	// Scaling out (issue 15): a transaction pooler in front of PostgreSQL,
	// the direct URL for what needs a session, and the statement mode.
	DatabaseDirectURL string
	DBPooler          string
	DBStatementMode   string
}

type setting struct {
	env, flag, def, help string
	str                  *string
	dur                  *time.Duration
	num                  *int
}

func (c *Config) settings() []setting {
	return []setting{
		{env: "PROMANAGE_DATABASE_URL", flag: "database-url", def: "postgres://postgres@127.0.0.1:5432/promanage?sslmode=disable", help: "PostgreSQL URL", str: &c.DatabaseURL},
		{env: "PROMANAGE_DATABASE_DIRECT_URL", flag: "database-direct-url", def: "", help: "PostgreSQL URL that reaches the server itself, not a transaction pooler, for what needs a session (the worker's LISTEN, tenant export's lock); empty: the database URL", str: &c.DatabaseDirectURL},
		{env: "PROMANAGE_DB_POOLER", flag: "db-pooler", def: "none", help: "what is between ProManage and PostgreSQL: none, or transaction (PgBouncer with pool_mode=transaction: session timeouts come from the role and are checked, pooler-unsafe statement modes are refused)", str: &c.DBPooler},
		{env: "PROMANAGE_DB_STATEMENT_MODE", flag: "db-statement-mode", def: "exec", help: "how statements are sent (pgx): cache_statement, cache_describe, describe_exec, exec or simple_protocol; behind a transaction pooler only exec, simple_protocol and cache_describe", str: &c.DBStatementMode},
		{env: "PROMANAGE_REDIS_URL", flag: "redis-url", def: "", help: "Redis URL (redis://, rediss://), or redis+cluster://host:port?addr=host2:port&addr=... for a Redis Cluster; empty runs with in-process equivalents (one replica only)", str: &c.RedisURL},
		{env: "PROMANAGE_BLOB_URL", flag: "blob-url", def: "", help: "document bucket URL (file://, mem://, s3://, gs://, azblob://); default file://<data-dir>/blobs", str: &c.BlobURL},
		{env: "PROMANAGE_KRATOS_PUBLIC_URL", flag: "kratos-public-url", def: "http://127.0.0.1:4433", help: "Ory Kratos public API", str: &c.KratosPublicURL},
		{env: "PROMANAGE_KRATOS_ADMIN_URL", flag: "kratos-admin-url", def: "http://127.0.0.1:4434", help: "Ory Kratos admin API", str: &c.KratosAdminURL},
		{env: "PROMANAGE_HTTP_ADDR", flag: "http-addr", def: "127.0.0.1:8080", help: "listen address of the API (and of the worker's /healthz and /readyz)", str: &c.HTTPAddr},
		{env: "PROMANAGE_METRICS_ADDR", flag: "metrics-addr", def: "", help: "listen address of the Prometheus /metrics endpoint (api and worker), never the public port; empty serves no metrics (dev: 127.0.0.1:9091)", str: &c.MetricsAddr},
		{env: "PROMANAGE_DATA_DIR", flag: "data-dir", def: ".data", help: "directory for local state (file bucket, caches, dev cluster)", str: &c.DataDir},
		{env: "PROMANAGE_LOG_LEVEL", flag: "log-level", def: "info", help: "debug, info, warn or error", str: &c.LogLevel},
		{env: "PROMANAGE_LOG_FORMAT", flag: "log-format", def: "json", help: "json or text", str: &c.LogFormat},
		{env: "PROMANAGE_ALLOWED_ORIGINS", flag: "allowed-origins", def: "", help: "comma-separated origins allowed to send cookie-authenticated unsafe requests", str: &c.AllowedOrigins},
		{env: "PROMANAGE_SECRET_KEY", flag: "secret-key", def: "", help: "HMAC key for signed URLs and webhooks (required outside dev)", str: &c.SecretKey},
		{env: "PROMANAGE_SHUTDOWN_TIMEOUT", flag: "shutdown-timeout", def: "20s", help: "how long to drain in-flight requests on SIGTERM", dur: &c.ShutdownTimeout},
		{env: "PROMANAGE_DB_MAX_CONNS", flag: "db-max-conns", def: "20", help: "maximum open database connections per process", num: &c.DBMaxConns},
		{env: "PROMANAGE_TENANT_DELETE_GRACE_DAYS", flag: "tenant-delete-grace-days", def: "30", help: "days a deleted tenant is kept before it is purged", num: &c.TenantDeleteDays},
		{env: "PROMANAGE_STORAGE_QUOTA_BYTES", flag: "storage-quota-bytes", def: "53687091200", help: "default per-tenant document storage quota in bytes (50 GiB); a tenant's own setting overrides it", num: &c.StorageQuotaBytes},
		{env: "PROMANAGE_MAX_FILE_BYTES", flag: "max-file-bytes", def: "2147483648", help: "default per-tenant limit of one document version in bytes (2 GiB)", num: &c.MaxFileBytes},
		{env: "PROMANAGE_MIGRATE_PARALLEL", flag: "migrate-parallel", def: "4", help: "tenant schemas migrated at once by `migrate`", num: &c.MigrateParallel},
		{env: "PROMANAGE_JWKS_URL", flag: "jwks-url", def: "", help: "public JWKS of Kratos' session tokenizer (file:// or https://); empty refuses JWTs", str: &c.JWKSURL},
		{env: "PROMANAGE_JWT_ISSUER", flag: "jwt-issuer", def: "", help: "required iss of JWTs; default the Kratos public URL", str: &c.JWTIssuer},
		{env: "PROMANAGE_JWT_AUDIENCE", flag: "jwt-audience", def: "promanage", help: "required aud of JWTs (set by the tokenizer's claims mapper); empty skips the check", str: &c.JWTAudience},
		{env: "PROMANAGE_HOOK_API_KEY", flag: "hook-api-key", def: "", help: "API key Kratos' web hooks send in X-Hook-Key; empty disables /v1/hooks/*", str: &c.HookAPIKey},
		{env: "PROMANAGE_RATE_LIMIT_USER", flag: "rate-limit-user", def: "1200", help: "requests per window per identity; 0 disables", num: &c.RateLimitUser},
		{env: "PROMANAGE_RATE_LIMIT_TENANT", flag: "rate-limit-tenant", def: "6000", help: "requests per window per tenant (all members together); 0 disables", num: &c.RateLimitTenant},
		{env: "PROMANAGE_RATE_LIMIT_AUTH_FAILURES", flag: "rate-limit-auth-failures", def: "100", help: "failed authentications per window per client address before its new credentials get 429 without a Kratos call; 0 disables", num: &c.RateLimitAuth},
		{env: "PROMANAGE_TRUSTED_PROXIES", flag: "trusted-proxies", def: "", help: "comma-separated IPs/CIDRs of load balancers whose X-Forwarded-For gives the client address", str: &c.TrustedProxies},
		{env: "PROMANAGE_RATE_LIMIT_WINDOW", flag: "rate-limit-window", def: "1m", help: "rate-limit window", dur: &c.RateLimitWindow},
		{env: "PROMANAGE_TENANTS_PER_USER", flag: "tenants-per-user", def: "10", help: "tenants one user may own (soft-deleted ones count until purged) when creating another through the API; 0 = no limit", num: &c.TenantsPerUser},
		{env: "PROMANAGE_RATE_LIMIT_TENANT_CREATE", flag: "rate-limit-tenant-create", def: "20", help: "tenant creations per hour per identity and per client address; 0 disables", num: &c.RateLimitTenantCreate},
		{env: "PROMANAGE_IDEMPOTENCY_KEYS_PER_DAY", flag: "idempotency-keys-per-day", def: "10000", help: "new Idempotency-Keys one identity may use per 24 h (each keeps an answer for 24 h); 0 = no limit", num: &c.IdempotencyKeysPerDay},
		{env: "PROMANAGE_SESSION_CACHE_TTL", flag: "session-cache-ttl", def: "4s", help: "how long a verified session (or a JWT's session) is trusted from the shared cache before Kratos is asked again (max 60s); a session revoked in Kratos stops working within this plus 1s", dur: &c.SessionCacheTTL},
		{env: "PROMANAGE_PURGE_INTERVAL", flag: "purge-interval", def: "10m", help: "how often the worker purges tenants whose deletion grace period ended", dur: &c.PurgeInterval},
		{env: "PROMANAGE_PLUGIN_ALLOW_PRIVATE_ADDRESSES", flag: "plugin-allow-private-addresses", def: "false", help: "let plugin webhooks reach loopback and private addresses (development and tests only: SSRF)", str: &c.PluginAllowPrivate},
		{env: "PROMANAGE_PLUGIN_MAX_MODULE_BYTES", flag: "plugin-max-module-bytes", def: "8388608", help: "largest plugin .wasm module accepted at upload", num: &c.PluginMaxModuleBytes},
		{env: "PROMANAGE_PLUGIN_MAX_MEMORY_MB", flag: "plugin-max-memory-mb", def: "16", help: "linear memory of one plugin instance, in MiB", num: &c.PluginMaxMemoryMB},
		{env: "PROMANAGE_PLUGIN_VALIDATE_TIMEOUT", flag: "plugin-validate-timeout", def: "100ms", help: "default deadline of a validation hook call", dur: &c.PluginValidateTimeout},
		{env: "PROMANAGE_PLUGIN_NOTIFY_TIMEOUT", flag: "plugin-notify-timeout", def: "2s", help: "default deadline of a notification hook call", dur: &c.PluginNotifyTimeout},
		{env: "PROMANAGE_PLUGIN_MAX_TIMEOUT", flag: "plugin-max-timeout", def: "5s", help: "largest timeout_ms a plugin manifest may ask for", dur: &c.PluginMaxTimeout},
		{env: "PROMANAGE_PLUGIN_TENANT_CONCURRENCY", flag: "plugin-tenant-concurrency", def: "4", help: "plugin calls running at once per tenant", num: &c.PluginTenantConcurrency},
		{env: "PROMANAGE_PLUGIN_MAX_CONCURRENT_CALLS", flag: "plugin-max-concurrent-calls", def: "64", help: "plugin calls running at once in the process, all tenants together", num: &c.PluginMaxConcurrentCalls},
		{env: "PROMANAGE_DB_ACQUIRE_TIMEOUT", flag: "db-acquire-timeout", def: "3s", help: "how long an operation waits for a free database connection before it answers 503", dur: &c.DBAcquireTimeout},
		{env: "PROMANAGE_DB_STATEMENT_TIMEOUT", flag: "db-statement-timeout", def: "15s", help: "statement_timeout of the pool's sessions (0 = server default)", dur: &c.DBStatementTimeout},
		{env: "PROMANAGE_DB_LOCK_TIMEOUT", flag: "db-lock-timeout", def: "3s", help: "lock_timeout of the pool's sessions: longest wait for a row or advisory lock before 503 (0 = server default)", dur: &c.DBLockTimeout},
		{env: "PROMANAGE_DB_IDLE_IN_TX_TIMEOUT", flag: "db-idle-in-tx-timeout", def: "15s", help: "idle_in_transaction_session_timeout of the pool's sessions (0 = server default)", dur: &c.DBIdleInTxTimeout},
		{env: "PROMANAGE_WRITE_QUEUE_WAIT", flag: "write-queue-wait", def: "3s", help: "how long a validated expense waits for its turn on a busy project in this process before it answers 503", dur: &c.WriteQueueWait},
		{env: "PROMANAGE_PLUGIN_SLOT_WAIT", flag: "plugin-slot-wait", def: "3s", help: "how long a plugin call waits for a free call slot (tenant and process caps) before a fail_closed validation answers 503", dur: &c.PluginSlotWait},
		{env: "PROMANAGE_OUTBOX_LEASE", flag: "outbox-lease", def: "60s", help: "how long a worker's claim of an outbox event is exclusive; a crashed worker's events are retried after it", dur: &c.OutboxLease},
		{env: "PROMANAGE_PLUGIN_COMPILE_CPU", flag: "plugin-compile-cpu", def: "8s", help: "CPU time a plugin module's compilation may take; a module needing more is refused (422)", dur: &c.PluginCompileCPU},
		{env: "PROMANAGE_PLUGIN_COMPILE_TIMEOUT", flag: "plugin-compile-timeout", def: "30s", help: "wall-clock time of a compilation; past it the upload answers 503 (machine too busy)", dur: &c.PluginCompileTimeout},
		{env: "PROMANAGE_PLUGIN_MAX_CONCURRENT_LOADS", flag: "plugin-max-concurrent-loads", def: "4", help: "plugin compilations at once in the process (one per tenant)", num: &c.PluginMaxConcurrentLoads},
		{env: "PROMANAGE_PLUGIN_MAX_SANDBOXES", flag: "plugin-max-sandboxes", def: "64", help: "plugin sandbox processes (one per loaded plugin version) per process", num: &c.PluginMaxSandboxes},
		{env: "PROMANAGE_PLUGIN_SANDBOX_MEMORY_MB", flag: "plugin-sandbox-memory-mb", def: "1024", help: "address space a plugin sandbox process may use beyond its runtime's start, in MiB", num: &c.PluginSandboxMemoryMB},
		{env: "PROMANAGE_PLUGIN_CACHE_TTL", flag: "plugin-cache-ttl", def: "2s", help: "how long a process trusts its cached list of a tenant's plugins (other replicas see a change within it)", dur: &c.PluginCacheTTL},
	}
}

// register adds the flags of every setting to fs, with the environment (or
// the default) as the flag's default.
func (c *Config) register(fs *flag.FlagSet) error {
	for _, s := range c.settings() {
		v, ok := os.LookupEnv(s.env)
		if !ok {
			v = s.def
		}
		help := s.help + " (env " + s.env + ")"
		switch {
		case s.str != nil:
			fs.StringVar(s.str, s.flag, v, help)
		case s.dur != nil:
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%s: %w", s.env, err)
			}
			fs.DurationVar(s.dur, s.flag, d, help)
		case s.num != nil:
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%s: %w", s.env, err)
			}
			fs.IntVar(s.num, s.flag, n, help)
		}
	}
	return nil
}

func (c *Config) blobURL() string {
	if c.BlobURL != "" {
		return c.BlobURL
	}
	abs, err := filepath.Abs(filepath.Join(c.DataDir, "blobs"))
	if err != nil {
		abs = filepath.Join(c.DataDir, "blobs")
	}
	return "file://" + abs + "?create_dir=true"
}

func (c *Config) origins() []string { return splitList(c.AllowedOrigins) }

// directURL is the URL that reaches PostgreSQL itself.
func (c *Config) directURL() string {
	if c.DatabaseDirectURL != "" {
		return c.DatabaseDirectURL
	}
	return c.DatabaseURL
}

// sessionURL is the URL for connections that need a session of their own
// (LISTEN, session advisory locks): the direct URL. Behind a transaction
// pooler it must be a different URL from the pooled one.
func (c *Config) sessionURL() (string, error) {
	pooler, err := tenant.ParsePooler(c.DBPooler)
	if err != nil {
		return "", err
	}
	if pooler == tenant.PoolerTransaction && (c.DatabaseDirectURL == "" || c.DatabaseDirectURL == c.DatabaseURL) {
		return "", fmt.Errorf("PROMANAGE_DB_POOLER=transaction: LISTEN and session advisory locks do not work through a transaction pooler; set PROMANAGE_DATABASE_DIRECT_URL to PostgreSQL itself")
	}
	return c.directURL(), nil
}

// defaultConfig returns the settings as the environment and the defaults
// give them, without flags.
func defaultConfig() (Config, error) {
	var c Config
	fs := flag.NewFlagSet("defaults", flag.ContinueOnError)
	if err := c.register(fs); err != nil {
		return c, err
	}
	return c, fs.Parse(nil)
}

func (c *Config) trustedProxies() []string { return splitList(c.TrustedProxies) }

func splitList(v string) []string {
	var out []string
	for _, o := range strings.Split(v, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}
