package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// isolatedDatabase creates a database of its own for one test (dropped when
// the test ends) with the public schema migrated, so the platform-wide gauges
// (outbox backlog, tenants by state) count only what the test did, whatever
// other packages do in the shared test database at the same time.
func isolatedDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	name := "promanage_metrics_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	url, err := withDatabase(testenv.DatabaseURL(), name)
	if err != nil {
		t.Fatal(err)
	}
	if err := ensureDatabase(ctx, url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin, _ := withDatabase(url, "postgres")
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	db, err := tenant.OpenDB(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tenant.SQLDB(db).Close()
	if err := tenant.MigratePublic(ctx, db); err != nil {
		t.Fatal(err)
	}
	return url
}

// runWithMetrics runs `promanage <cmd>` with a metrics listener on a free
// port until the test ends and returns the metrics base URL (and, for
// serve, the API's).
func runWithMetrics(t *testing.T, cmd, dbURL string, extra ...string) (apiBase, metricsBase string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, metricsReady := make(chan string, 1), make(chan string, 1)
	m := NewMain(io.Discard, io.Discard)
	m.ready, m.metricsReady = ready, metricsReady
	args := append([]string{cmd, "-database-url", dbURL, "-redis-url", testenv.RedisURL(),
		"-kratos-public-url", testenv.KratosURL(), "-http-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0",
		"-data-dir", t.TempDir(), "-log-level", "error", "-secret-key", pluginSecretKey}, extra...)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", cmd, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop", cmd)
		}
	})
	select {
	case addr := <-metricsReady:
		metricsBase = "http://" + addr
	case err := <-done:
		t.Fatalf("%s did not start: %v", cmd, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not open its metrics listener in 20s", cmd)
	}
	if cmd == "serve" {
		select {
		case addr := <-ready:
			apiBase = "http://" + addr
		case err := <-done:
			t.Fatalf("serve did not start: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not start in 20s")
		}
	}
	return apiBase, metricsBase
}

// scrape is one scrape of a metrics listener: series text -> value.
type scrape map[string]float64

