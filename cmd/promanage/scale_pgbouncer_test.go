package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/promanage/promanage/internal/testenv"
)

// scalePlan is the size of a run behind PgBouncer: the short plan runs in
// `make test`, the long one in `make test-scale` (PROMANAGE_SCALE=long),
// which also runs the same load with every replica connected directly, for
// the comparison docs/SCALING.md reports.
type scalePlan struct {
	replicas, workers, clients, tenants int
	serverConns                         int // PgBouncer's server connections (pool size)
	replicaConns                        int // each replica's own pool
	duration                            time.Duration
	direct                              bool // also run it without the pooler
}

func scalePlanFromEnv() scalePlan {
	if os.Getenv("PROMANAGE_SCALE") == "long" {
		return scalePlan{replicas: 4, workers: 2, clients: 32, tenants: 8, serverConns: 20, replicaConns: 10, duration: 30 * time.Second, direct: true}
	}
	return scalePlan{replicas: 3, workers: 2, clients: 6, tenants: 3, serverConns: 4, replicaConns: 8, duration: 6 * time.Second}
}

// The API, the worker and migrations behind PgBouncer in transaction mode
// with a small server pool: migrate runs through it into a fresh database;
// several API replicas and worker processes share its few server
// connections under concurrent writes and reads of several tenants; the
// workers LISTEN over the direct URL. Asserted: every answer is a success;
// PostgreSQL never sees more pooled sessions than PgBouncer's pool (plus one
// LISTEN session per worker, and nothing else); each tenant sees exactly
// its own projects through any replica; and every outbox event of the run
// is delivered.
func TestBehindPgBouncer(t *testing.T) {
	plan := scalePlanFromEnv()
	var pooled, direct string
	t.Run("PgBouncer", func(t *testing.T) { pooled = runScale(t, plan, true).String() })
	if plan.direct && !t.Failed() {
		t.Run("Direct", func(t *testing.T) {
			// Directly, the same load takes as many PostgreSQL connections
			// as the pools hold; on a server shared with other work that can
			// starve everyone else (Kratos' own database among them).
			need := plan.replicas*plan.replicaConns + plan.workers*2 + 20
			if free := freeConnections(t); free < need {
				t.Logf("!!! direct comparison NOT RUN: it needs about %d PostgreSQL connections and only %d are free", need, free)
				return
			}
			direct = runScale(t, plan, false).String()
		})
	}
	t.Logf("through PgBouncer: %s", pooled)
	if direct != "" {
		t.Logf("direct:            %s", direct)
	}
}

