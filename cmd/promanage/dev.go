package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promanage/promanage/tenant"
)

// runDev is `make run`: it makes sure PostgreSQL answers (starting a private
// cluster under the data directory if needed), creates the databases, runs
// Kratos from bin/kratos with deploy/kratos, migrates, then serves the API
// and runs the worker until Ctrl-C, which stops everything it started.
func (m *Main) runDev(ctx context.Context, args []string) error {
	var kratosBin, kratosConfig string
	var secretsOnly, forTests bool
	if _, err := m.flags("dev", args, func(fs *flag.FlagSet) {
		fs.StringVar(&kratosBin, "kratos-bin", "bin/kratos", "Kratos binary (built by `make kratos`)")
		fs.StringVar(&kratosConfig, "kratos-config", "deploy/kratos/kratos.yml", "Kratos configuration (without secrets; dev adds its generated ones)")
		fs.BoolVar(&secretsOnly, "secrets-only", false, "generate the development secrets under <data-dir>/secrets if missing, print where, and exit")
		fs.BoolVar(&forTests, "for-tests", false, "with -secrets-only: secrets for the test Kratos of scripts/test.sh (marked as test secrets, which serve accepts)")
	}); err != nil {
		return err
	}
	if m.Config.LogFormat == "json" && os.Getenv("PROMANAGE_LOG_FORMAT") == "" {
		m.Config.LogFormat = "text"
		m.setupLogging()
	}
	// Dev runs with secrets and settings for one developer's machine: it
	// listens on loopback only, and never trusts a secret once committed.
	if err := checkLoopback(m.Config.HTTPAddr); err != nil {
		return err
	}
	if err := checkNoCommittedSecrets(m.Config); err != nil {
		return err
	}
	if err := os.MkdirAll(m.Config.DataDir, 0o750); err != nil {
		return err
	}
	// Secrets of this checkout, generated on first run (never committed).
	sec, err := ensureDevSecrets(filepath.Join(m.Config.DataDir, "secrets"), devSecretsOptions{
		ForTests:   forTests,
		HookURL:    "http://" + m.Config.HTTPAddr + "/v1/hooks/kratos/registration",
		HookAPIKey: m.Config.HookAPIKey,
		KratosDir:  filepath.Dir(kratosConfig),
	})
	if err != nil {
		return err
	}
	if secretsOnly {
		fmt.Fprintf(m.Stdout, "development secrets in %s\n  Kratos overlay  %s\n  public JWKS     %s\n", sec.Dir, sec.KratosConfig, sec.PublicJWKS)
		return nil
	}
	if m.Config.SecretKey == "" {
		m.Config.SecretKey = sec.SecretKey
	}
	m.Config.HookAPIKey = sec.HookAPIKey
	if m.Config.MetricsAddr == "" && os.Getenv("PROMANAGE_METRICS_ADDR") == "" {
		m.Config.MetricsAddr = "127.0.0.1:9091"
	}
	if err := checkLoopback(m.Config.MetricsAddr); err != nil {
		return err
	}
	if m.Config.JWKSURL == "" {
		m.Config.JWKSURL = "file://" + sec.PublicJWKS
	}
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()

	// 1. PostgreSQL.
	if err := pingPostgres(ctx, m.Config.DatabaseURL, "postgres"); err != nil {
		slog.Warn("no PostgreSQL answers at the configured URL; starting a private cluster", "err", err)
		dbURL, stop, err := startPrivatePostgres(ctx, m.Config.DataDir, m.Stderr)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
		m.Config.DatabaseURL = dbURL
	}
	kratosDSN, err := withDatabase(m.Config.DatabaseURL, "kratos")
	if err != nil {
		return err
	}
	for _, u := range []string{m.Config.DatabaseURL, kratosDSN} {
		if err := ensureDatabase(ctx, u); err != nil {
			return err
		}
	}

	// 2. Kratos.
	if _, err := os.Stat(kratosBin); err != nil {
		return fmt.Errorf("%s not found: run `make kratos` (or `make run`, which builds it)", kratosBin)
	}
	env := append(os.Environ(), "DSN="+kratosDSN)
	mig := exec.CommandContext(ctx, kratosBin, "migrate", "sql", "-e", "--yes", "-c", kratosConfig)
	mig.Env, mig.Stdout, mig.Stderr = env, m.Stderr, m.Stderr
	if err := mig.Run(); err != nil {
		return fmt.Errorf("kratos migrate: %w", err)
	}
	kratosLog, err := os.Create(filepath.Join(m.Config.DataDir, "kratos.log"))
	if err != nil {
		return err
	}
	defer kratosLog.Close()
	kratos := exec.Command(kratosBin, "serve", "-c", kratosConfig, "-c", sec.KratosConfig, "--dev")
	kratos.Env, kratos.Stdout, kratos.Stderr = env, kratosLog, kratosLog
	if err := kratos.Start(); err != nil {
		return fmt.Errorf("start kratos: %w", err)
	}
	stops = append(stops, func() { stopProcess(kratos, 5*time.Second) })
	if err := waitHTTP(ctx, m.Config.KratosPublicURL+"/health/ready", 30*time.Second); err != nil {
		return fmt.Errorf("kratos did not become ready (see %s): %w", kratosLog.Name(), err)
	}

	// 3. Migrations.
	db, err := tenant.OpenDB(ctx, m.Config.DatabaseURL, nil)
	if err != nil {
		return err
	}
	if err := m.migrate(ctx, tenant.NewRegistry(db, nil), true); err != nil {
		tenant.SQLDB(db).Close()
		return err
	}
	tenant.SQLDB(db).Close()

	// 4. API and worker in this process.
	a, err := openApp(ctx, m.Config)
	if err != nil {
		return err
	}
	defer a.close()
	stopMetrics, err := m.startMetrics(a)
	if err != nil {
		return err
	}
	defer stopMetrics()
	ready := make(chan string, 1)
	m.ready = ready
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errc <- m.serveAPI(ctx, a) }()
	go func() { defer wg.Done(); errc <- a.runWorker(ctx) }()
	select {
	case addr := <-ready:
		m.printWelcome(addr)
	case err := <-errc:
		return err
	}
	<-ctx.Done()
	slog.Info("stopping: API, worker, Kratos")
	wg.Wait()
	return nil
}

