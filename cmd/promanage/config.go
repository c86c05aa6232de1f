package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
	DataDir          string
	LogLevel         string
	LogFormat        string
	AllowedOrigins   string
	SecretKey        string
	ShutdownTimeout  time.Duration
	DBMaxConns       int
	TenantDeleteDays int
	MigrateParallel  int
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
		{env: "PROMANAGE_REDIS_URL", flag: "redis-url", def: "", help: "Redis URL; empty runs with in-process equivalents (one replica only)", str: &c.RedisURL},
		{env: "PROMANAGE_BLOB_URL", flag: "blob-url", def: "", help: "document bucket URL (file://, mem://, s3://, gs://, azblob://); default file://<data-dir>/blobs", str: &c.BlobURL},
		{env: "PROMANAGE_KRATOS_PUBLIC_URL", flag: "kratos-public-url", def: "http://127.0.0.1:4433", help: "Ory Kratos public API", str: &c.KratosPublicURL},
		{env: "PROMANAGE_KRATOS_ADMIN_URL", flag: "kratos-admin-url", def: "http://127.0.0.1:4434", help: "Ory Kratos admin API", str: &c.KratosAdminURL},
		{env: "PROMANAGE_HTTP_ADDR", flag: "http-addr", def: "127.0.0.1:8080", help: "listen address of the API (and of the worker's health/metrics)", str: &c.HTTPAddr},
		{env: "PROMANAGE_DATA_DIR", flag: "data-dir", def: ".data", help: "directory for local state (file bucket, caches, dev cluster)", str: &c.DataDir},
		{env: "PROMANAGE_LOG_LEVEL", flag: "log-level", def: "info", help: "debug, info, warn or error", str: &c.LogLevel},
		{env: "PROMANAGE_LOG_FORMAT", flag: "log-format", def: "json", help: "json or text", str: &c.LogFormat},
		{env: "PROMANAGE_ALLOWED_ORIGINS", flag: "allowed-origins", def: "", help: "comma-separated origins allowed to send cookie-authenticated unsafe requests", str: &c.AllowedOrigins},
		{env: "PROMANAGE_SECRET_KEY", flag: "secret-key", def: "", help: "HMAC key for signed URLs and webhooks (required outside dev)", str: &c.SecretKey},
		{env: "PROMANAGE_SHUTDOWN_TIMEOUT", flag: "shutdown-timeout", def: "20s", help: "how long to drain in-flight requests on SIGTERM", dur: &c.ShutdownTimeout},
		{env: "PROMANAGE_DB_MAX_CONNS", flag: "db-max-conns", def: "20", help: "maximum open database connections per process", num: &c.DBMaxConns},
		{env: "PROMANAGE_TENANT_DELETE_GRACE_DAYS", flag: "tenant-delete-grace-days", def: "30", help: "days a deleted tenant is kept before it is purged", num: &c.TenantDeleteDays},
		{env: "PROMANAGE_MIGRATE_PARALLEL", flag: "migrate-parallel", def: "4", help: "tenant schemas migrated at once by `migrate`", num: &c.MigrateParallel},
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

func (c *Config) origins() []string {
	var out []string
	for _, o := range strings.Split(c.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}