// freeConnections is how many more connections the test server accepts.
func freeConnections(t *testing.T) int {
	t.Helper()
	admin, _ := withDatabase(testenv.DatabaseURL(), "postgres")
	conn, err := pgx.Connect(context.Background(), admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var free int
	err = conn.QueryRow(context.Background(), `SELECT current_setting('max_connections')::int
		- current_setting('superuser_reserved_connections')::int - count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'`).Scan(&free)
	if err != nil {
		t.Fatal(err)
	}
	return free
}

type scaleResult struct {
	requests, failures            int
	throughput                    float64
	p50, p99                      time.Duration
	peakSessions, peakListen      int // PostgreSQL backends of the run's database (pooled or direct; LISTEN)
	peakClients                   int // client connections PgBouncer held (behind it only)
	events, delivered, otherState int
	deliveredIn                   time.Duration
}

func (r scaleResult) String() string {
	return fmt.Sprintf("%d requests (%d failed), %.0f req/s, p50 %v, p99 %v; PostgreSQL sessions peak %d (+%d LISTEN); client connections to the pooler peak %d; %d events, %d deliveries delivered %v after the load",
		r.requests, r.failures, r.throughput, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.peakSessions, r.peakListen,
		r.peakClients, r.events, r.delivered, r.deliveredIn.Round(100*time.Millisecond))
}

func runScale(t *testing.T, plan scalePlan, pooled bool) scaleResult {
	t.Helper()
	ctx := context.Background()
	testenv.DB(t)
	dbName := "promanage_scale_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	directURL, err := withDatabase(testenv.DatabaseURL(), dbName)
	if err != nil {
		t.Fatal(err)
	}
	if err := ensureDatabase(ctx, directURL); err != nil {
		t.Fatal(err)
	}
	admin, _ := withDatabase(testenv.DatabaseURL(), "postgres")
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), admin)
		if err == nil {
			conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)")
			conn.Close(context.Background())
		}
	})

	appURL := directURL
	var bouncer *testenv.PgBouncer
	var dbFlags []string
	if pooled {
		// The session timeouts come from the pooler's connect_query (in
		// production: the role's settings), the values serve's flags
		// default to, so OpenDB's check passes.
		bouncer = testenv.StartPgBouncer(t, &testenv.PgBouncerOptions{PoolSize: plan.serverConns, QueryWaitTimeout: 5 * time.Second,
			ConnectQuery: "SET statement_timeout = 15000; SET lock_timeout = 3000; SET idle_in_transaction_session_timeout = 15000"})
		appURL = bouncer.URL(dbName)
		dbFlags = []string{"-db-pooler", "transaction", "-database-direct-url", directURL}
	}
	// Migrations through the pooler (transaction-level advisory locks only).
	if err := NewMain(io.Discard, io.Discard).Run(ctx, append([]string{"migrate", "-database-url", appURL, "-log-level", "error"}, dbFlags...)); err != nil {
		t.Fatalf("migrate: %v", err)
	}

	common := append([]string{"-database-url", appURL, "-db-max-conns", fmt.Sprint(plan.replicaConns),
		"-secret-key", pluginSecretKey, "-rate-limit-user", "0", "-rate-limit-tenant", "0"}, dbFlags...)
	dir := t.TempDir()
	var workersExited []chan struct{}
	for i := range plan.workers {
		args, _ := json.Marshal(append([]string{"-http-addr", "127.0.0.1:0", "-data-dir", filepath.Join(dir, fmt.Sprint("worker", i)),
			"-redis-url", testenv.RedisURL(), "-kratos-public-url", testenv.KratosURL(), "-log-level", "warn"}, common...))
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), chaosWorkerEnv+"="+string(args))
		c.Stdout, c.Stderr = logf, logf
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { c.Wait(); close(exited) }()
		workersExited = append(workersExited, exited)
		t.Cleanup(func() {
			c.Process.Kill()
			<-exited
			logf.Close()
			if t.Failed() {
				out, _ := os.ReadFile(logf.Name())
				t.Logf("worker %d log:\n%s", i, tail(out, 3000))
			}
		})
	}
	var replicas []string
	for range plan.replicas {
		replicas = append(replicas, server(t, common...))
	}

	// Tenants and their projects, each created through another replica.
	owner := testenv.SignUp(t, "scale")
	type scaleTenant struct {
		slug, project string
		projects      []string
	}
	tenants := make([]*scaleTenant, plan.tenants)
	for i := range tenants {
		c := client{t: t, base: replicas[i%len(replicas)], token: owner.Token}
		slug := testenv.Slug("scale")
		c.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": "Scale"})
		p := c.want(201, "POST", "/v1/tenants/"+slug+"/projects", projectBody(fmt.Sprintf("S%d", i), 1<<40)).json(t)["id"].(string)
		tenants[i] = &scaleTenant{slug: slug, project: p, projects: []string{p}}
	}

	// Sessions PostgreSQL holds for the run's database, sampled throughout.
	var peakSessions, peakListen, peakClients atomic.Int64
	samplerDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(samplerDone)
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("sampler: %v", err)
			return
		}
		defer conn.Close(ctx)
		for {
			var sessions, listen int64
			err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE query IS DISTINCT FROM 'LISTEN promanage_outbox'),
				count(*) FILTER (WHERE query = 'LISTEN promanage_outbox')
				FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, dbName).Scan(&sessions, &listen)
			if err == nil {
				storeMax(&peakSessions, sessions)
				storeMax(&peakListen, listen)
			}
			if bouncer != nil {
				for _, p := range bouncer.Pools(t) {
					if p.Database == dbName {
						storeMax(&peakClients, int64(p.ClientActive+p.ClientWaiting))
					}
				}
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	// The load: tasks, expenses and reads, spread over replicas and tenants.
	today := time.Now().UTC().Format("2006-01-02")
	var mu sync.Mutex
	var lat []time.Duration
	var bad []string
	created := map[int][]string{} // tenant -> project ids created by the load
	start := time.Now()
	var wg sync.WaitGroup
	for i := range plan.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Since(start) < plan.duration; n++ {
				ti := (i + n) % len(tenants)
				tn := tenants[ti]
				base := replicas[(i+n/3)%len(replicas)]
				prefix := "/v1/tenants/" + tn.slug + "/projects"
				var c call
				want := 201
				switch n % 6 {
				case 0:
					c = doCall(base, owner.Token, "POST", prefix+"/"+tn.project+"/expenses", "application/json",
						jsonBody(map[string]any{"amount_minor": 100, "currency": "EUR", "spent_on": today}))
				case 1:
					c = doCall(base, owner.Token, "POST", prefix+"/"+tn.project+"/tasks", "application/json", jsonBody(map[string]any{"title": "scale"}))
				case 2:
					key := fmt.Sprintf("L%X", uuid.New().ID())
					c = doCall(base, owner.Token, "POST", prefix, "application/json", jsonBody(projectBody(key, 1000)))
					if c.status == 201 {
						var p struct {
							ID string `json:"id"`
						}
						json.Unmarshal(c.body, &p)
						mu.Lock()
						created[ti] = append(created[ti], p.ID)
						mu.Unlock()
					}
				default:
					want = 200
					c = doCall(base, owner.Token, "GET", prefix+"/"+tn.project, "", nil)
				}
				mu.Lock()
				lat = append(lat, c.took)
				if c.err != nil || c.status != want {
					bad = append(bad, fmt.Sprintf("%d %v %s", c.status, c.err, tail(c.body, 300)))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopSampling)
	<-samplerDone

	res := scaleResult{requests: len(lat), failures: len(bad), throughput: float64(len(lat)) / elapsed.Seconds(),
		peakSessions: int(peakSessions.Load()), peakListen: int(peakListen.Load()), peakClients: int(peakClients.Load())}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res.p50, res.p99 = pct(lat, 50), pct(lat, 99)
	if len(bad) > 0 {
		t.Errorf("%d of %d requests failed, e.g.:\n%s", len(bad), len(lat), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
	if pooled && res.peakSessions > plan.serverConns {
		t.Errorf("PostgreSQL saw %d pooled sessions, more than PgBouncer's %d server connections", res.peakSessions, plan.serverConns)
	}
	if res.peakListen != plan.workers {
		t.Errorf("%d LISTEN sessions seen, want one per worker (%d) over the direct URL", res.peakListen, plan.workers)
	}

	// Isolation through the pooler: every tenant lists exactly its own
	// projects, through every replica.
	for i, tn := range tenants {
		want := append(append([]string{}, tn.projects...), created[i]...)
		sort.Strings(want)
		for _, base := range replicas {
			got := listAll(t, client{t: t, base: base, token: owner.Token}, "/v1/tenants/"+tn.slug+"/projects")
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("tenant %s through %s lists %d projects, want its %d own", tn.slug, base, len(got), len(want))
			}
		}
	}

	// Every event of the run delivered, woken by NOTIFY over LISTEN (or the
	// 2 s poll). The run's database is its own: these are all its events.
	db, err := pgx.Connect(ctx, directURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	drained := time.Now()
	for {
		var pending, delivered, other, events int
		err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'delivered'),
			count(*) FILTER (WHERE state NOT IN ('pending', 'delivered')), (SELECT count(*) FROM public.outbox) FROM public.outbox_deliveries`).
			Scan(&pending, &delivered, &other, &events)
		if err != nil {
			t.Fatal(err)
		}
		res.events, res.delivered, res.otherState = events, delivered, other
		if pending == 0 {
			res.deliveredIn = time.Since(drained)
			if other > 0 {
				t.Errorf("%d deliveries neither pending nor delivered (parked?)", other)
			}
			if events == 0 || delivered < events {
				t.Errorf("%d events, %d delivered: want every event delivered", events, delivered)
			}
			break
		}
		if time.Since(drained) > 60*time.Second {
			t.Fatalf("%d deliveries still pending 60 s after the load (%d delivered)", pending, delivered)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if pooled {
		// Export holds a session-level lock: it takes the direct URL, and
		// refuses to run without one behind the pooler.
		out := filepath.Join(dir, "export.tar.gz")
		exportArgs := []string{"tenant", "export", "-slug", tenants[0].slug, "-out", out, "-data-dir", dir, "-log-level", "error"}
		if err := NewMain(io.Discard, io.Discard).Run(ctx, append(exportArgs, common...)); err != nil {
			t.Errorf("tenant export behind the pooler: %v", err)
		} else if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
			t.Errorf("tenant export wrote nothing: %v", err)
		}
		noDirect := append(append([]string{}, exportArgs...), "-database-url", appURL, "-db-pooler", "transaction", "-database-direct-url", "")
		noDirect[5] = filepath.Join(dir, "refused.tar.gz")
		if err := NewMain(io.Discard, io.Discard).Run(ctx, noDirect); err == nil || !strings.Contains(err.Error(), "PROMANAGE_DATABASE_DIRECT_URL") {
			t.Errorf("tenant export through the pooler without a direct URL: %v, want a refusal naming PROMANAGE_DATABASE_DIRECT_URL", err)
		}
	}
	for i, exited := range workersExited {
		select {
		case <-exited:
			t.Errorf("worker %d exited during the run", i)
		default:
		}
	}
	return res
}

// listAll pages through a list endpoint and returns the ids.
func listAll(t *testing.T, c client, path string) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for {
		p := path + "?limit=200"
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal(c.want(200, "GET", p, nil).Body, &page); err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			ids = append(ids, it.ID)
		}
		if page.NextCursor == nil || *page.NextCursor == "" {
			return ids
		}
		cursor = *page.NextCursor
	}
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		return "..." + string(b[len(b)-n:])
	}
	return string(b)
}