func (m *Main) printWelcome(addr string) {
	k := m.Config.KratosPublicURL
	api := "http://" + addr
	fmt.Fprintf(m.Stdout, `
ProManage is running.
  API      %[1]s   (docs: %[1]s/docs, readiness: %[1]s/readyz)
  Kratos   %[2]s  (admin %[3]s)
  Worker   running in this process
  Metrics  http://%[5]s/metrics
  Data     %[4]s

Next steps (copy and paste):

  # 1. Sign up through Kratos' API flow and keep the session token
  FLOW=$(curl -s %[2]s/self-service/registration/api | sed -E 's/.*"id":"([^"]+)".*/\1/;q')
  TOKEN=$(curl -s -X POST "%[2]s/self-service/registration?flow=$FLOW" \
    -H 'Content-Type: application/json' \
    -d '{"method":"password","password":"a-long-passphrase-1","traits":{"email":"you@example.com","name":"You"}}' \
    | sed -E 's/.*"session_token":"([^"]+)".*/\1/')

  # 2. Who am I?
  curl -s -H "Authorization: Bearer $TOKEN" %[1]s/v1/me

  # 3. Create your first tenant (you become its owner)
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"slug":"acme","name":"Acme Inc."}' %[1]s/v1/tenants

  # 4. Create a project
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"key":"WEB","name":"Website","deadline":"2027-06-30","budget":{"amount_minor":5000000,"currency":"EUR"}}' \
    %[1]s/v1/tenants/acme/projects

Press Ctrl-C to stop everything.
`, api, k, m.Config.KratosAdminURL, m.Config.DataDir, m.Config.MetricsAddr)
}

func pingPostgres(ctx context.Context, rawURL, dbname string) error {
	u, err := withDatabase(rawURL, dbname)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func withDatabase(rawURL, dbname string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parse database url: %w", err)
	}
	u.Path = "/" + dbname
	return u.String(), nil
}

// ensureDatabase creates the database named in rawURL if it does not exist.
func ensureDatabase(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin, _ := withDatabase(rawURL, "postgres")
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	slog.Info("created database", "name", name)
	return nil
}