func scrapeMetrics(t *testing.T, base string) scrape {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s/metrics: %d", base, resp.StatusCode)
	}
	out := scrape{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// get returns the value of one series; labels in alphabetical order, as
// client_golang writes them.
func (s scrape) get(t *testing.T, series string) float64 {
	t.Helper()
	v, ok := s[series]
	if !ok {
		t.Fatalf("no series %s in the scrape", series)
	}
	return v
}

// eventuallyScrape scrapes until ok accepts the scrape (the platform gauges
// are refreshed at most every 5 s).
func eventuallyScrape(t *testing.T, base, what string, ok func(scrape) bool) scrape {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := scrapeMetrics(t, base)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			var keys []string
			for k, v := range s {
				if strings.HasPrefix(k, "promanage_outbox") || strings.HasPrefix(k, "promanage_tenants") || strings.HasPrefix(k, "promanage_plugin_invocations_total") {
					keys = append(keys, fmt.Sprintf("%s %g", k, v))
				}
			}
			sort.Strings(keys)
			t.Fatalf("metrics never showed %s; last scrape:\n%s", what, strings.Join(keys, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// The api and the worker export the outbox, plugin and tenant metrics with
// real values on their metrics listener, and the public port does not answer
// /metrics. The test has a database of its own, so every value is exact.
func TestMetricsListener(t *testing.T) {
	dbURL := isolatedDatabase(t)
	base, apiMetrics := runWithMetrics(t, "serve", dbURL, "-plugin-allow-private-addresses", "true")

	anon := client{t: t, base: base}
	anon.want(404, "GET", "/metrics", nil)
	anon.want(200, "GET", "/healthz", nil)

	s := eventuallyScrape(t, apiMetrics, "an empty platform", func(s scrape) bool {
		_, ok := s[`promanage_tenants{state="active"}`]
		return ok
	})
	for _, series := range []string{`promanage_tenants{state="active"}`, `promanage_tenants{state="suspended"}`,
		`promanage_tenants{state="provisioning"}`, `promanage_tenants{state="deleted"}`, "promanage_outbox_pending", "promanage_outbox_lag_seconds",
		`promanage_plugin_invocations_total{hook="project.validate",outcome="rejected"}`} {
		if v := s.get(t, series); v != 0 {
			t.Errorf("%s = %g on an empty platform", series, v)
		}
	}

	// A tenant with a validation plugin (naming-policy) and a notification
	// plugin (webhook-notifier, to a local receiver).
	rc := newWebhookReceiver(t)
	rc.up.Store(true)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "metrics").Token}
	slug := pluginTenant(t, alice, "metrics")
	alice.wantPluginUpload(201, pluginFile(t, "examples/plugins/naming-policy/naming-policy.wasm"),
		map[string]any{"name": "naming-policy", "hooks": []string{"project.validate"}}, slug)
	alice.wantPluginUpload(201, pluginFile(t, "examples/plugins/webhook-notifier/webhook-notifier.wasm"), map[string]any{
		"name": "webhook-notifier", "hooks": []string{"project.created"},
		"config": map[string]any{"url": rc.srv.URL + "/promanage"}, "allowed_hosts": []string{"127.0.0.1"}}, slug)
	alice.want(422, "POST", "/v1/tenants/"+slug+"/projects", projectBody("WEB-1", 0))
	alice.want(201, "POST", "/v1/tenants/"+slug+"/projects", projectBody("WEB1", 0))
	alice.want(201, "POST", "/v1/tenants/"+slug+"/projects", projectBody("OPS", 0))

	// No worker runs yet: the events wait. Make them ten minutes overdue.
	db := openDB(t, dbURL)
	if err := db.Exec(`UPDATE public.outbox_deliveries SET next_attempt_at = now() - interval '10 minutes' WHERE state = 'pending'`).Error; err != nil {
		t.Fatal(err)
	}
	var due int64
	if err := db.Raw(`SELECT count(*) FROM public.outbox_deliveries WHERE state = 'pending'`).Scan(&due).Error; err != nil || due < 2 {
		t.Fatalf("pending deliveries: %d, %v", due, err)
	}
	s = eventuallyScrape(t, apiMetrics, "the waiting events", func(s scrape) bool {
		return s["promanage_outbox_pending"] == float64(due) && s[`promanage_tenants{state="active"}`] == 1
	})
	if lag := s.get(t, "promanage_outbox_lag_seconds"); lag < 600 || lag > 3600 {
		t.Errorf("promanage_outbox_lag_seconds = %g, want about 600", lag)
	}
	for series, want := range map[string]float64{
		`promanage_plugin_invocations_total{hook="project.validate",outcome="allowed"}`:  2,
		`promanage_plugin_invocations_total{hook="project.validate",outcome="rejected"}`: 1,
		`promanage_plugin_invocations_total{hook="project.validate",outcome="failed"}`:   0,
		`promanage_plugin_invocation_duration_seconds_count{hook="project.validate"}`:    3,
	} {
		if got := s.get(t, series); got != want {
			t.Errorf("%s = %g, want %g", series, got, want)
		}
	}
	if got := s.get(t, `promanage_http_requests_total{method="POST",route="/v1/tenants/:tenant/projects",status="422"}`); got != 1 {
		t.Errorf("422 project creations counted %g times, want 1", got)
	}

	// The worker delivers them: its own listener shows the backlog gone and
	// the notification invocations.
	_, workerMetrics := runWithMetrics(t, "worker", dbURL, "-plugin-allow-private-addresses", "true")
	s = eventuallyScrape(t, workerMetrics, "the backlog delivered", func(s scrape) bool {
		return s["promanage_outbox_pending"] == 0 && s[`promanage_plugin_invocations_total{hook="project.created",outcome="ok"}`] == 2
	})
	if lag := s.get(t, "promanage_outbox_lag_seconds"); lag != 0 {
		t.Errorf("promanage_outbox_lag_seconds = %g after the backlog was delivered", lag)
	}
	if n := len(rc.received()); n != 2 {
		t.Errorf("webhook receiver got %d deliveries, want 2", n)
	}

	// Suspending the tenant moves it between states.
	var out bytes.Buffer
	if err := NewMain(&out, io.Discard).Run(context.Background(), []string{"tenant", "suspend", "-slug", slug,
		"-database-url", dbURL, "-log-level", "error"}); err != nil {
		t.Fatalf("tenant suspend: %v", err)
	}
	eventuallyScrape(t, apiMetrics, "the suspended tenant", func(s scrape) bool {
		return s[`promanage_tenants{state="suspended"}`] == 1 && s[`promanage_tenants{state="active"}`] == 0
	})
}

// With the database unreachable, the platform gauges drop out of the scrape
// (never stale values an autoscaler would act on), the failure is counted,
// and the rest of the scrape still answers.
func TestMetricsWithoutDatabase(t *testing.T) {
	dbURL := isolatedDatabase(t)
	_, metrics := runWithMetrics(t, "serve", dbURL)
	eventuallyScrape(t, metrics, "the platform gauges", func(s scrape) bool { _, ok := s["promanage_outbox_pending"]; return ok })
	// Terminate the server's connections and refuse new ones.
	admin := openDB(t, mustWithDatabase(t, dbURL, "postgres"))
	name := strings.TrimPrefix(dbURL[strings.LastIndex(dbURL, "/"):], "/")
	name, _, _ = strings.Cut(name, "?")
	if err := admin.Exec("ALTER DATABASE " + pgx.Identifier{name}.Sanitize() + " WITH ALLOW_CONNECTIONS false").Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec("ALTER DATABASE " + pgx.Identifier{name}.Sanitize() + " WITH ALLOW_CONNECTIONS true")
	})
	if err := admin.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ?", name).Error; err != nil {
		t.Fatal(err)
	}
	s := eventuallyScrape(t, metrics, "the gauges gone", func(s scrape) bool {
		_, pending := s["promanage_outbox_pending"]
		return !pending && s["promanage_metrics_refresh_errors_total"] >= 1
	})
	if _, ok := s[`promanage_tenants{state="active"}`]; ok {
		t.Error("tenant gauges still reported while the database is unreachable")
	}
	if _, ok := s["promanage_db_open_connections"]; !ok {
		t.Error("the rest of the scrape is missing")
	}
}

