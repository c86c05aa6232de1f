package testenv

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

// Proc is a server process a test started (PgBouncer, a Redis node); it is
// killed when the test ends.
type Proc struct {
	Name string
	Port string
	Log  string // path of its output

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Kill ends the process at once, as a crash would, and waits for it.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL) }

func (p *Proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	c, done := p.cmd, p.done
	p.mu.Unlock()
	if c == nil || c.Process == nil {
		return
	}
	c.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		<-done
	}
}

// Alive reports whether the process is still running.
func (p *Proc) Alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
		return p.cmd != nil
	}
}

// startProc runs name with args, its output in logPath, waits until port
// accepts connections (20 s at most) and kills it when the test ends.
func startProc(t testing.TB, name, port, logPath string, asPostgres bool, args ...string) *Proc {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (apt-get install -y %s; scripts/test.sh does it): %v", name, debianPackage(name), err)
	}
	var c *exec.Cmd
	if asPostgres && os.Geteuid() == 0 {
		// PgBouncer refuses to run as root.
		c = exec.Command(bin, append([]string{"-u", "postgres"}, args...)...)
	} else {
		c = exec.Command(bin, args...)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	c.Stdout, c.Stderr = logf, logf
	if err := c.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Port: port, Log: logPath, cmd: c, done: make(chan struct{})}
	go func() { c.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(p.Kill)
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return p
		}
		if !p.Alive() || time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("%s did not start on port %s: %v\n%s", name, port, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func debianPackage(bin string) string {
	if bin == "redis-server" || bin == "redis-cli" {
		return "redis-server"
	}
	return bin
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on a moment
// ago, from [10000, 30000) so that port+10000 (a Redis Cluster node's bus
// port) is valid and was free too.
func FreePort(t testing.TB) string {
	t.Helper()
	for range 200 {
		p := 10000 + rand.IntN(20000)
		if free(p) && free(p+10000) {
			return strconv.Itoa(p)
		}
	}
	t.Fatal("no free port pair found")
	return ""
}

func free(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// sharedDir is a directory for a server that runs as another user (it must
// read its configuration there): world-traversable, removed at the end.
func sharedDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s logs are kept in %s", prefix, dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// PgBouncerOptions configures a private PgBouncer.
type PgBouncerOptions struct {
	// PoolSize is the number of server connections per database and user,
	// and the cap of server connections per database (default 2).
	PoolSize int
	// QueryWaitTimeout is how long a client waits for a server connection
	// before PgBouncer gives up on it (0: PgBouncer's default, 120 s).
	QueryWaitTimeout time.Duration
	// ConnectQuery runs on every new server connection (e.g. SET of the
	// session timeouts).
	ConnectQuery string
	// IgnoreStartupParameters are startup parameters PgBouncer drops
	// instead of refusing the client.
	IgnoreStartupParameters []string
}

// PgBouncer is a private PgBouncer in transaction-pooling mode in front of
// the test database server.
type PgBouncer struct {
	*Proc
	dsn *pgconn.Config
}

// StartPgBouncer starts PgBouncer (Debian's, 1.18 here) on a private port in
// pool_mode=transaction in front of the server of DatabaseURL; every
// database of that server is reachable through it as the same user.
func StartPgBouncer(t testing.TB, o *PgBouncerOptions) *PgBouncer {
	t.Helper()
	if o == nil {
		o = &PgBouncerOptions{}
	}
	size := o.PoolSize
	if size <= 0 {
		size = 2
	}
	cfg, err := pgconn.ParseConfig(DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	dir := sharedDir(t, "promanage-pgbouncer-")
	port := FreePort(t)
	target := fmt.Sprintf("host=%s port=%d user=%s", cfg.Host, cfg.Port, cfg.User)
	if o.ConnectQuery != "" {
		target += " connect_query='" + strings.ReplaceAll(o.ConnectQuery, "'", "''") + "'"
	}
	var ini bytes.Buffer
	fmt.Fprintf(&ini, "[databases]\n* = %s\n\n[pgbouncer]\n", target)
	for _, kv := range [][2]string{
		{"listen_addr", "127.0.0.1"}, {"listen_port", port}, {"unix_socket_dir", ""},
		{"auth_type", "trust"}, {"auth_file", filepath.Join(dir, "users.txt")}, {"admin_users", cfg.User},
		{"pool_mode", "transaction"}, {"default_pool_size", strconv.Itoa(size)}, {"max_db_connections", strconv.Itoa(size)},
		{"min_pool_size", "0"}, {"reserve_pool_size", "0"}, {"max_client_conn", "2000"},
		{"ignore_startup_parameters", strings.Join(o.IgnoreStartupParameters, ",")},
		{"log_connections", "0"}, {"log_disconnections", "0"},
	} {
		fmt.Fprintf(&ini, "%s = %s\n", kv[0], kv[1])
	}
	if o.QueryWaitTimeout > 0 {
		fmt.Fprintf(&ini, "query_wait_timeout = %d\n", max(1, int(o.QueryWaitTimeout.Seconds())))
	}
	for name, body := range map[string][]byte{"pgbouncer.ini": ini.Bytes(), "users.txt": []byte(fmt.Sprintf("%q \"\"\n", cfg.User))} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := startProc(t, "pgbouncer", port, filepath.Join(dir, "pgbouncer.log"), true, filepath.Join(dir, "pgbouncer.ini"))
	return &PgBouncer{Proc: p, dsn: cfg}
}

// URL is the URL of database db through PgBouncer ("" = the test database).
func (b *PgBouncer) URL(db string) string {
	if db == "" {
		db = b.dsn.Database
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%s/%s?sslmode=disable", b.dsn.User, b.Port, db)
}

// PoolStat is one line of PgBouncer's SHOW POOLS.
type PoolStat struct {
	Database                             string
	ClientActive, ClientWaiting          int
	ServerActive, ServerIdle, ServerUsed int
}

// Pools reads PgBouncer's SHOW POOLS on its admin console.
func (b *PgBouncer) Pools(t testing.TB) []PoolStat {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, b.URL("pgbouncer")+"&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatalf("pgbouncer admin console: %v", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SHOW POOLS")
	if err != nil {
		t.Fatalf("SHOW POOLS: %v", err)
	}
	defer rows.Close()
	var out []PoolStat
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		for i, f := range rows.FieldDescriptions() {
			m[f.Name] = vals[i]
		}
		num := func(k string) int {
			n, _ := strconv.Atoi(fmt.Sprint(m[k]))
			return n
		}
		out = append(out, PoolStat{Database: fmt.Sprint(m["database"]), ClientActive: num("cl_active"), ClientWaiting: num("cl_waiting"),
			ServerActive: num("sv_active"), ServerIdle: num("sv_idle"), ServerUsed: num("sv_used")})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// RedisCluster is a private Redis Cluster: masters with one replica each,
// every node a redis-server process of its own on 127.0.0.1.
type RedisCluster struct {
	Nodes []*Proc
	dir   string
}

// StartRedisCluster starts a cluster of masters masters, each with one
// replica, created with redis-cli --cluster create. A node is declared
// failed after one second without an answer, so a failover takes a few
// seconds.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	dir := sharedDir(t, "promanage-redis-cluster-")
	rc := &RedisCluster{dir: dir}
	var addrs []string
	for i := range masters * 2 {
		port := FreePort(t)
		nodeDir := filepath.Join(dir, port)
		if err := os.MkdirAll(nodeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, "redis-server", port, filepath.Join(nodeDir, "redis.log"), false,
			"--port", port, "--bind", "127.0.0.1", "--dir", nodeDir, "--save", "", "--appendonly", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
			"--cluster-replica-validity-factor", "0", "--enable-debug-command", "local")
		p.Name = fmt.Sprintf("redis-%d", i)
		rc.Nodes = append(rc.Nodes, p)
		addrs = append(addrs, "127.0.0.1:"+port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	rc.WaitHealthy(t, 30*time.Second)
	return rc
}

// URL is the cluster's PROMANAGE_REDIS_URL: every node as a seed.
func (rc *RedisCluster) URL() string {
	var b strings.Builder
	b.WriteString("redis+cluster://127.0.0.1:" + rc.Nodes[0].Port)
	for i, n := range rc.Nodes[1:] {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString("addr=127.0.0.1:" + n.Port)
	}
	return b.String()
}

// node returns a plain client of one node.
func (rc *RedisCluster) node(p *Proc) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + p.Port, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
}

// MasterOf returns the node serving slot as master, according to a live
// node.
func (rc *RedisCluster) MasterOf(t testing.TB, slot int) *Proc {
	t.Helper()
	for _, n := range rc.Nodes {
		if !n.Alive() {
			continue
		}
		c := rc.node(n)
		shards, err := c.ClusterSlots(context.Background()).Result()
		c.Close()
		if err != nil {
			continue
		}
		for _, s := range shards {
			if int(s.Start) <= slot && slot <= int(s.End) && len(s.Nodes) > 0 {
				for _, p := range rc.Nodes {
					if strings.HasSuffix(s.Nodes[0].Addr, ":"+p.Port) {
						return p
					}
				}
			}
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return nil
}

// Slot returns the cluster slot of key (or channel), asked of a live node.
func (rc *RedisCluster) Slot(t testing.TB, key string) int {
	t.Helper()
	for _, n := range rc.Nodes {
		if !n.Alive() {
			continue
		}
		c := rc.node(n)
		slot, err := c.ClusterKeySlot(context.Background(), key).Result()
		c.Close()
		if err == nil {
			return int(slot)
		}
	}
	t.Fatal("no live node answers CLUSTER KEYSLOT")
	return 0
}

// WaitHealthy waits until every live node reports cluster_state:ok and
// every slot is served by a live master.
func (rc *RedisCluster) WaitHealthy(t testing.TB, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, why := rc.Healthy()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("redis cluster not healthy after %v: %s", within, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Healthy reports whether every live node reports cluster_state:ok and
// every slot is served by a live master, and if not, why.
func (rc *RedisCluster) Healthy() (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range rc.Nodes {
		if !n.Alive() {
			continue
		}
		c := rc.node(n)
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			c.Close()
			return false, err.Error()
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			c.Close()
			return false, n.Port + ": " + strings.ReplaceAll(info, "\r\n", " ")
		}
		slots, err := c.ClusterSlots(ctx).Result()
		c.Close()
		if err != nil {
			return false, err.Error()
		}
		for _, s := range slots {
			if len(s.Nodes) == 0 {
				return false, "slots without a node"
			}
			for _, p := range rc.Nodes {
				if strings.HasSuffix(s.Nodes[0].Addr, ":"+p.Port) && !p.Alive() {
					return false, fmt.Sprintf("%s still names the dead %s as master of %d-%d", n.Port, p.Port, s.Start, s.End)
				}
			}
		}
	}
	return true, ""
}

// StartRedis starts a private standalone redis-server (no persistence).
func StartRedis(t testing.TB, port string) *Proc {
	t.Helper()
	dir := sharedDir(t, "promanage-redis-")
	return startProc(t, "redis-server", port, filepath.Join(dir, "redis.log"), false,
		"--port", port, "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no")
}