// startPrivatePostgres runs initdb and pg_ctl from the installed PostgreSQL
// server binaries, with the cluster under dataDir/postgres on port 54329.
func startPrivatePostgres(ctx context.Context, dataDir string, logw io.Writer) (string, func(), error) {
	pg, err := newPostgresCluster(filepath.Join(dataDir, "postgres"), "54329", logw)
	if err != nil {
		return "", nil, err
	}
	stop := func() {
		// ctx is already cancelled when we stop (Ctrl-C): stop with our own.
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.stop(stopCtx); err != nil {
			slog.Error("stop private postgres", "err", err)
		}
	}
	if pingPostgres(ctx, pg.url("promanage"), "postgres") == nil {
		// Left running by an earlier run that did not stop cleanly: reuse it.
		slog.Info("reusing the private PostgreSQL cluster already running", "dir", pg.dir)
		return pg.url("promanage"), stop, nil
	}
	if err := pg.start(ctx); err != nil {
		return "", nil, err
	}
	return pg.url("promanage"), stop, nil
}

// postgresCluster is a private PostgreSQL cluster run from the installed
// server binaries (as the postgres user when we are root: initdb refuses
// root), listening on 127.0.0.1 only. `promanage dev` and the fault-
// injection run (chaos_test.go) use it.
type postgresCluster struct {
	binDir, dir, port string
	logw              io.Writer
}

// newPostgresCluster initialises a cluster in dir (if it has none yet).
func newPostgresCluster(dir, port string, logw io.Writer) (*postgresCluster, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			bins = []string{p}
		}
	}
	if len(bins) == 0 {
		return nil, errors.New("PostgreSQL is not running and its server binaries are not installed; install them with:\n\n    sudo apt-get install -y postgresql\n\nor set PROMANAGE_DATABASE_URL to a running server")
	}
	pgData, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	pg := &postgresCluster{binDir: filepath.Dir(bins[len(bins)-1]), dir: pgData, port: port, logw: logw}
	if _, err := os.Stat(filepath.Join(pgData, "PG_VERSION")); err != nil {
		if err := os.MkdirAll(pgData, 0o700); err != nil {
			return nil, err
		}
		if os.Geteuid() == 0 {
			// The cluster runs as postgres: it must own its directory and be
			// able to traverse (not list) the directory above it.
			exec.Command("chown", "-R", "postgres:postgres", pgData).Run()
			if fi, err := os.Stat(filepath.Dir(pgData)); err == nil && fi.Mode().Perm()&0o001 == 0 {
				_ = os.Chmod(filepath.Dir(pgData), fi.Mode().Perm()|0o001)
			}
		}
		init := pg.command(context.Background(), "initdb", "-D", pgData, "-U", "postgres", "--auth=trust", "-E", "UTF8")
		if err := init.Run(); err != nil {
			return nil, fmt.Errorf("initdb: %w", err)
		}
	}
	return pg, nil
}

func (pg *postgresCluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	bin := filepath.Join(pg.binDir, name)
	var c *exec.Cmd
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err == nil {
			c = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
		}
	}
	if c == nil {
		c = exec.CommandContext(ctx, bin, args...)
	}
	c.Stdout, c.Stderr = pg.logw, pg.logw
	return c
}

// url is the URL of database db on the cluster.
func (pg *postgresCluster) url(db string) string {
	return "postgres://postgres@127.0.0.1:" + pg.port + "/" + db + "?sslmode=disable"
}

// start starts the server and waits until it accepts connections.
func (pg *postgresCluster) start(ctx context.Context) error {
	c := pg.command(ctx, "pg_ctl", "-D", pg.dir, "-l", filepath.Join(pg.dir, "server.log"), "-w",
		"-o", "-p "+pg.port+" -c listen_addresses=127.0.0.1 -k "+pg.dir, "start")
	if err := c.Run(); err != nil {
		return fmt.Errorf("start private postgres: %w", err)
	}
	return nil
}

// stop shuts the server down fast: sessions are terminated, in-flight
// transactions roll back.
func (pg *postgresCluster) stop(ctx context.Context) error {
	return pg.command(ctx, "pg_ctl", "-D", pg.dir, "-m", "fast", "-w", "stop").Run()
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := httpOK(cctx, url)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func stopProcess(c *exec.Cmd, grace time.Duration) {
	if c.Process == nil {
		return
	}
	_ = c.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = c.Process.Kill()
		<-done
	}
}
