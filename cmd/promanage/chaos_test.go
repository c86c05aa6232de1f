package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promanage/promanage/internal/testenv"
)

// chaosWorkerEnv, when set, makes this test binary run `promanage worker`
// with the JSON-encoded arguments it holds: the fault run starts its worker
// as a separate process so that it can kill it.
const chaosWorkerEnv = "PROMANAGE_CHAOS_WORKER_ARGS"

// runChaosWorker runs this test binary as the fault run's worker process
// when it was started as one (TestMain calls it first).
func runChaosWorker() {
	if raw := os.Getenv(chaosWorkerEnv); raw != "" {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			fmt.Fprintln(os.Stderr, "chaos worker:", err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := NewMain(os.Stdout, os.Stderr).Run(ctx, append([]string{"worker"}, args...))
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// chaosPlan is how hard a fault run pushes: the short plan runs in `make
// test`, the long one in `make chaos` (PROMANAGE_CHAOS=long).
type chaosPlan struct {
	rounds  int           // times every fault is injected
	down    time.Duration // how long a dependency stays down
	clients int           // concurrent load clients
}

func chaosPlanFromEnv() chaosPlan {
	if os.Getenv("PROMANAGE_CHAOS") == "long" {
		return chaosPlan{rounds: 3, down: 6 * time.Second, clients: 24}
	}
	return chaosPlan{rounds: 1, down: 2 * time.Second, clients: 8}
}

// A fault run under steady mixed load (validated expenses, tasks, reads of
// another tenant): Redis, Kratos, PostgreSQL and the worker are each stopped
// and started again, all of them private to the run. While one is down the
// API answers 503 (PostgreSQL) or keeps serving on its documented fail-open
// paths (Redis: rate limits skipped, sessions asked of Kratos; Kratos:
// cached sessions; worker: events wait in the outbox), never 500 and never
// a hang; within 5 s after it returns, writes and reads succeed again by
// themselves; and nothing is lost: every write answered 201 is in the
// database, and every event of the run is delivered or parked.
func TestChaos(t *testing.T) {
	plan := chaosPlanFromEnv()
	env := startChaosEnv(t)
	ctx := context.Background()

	owner := testenv.SignUpAt(t, env.kratosURL, "chaos")
	reader := testenv.SignUpAt(t, env.kratosURL, "chaosread")
	oc := client{t: t, base: env.api, token: owner.Token}
	rc := client{t: t, base: env.api, token: reader.Token}
	a := pluginTenant(t, oc, "chaos")
	b := pluginTenant(t, rc, "chaosread")
	oc.wantPluginUpload(201, pluginFile(t, "examples/plugins/budget-guard/budget-guard.wasm"), map[string]any{
		"name": "budget-guard", "hooks": []string{"expense.validate"}, "config": map[string]any{"max_budget_minor": int64(1) << 50}}, a)
	p := oc.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("CHAOS", int64(1)<<50)).json(t)["id"].(string)
	q := rc.want(201, "POST", "/v1/tenants/"+b+"/projects", projectBody("READ", 100)).json(t)["id"].(string)
	today := time.Now().UTC().Format("2006-01-02")

	expense := func() call {
		return doCall(env.api, owner.Token, "POST", "/v1/tenants/"+a+"/projects/"+p+"/expenses", "application/json",
			jsonBody(map[string]any{"amount_minor": 100, "currency": "EUR", "spent_on": today}))
	}
	task := func() call {
		return doCall(env.api, owner.Token, "POST", "/v1/tenants/"+a+"/projects/"+p+"/tasks", "application/json",
			jsonBody(map[string]any{"title": "chaos"}))
	}
	read := func() call {
		return doCall(env.api, reader.Token, "GET", "/v1/tenants/"+b+"/projects/"+q, "", nil)
	}

	// The load, labelled with the phase it ran in.
	var phase atomicString
	phase.set("steady")
	type outcome struct {
		phase, kind string
		call
		id string
	}
	var mu sync.Mutex
	var outcomes []outcome
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range plan.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ph := phase.get()
				var kind string
				var c call
				switch (i + n) % 5 {
				case 0, 1:
					kind, c = "expense", expense()
				case 2:
					kind, c = "task", task()
				default:
					kind, c = "read", read()
				}
				o := outcome{phase: ph, kind: kind, call: c}
				if c.status == 201 {
					var body struct {
						ID string `json:"id"`
					}
					json.Unmarshal(c.body, &body)
					o.id = body.ID
				}
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				if c.status == 503 || c.err != nil {
					time.Sleep(50 * time.Millisecond) // a client backs off a little on 503
				}
			}
		}()
	}

	// recovered waits until a validated write and another tenant's read
	// both succeed, and returns how long that took.
	recovered := func(name string) time.Duration {
		start := time.Now()
		for {
			w, r := expense(), read()
			if w.status == 201 && r.status == 200 {
				return time.Since(start)
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("%s: still failing 30s after it returned: write %d %s %v, read %d %s %v", name, w.status, w.body, w.err, r.status, r.body, r.err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	faults := []struct {
		name       string
		stop, back func() error
	}{
		{"kratos", env.kratos.stop, env.kratos.start},
		{"redis", env.redis.stop, env.redis.start},
		{"postgres", func() error { return env.pg.stop(ctx) }, func() error { return env.pg.start(ctx) }},
		{"worker", env.worker.kill, env.worker.start},
	}
	recovery := map[string][]time.Duration{}
	time.Sleep(time.Second)
	for round := range plan.rounds {
		for _, f := range faults {
			phase.set(f.name + " stopping")
			if err := f.stop(); err != nil {
				t.Fatalf("stop %s: %v", f.name, err)
			}
			phase.set(f.name + " down")
			time.Sleep(plan.down)
			phase.set(f.name + " starting")
			if err := f.back(); err != nil {
				t.Fatalf("start %s again: %v", f.name, err)
			}
			phase.set(f.name + " back")
			d := recovered(f.name)
			recovery[f.name] = append(recovery[f.name], d)
			t.Logf("round %d: %s down %v, everything worked again %v after it returned", round+1, f.name, plan.down, d.Round(time.Millisecond))
			phase.set("after " + f.name)
			time.Sleep(time.Second)
		}
	}
	close(stop)
	wg.Wait()

	// What the clients saw.
	type key struct{ phase, kind string }
	seen := map[key]map[int]int{}
	sample := map[key]string{} // one 503 body per phase and kind
	var bad []string
	var slowest time.Duration
	for _, o := range outcomes {
		k := key{o.phase, o.kind}
		if seen[k] == nil {
			seen[k] = map[int]int{}
		}
		seen[k][o.status]++
		slowest = max(slowest, o.took)
		switch {
		case o.err != nil:
			bad = append(bad, fmt.Sprintf("%s %s: no answer after %v: %v", o.phase, o.kind, o.took, o.err))
		case o.took > 10*time.Second:
			bad = append(bad, fmt.Sprintf("%s %s: %d after %v (a hang)", o.phase, o.kind, o.status, o.took))
		case o.status == 503:
			if _, ok := sample[k]; !ok {
				var pb struct {
					Detail string `json:"detail"`
				}
				json.Unmarshal(o.body, &pb)
				sample[k] = pb.Detail
			}
		case o.kind == "read" && o.status == 200, o.kind != "read" && o.status == 201:
		default:
			bad = append(bad, fmt.Sprintf("%s %s: %d %s", o.phase, o.kind, o.status, o.body))
		}
	}
	keys := make([]key, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].phase+keys[i].kind < keys[j].phase+keys[j].kind })
	for _, k := range keys {
		if d := sample[k]; d != "" {
			t.Logf("%-17s %-8s %v (503: %s)", k.phase, k.kind, seen[k], d)
		} else {
			t.Logf("%-17s %-8s %v", k.phase, k.kind, seen[k])
		}
	}
	t.Logf("%d requests, slowest %v", len(outcomes), slowest.Round(time.Millisecond))
	if len(bad) > 0 {
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
		}
		t.Errorf("answers that are neither success nor 503:\n%s", strings.Join(bad, "\n"))
	}
	for name, ds := range recovery {
		for _, d := range ds {
			if d > 5*time.Second {
				t.Errorf("%s: recovery took %v after it returned, want <= 5s", name, d)
			}
		}
	}

	// Nothing committed was lost.
	db, err := pgx.Connect(ctx, env.pg.url("promanage"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	var schema, tenantID string
	if err := db.QueryRow(ctx, "SELECT schema_name, id::text FROM public.tenants WHERE slug = $1", a).Scan(&schema, &tenantID); err != nil {
		t.Fatal(err)
	}
	answered := map[string][]string{}
	for _, o := range outcomes {
		if o.id != "" {
			answered[o.kind] = append(answered[o.kind], o.id)
		}
	}
	for kind, table := range map[string]string{"expense": "expenses", "task": "tasks"} {
		var n int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, table}.Sanitize()+" WHERE id::text = ANY($1)", answered[kind]).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != len(answered[kind]) {
			t.Errorf("%d %ss were answered 201 but only %d are in the database", len(answered[kind]), kind, n)
		}
		t.Logf("%d %ss answered 201, all %d in the database", len(answered[kind]), kind, n)
	}
	// Every expense has its event, and every event is delivered or parked
	// once the worker had time to catch up (a killed worker's claims are
	// retried after the 5 s lease).
	var expenses, events int
	db.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "expenses"}.Sanitize()).Scan(&expenses)
	db.QueryRow(ctx, "SELECT count(*) FROM public.outbox WHERE tenant_id = $1 AND type = 'expense.recorded'", tenantID).Scan(&events)
	if events != expenses {
		t.Errorf("%d expenses but %d expense.recorded events", expenses, events)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var pending, delivered, parked, total int
		err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE d.state = 'pending'), count(*) FILTER (WHERE d.state = 'delivered'),
			count(*) FILTER (WHERE d.state = 'parked'), count(*)
			FROM public.outbox o JOIN public.outbox_deliveries d ON d.event_id = o.id WHERE o.tenant_id = $1`, tenantID).
			Scan(&pending, &delivered, &parked, &total)
		if err != nil {
			t.Fatal(err)
		}
		var evs int
		db.QueryRow(ctx, "SELECT count(*) FROM public.outbox WHERE tenant_id = $1", tenantID).Scan(&evs)
		if pending == 0 {
			if total < evs {
				t.Fatalf("%d events but only %d deliveries", evs, total)
			}
			t.Logf("outbox: %d events, %d deliveries: %d delivered, %d parked", evs, total, delivered, parked)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox: %d of %d deliveries still pending 90s after the run", pending, total)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type atomicString struct {
	mu sync.Mutex
	s  string
}

func (a *atomicString) set(s string) { a.mu.Lock(); a.s = s; a.mu.Unlock() }
func (a *atomicString) get() string  { a.mu.Lock(); defer a.mu.Unlock(); return a.s }

// chaosEnv is a fault run's private world: a PostgreSQL cluster, a Redis
// server, a Kratos server and a worker process it can stop and start, and
// the API in this process.
type chaosEnv struct {
	dir       string
	pg        *postgresCluster
	redis     *chaosProc
	kratos    *chaosProc
	worker    *chaosProc
	kratosURL string
	api       string
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func startChaosEnv(t *testing.T) *chaosEnv {
	t.Helper()
	ctx := context.Background()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	kratosBin := filepath.Join(root, "bin", "kratos")
	if _, err := os.Stat(kratosBin); err != nil {
		t.Fatalf("%s: %v (run `make kratos`)", kratosBin, err)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server: %v (apt-get install redis-server)", err)
	}
	dir, err := os.MkdirTemp("", "promanage-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	env := &chaosEnv{dir: dir}
	t.Cleanup(func() {
		for _, p := range []*chaosProc{env.worker, env.kratos, env.redis} {
			if p != nil {
				p.kill()
			}
		}
		if env.pg != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			env.pg.command(sctx, "pg_ctl", "-D", env.pg.dir, "-m", "immediate", "-w", "stop").Run()
			cancel()
		}
		if !t.Failed() && os.Getenv("PROMANAGE_CHAOS_KEEP_LOGS") == "" {
			os.RemoveAll(dir)
		} else {
			t.Logf("logs of the fault run are in %s", dir)
		}
	})
	logFile := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}

	// PostgreSQL, with the API's and Kratos' databases.
	if env.pg, err = newPostgresCluster(filepath.Join(dir, "pg"), freePort(t), logFile("postgres-ctl.log")); err != nil {
		t.Fatal(err)
	}
	if err := env.pg.start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{"promanage", "kratos"} {
		if err := ensureDatabase(ctx, env.pg.url(db)); err != nil {
			t.Fatal(err)
		}
	}
	if err := NewMain(io.Discard, io.Discard).Run(ctx, []string{"migrate", "-database-url", env.pg.url("promanage"), "-log-level", "error"}); err != nil {
		t.Fatal(err)
	}

	// Redis: nothing persisted, like a cache that restarts empty.
	redisPort := freePort(t)
	redisLog := logFile("redis.log")
	env.redis = &chaosProc{name: "redis", cmd: func() *exec.Cmd {
		c := exec.Command("redis-server", "--port", redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
		c.Stdout, c.Stderr = redisLog, redisLog
		return c
	}, ready: func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+redisPort, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	}}
	if err := env.redis.start(); err != nil {
		t.Fatal(err)
	}

	// Kratos, built from its module, with the dev config (as scripts/test.sh).
	pub, adm := freePort(t), freePort(t)
	env.kratosURL = "http://127.0.0.1:" + pub
	kenv := append(os.Environ(), "DSN="+env.pg.url("kratos"), "SERVE_PUBLIC_PORT="+pub, "SERVE_ADMIN_PORT="+adm,
		"SERVE_PUBLIC_BASE_URL="+env.kratosURL+"/", "SERVE_ADMIN_BASE_URL=http://127.0.0.1:"+adm+"/")
	mig := exec.Command(kratosBin, "migrate", "sql", "-e", "--yes", "-c", "deploy/kratos/kratos.yml")
	mig.Dir, mig.Env = root, kenv
	if out, err := mig.CombinedOutput(); err != nil {
		t.Fatalf("kratos migrate: %v: %s", err, out)
	}
	kratosLog := logFile("kratos.log")
	env.kratos = &chaosProc{name: "kratos", cmd: func() *exec.Cmd {
		c := exec.Command(kratosBin, "serve", "-c", "deploy/kratos/kratos.yml", "--dev")
		c.Dir, c.Env, c.Stdout, c.Stderr = root, kenv, kratosLog, kratosLog
		return c
	}, ready: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return httpOK(ctx, env.kratosURL+"/health/ready")
	}}
	if err := env.kratos.start(); err != nil {
		t.Fatal(err)
	}

	common := []string{"-database-url", env.pg.url("promanage"), "-redis-url", "redis://127.0.0.1:" + redisPort + "/0",
		"-kratos-public-url", env.kratosURL, "-secret-key", pluginSecretKey, "-log-level", "warn",
		"-rate-limit-user", "0", "-rate-limit-tenant", "0"}

	// The worker, as a process of its own (this test binary, see TestMain).
	workerLog := logFile("worker.log")
	workerArgs, _ := json.Marshal(append([]string{"-http-addr", "127.0.0.1:0", "-data-dir", filepath.Join(dir, "worker"),
		"-outbox-lease", "5s"}, common...))
	env.worker = &chaosProc{name: "worker", cmd: func() *exec.Cmd {
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), chaosWorkerEnv+"="+string(workerArgs))
		c.Stdout, c.Stderr = workerLog, workerLog
		return c
	}}
	if err := env.worker.start(); err != nil {
		t.Fatal(err)
	}

	// The API, in this process, with a small pool.
	apiCtx, cancel := context.WithCancel(ctx)
	ready := make(chan string, 1)
	apiLog := logFile("api.log")
	m := NewMain(apiLog, apiLog)
	m.ready = ready
	done := make(chan error, 1)
	go func() {
		done <- m.Run(apiCtx, append([]string{"serve", "-http-addr", "127.0.0.1:0", "-data-dir", filepath.Join(dir, "api"),
			"-db-max-conns", "8"}, common...))
	}()
	select {
	case addr := <-ready:
		env.api = "http://" + addr
		t.Cleanup(func() { cancel(); <-done })
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve did not start in 30s")
	}
	return env
}

// chaosProc is a dependency run as a process the fault run stops and
// starts again.
type chaosProc struct {
	name  string
	cmd   func() *exec.Cmd
	ready func() error // nil: started is ready

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
}

func (p *chaosProc) start() error {
	c := p.cmd()
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	p.mu.Lock()
	p.proc, p.done = c, done
	p.mu.Unlock()
	if p.ready == nil {
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.ready()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting", p.name)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 30s: %w", p.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process with SIGTERM (SIGKILL after 10 s) and waits.
func (p *chaosProc) stop() error { return p.signal(syscall.SIGTERM) }

// kill ends the process with SIGKILL, as a crash would, and waits.
func (p *chaosProc) kill() error { return p.signal(syscall.SIGKILL) }

func (p *chaosProc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	c, done := p.proc, p.done
	p.mu.Unlock()
	if c == nil || c.Process == nil {
		return errors.New(p.name + " is not running")
	}
	c.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		<-done
	}
	return nil
}