func openDB(t *testing.T, url string) *gorm.DB {
	t.Helper()
	db, err := tenant.OpenDB(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tenant.SQLDB(db).Close() })
	return db
}

func mustWithDatabase(t *testing.T, url, name string) string {
	t.Helper()
	u, err := withDatabase(url, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestMetricsCatalog: the hidden metrics-catalog command lists every family
// the api and worker registries hold, with its type, including vectors that
// have no sample yet; deploy/validate reads it.
func TestMetricsCatalog(t *testing.T) {
	var out bytes.Buffer
	if err := NewMain(&out, io.Discard).Run(context.Background(), []string{"metrics-catalog"}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var e struct {
			Name, Type string
			Labels     []string
		}
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		got[e.Name] = e.Type + " " + strings.Join(e.Labels, ",")
	}
	for name, want := range map[string]string{
		"promanage_http_requests_total":                "counter route,method,status",
		"promanage_http_request_duration_seconds":      "histogram route,method",
		"promanage_http_in_flight_requests":            "gauge ",
		"promanage_outbox_lag_seconds":                 "gauge ",
		"promanage_outbox_pending":                     "gauge ",
		"promanage_tenants":                            "gauge state",
		"promanage_plugin_invocations_total":           "counter hook,outcome",
		"promanage_plugin_invocation_duration_seconds": "histogram hook",
		"promanage_db_open_connections":                "gauge ",
		"promanage_db_in_use_connections":              "gauge ",
		"go_goroutines":                                "gauge ",
	} {
		if got[name] != want {
			t.Errorf("catalog %s = %q, want %q", name, got[name], want)
		}
	}
	for name := range got {
		if strings.Contains(name, "tenant_id") || slices.Contains(strings.Split(got[name], ","), "tenant") {
			t.Errorf("%s has a per-tenant label (unbounded cardinality): %s", name, got[name])
		}
	}
}
