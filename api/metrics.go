package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// Metrics is the process's Prometheus registry: HTTP, database pool and Go
// runtime metrics, plus whatever other packages register through it (it is a
// prometheus.Registerer). It is served on its own listener
// (PROMANAGE_METRICS_ADDR), never on the public API port.
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight prometheus.Gauge

	mu       sync.Mutex
	vecTypes map[string]string // fqName -> type of the vectors registered (see Catalog)
	platform *platformGauges   // nil until EnablePlatform
	deps     *prometheus.GaugeVec
}

// NewMetrics registers the HTTP, DB pool and Go runtime metrics. db may be nil
// (the pool gauges then read zero).
func NewMetrics(db *gorm.DB) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		vecTypes: map[string]string{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "promanage_http_requests_total", Help: "HTTP requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "promanage_http_request_duration_seconds", Help: "HTTP request latency by route pattern and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "promanage_http_in_flight_requests", Help: "HTTP requests being served.",
		}),
		deps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "promanage_dependency_up", Help: "1 if the dependency answered this process's last readiness check, else 0.",
		}, []string{"dependency"}),
	}
	// The pool is pgxpool's (tenant.OpenDB); database/sql keeps no idle
	// connections of its own, so its statistics would say little.
	stat := func() tenant.PoolStats {
		if db == nil {
			return tenant.PoolStats{}
		}
		st, _ := tenant.Stats(db)
		return st
	}
	m.MustRegister(m.requests, m.latency, m.inFlight, m.deps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "promanage_db_open_connections", Help: "Open database connections."},
			func() float64 { return float64(stat().TotalConns) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "promanage_db_in_use_connections", Help: "Database connections in use."},
			func() float64 { return float64(stat().AcquiredConns) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "promanage_db_idle_connections", Help: "Idle database connections."},
			func() float64 { return float64(stat().IdleConns) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "promanage_db_wait_count_total", Help: "Acquisitions that waited for a free database connection (or dialled a new one)."},
			func() float64 { return float64(stat().EmptyAcquireCount) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "promanage_db_acquire_timeouts_total", Help: "Waits for a database connection that hit PROMANAGE_DB_ACQUIRE_TIMEOUT (answered 503)."},
			func() float64 { return float64(stat().AcquireTimeouts) }),
	)
	return m
}

// Register registers c with the registry (prometheus.Registerer) and
// remembers the type of a vector, which a registry cannot tell before its
// first sample (Catalog needs it).
func (m *Metrics) Register(c prometheus.Collector) error {
	if err := m.Registry.Register(c); err != nil {
		return err
	}
	var typ string
	switch c.(type) {
	case *prometheus.CounterVec:
		typ = "counter"
	case *prometheus.GaugeVec:
		typ = "gauge"
	case *prometheus.HistogramVec:
		typ = "histogram"
	case *prometheus.SummaryVec:
		typ = "summary"
	default:
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range describe(c) {
		if name, _, err := descName(d); err == nil {
			m.vecTypes[name] = typ
		}
	}
	return nil
}

// MustRegister is Register that panics on error (prometheus.Registerer).
func (m *Metrics) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := m.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister removes c from the registry (prometheus.Registerer).
func (m *Metrics) Unregister(c prometheus.Collector) bool { return m.Registry.Unregister(c) }

func (m *Metrics) dependencyUp(name string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.deps.WithLabelValues(name).Set(v)
}

func (m *Metrics) observe(method, route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(d.Seconds())
}

// HTTPHandler serves the registry in the Prometheus text format, after
// refreshing the platform gauges (EnablePlatform). It belongs on the metrics
// listener only.
func (m *Metrics) HTTPHandler() http.Handler {
	h := promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorLog: slogPromLogger{}})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		p := m.platform
		m.mu.Unlock()
		if p != nil {
			p.refresh(r.Context())
		}
		h.ServeHTTP(w, r)
	})
}

type slogPromLogger struct{}

func (slogPromLogger) Println(v ...any) { slog.Warn("metrics: " + fmt.Sprint(v...)) }

// PlatformOptions tunes the platform gauges.
type PlatformOptions struct {
	// QueryTimeout bounds the queries of one refresh (default 2s), well
	// under Prometheus' scrape timeout.
	QueryTimeout time.Duration
	// MinInterval: a scrape within it of the last refresh reuses its values
	// (default 5s), so the database cost does not grow with the scrape rate.
	MinInterval time.Duration
	// MaxCount caps the pending deliveries counted (default 100000), so one
	// refresh reads a bounded part of the index however large the backlog.
	MaxCount int
}

// TenantStates are the values of the state label of promanage_tenants.
var TenantStates = []string{"provisioning", "active", "suspended", "deleted"}

// EnablePlatform adds the platform-wide gauges read from the database when
// the registry is scraped: promanage_outbox_lag_seconds,
// promanage_outbox_pending and promanage_tenants{state}. Every replica
// reports the same values (the HPA and the alerts take the max). If a refresh
// fails (database down, timeout) the gauges are absent from that scrape
// rather than stale, and promanage_metrics_refresh_errors_total counts it.
func (m *Metrics) EnablePlatform(db *gorm.DB, opts *PlatformOptions) {
	p := &platformGauges{db: db, timeout: 2 * time.Second, minInterval: 5 * time.Second, maxCount: 100000}
	if opts != nil {
		if opts.QueryTimeout > 0 {
			p.timeout = opts.QueryTimeout
		}
		if opts.MinInterval > 0 {
			p.minInterval = opts.MinInterval
		}
		if opts.MaxCount > 0 {
			p.maxCount = opts.MaxCount
		}
	}
	p.lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "promanage_outbox_lag_seconds",
		Help: "Seconds the oldest due, undelivered outbox delivery has waited since it became due (its event's time, or its retry time); 0 when none waits."}, nil)
	p.pending = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "promanage_outbox_pending",
		Help: "Outbox deliveries due now and not yet delivered (claimed ones included; capped at the refresh's MaxCount)."}, nil)
	p.tenants = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "promanage_tenants",
		Help: "Tenants by lifecycle state."}, []string{"state"})
	p.errors = prometheus.NewCounter(prometheus.CounterOpts{Name: "promanage_metrics_refresh_errors_total",
		Help: "Refreshes of the platform gauges (outbox, tenants) that failed; the gauges are absent from that scrape."})
	m.MustRegister(p.lag, p.pending, p.tenants, p.errors)
	m.mu.Lock()
	m.platform = p
	m.mu.Unlock()
}

type platformGauges struct {
	db                   *gorm.DB
	timeout, minInterval time.Duration
	maxCount             int
	lag, pending         *prometheus.GaugeVec
	tenants              *prometheus.GaugeVec
	errors               prometheus.Counter

	mu   sync.Mutex // one refresh at a time
	last time.Time
}

// refresh reads the platform gauges from PostgreSQL: two index- or
// small-table reads on one pooled connection, bounded by p.timeout.
func (p *platformGauges) refresh(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db == nil || time.Since(p.last) < p.minInterval {
		return
	}
	p.last = time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if err := p.query(ctx); err != nil {
		p.lag.Reset()
		p.pending.Reset()
		p.tenants.Reset()
		p.errors.Inc()
		slog.Warn("metrics: platform gauges unavailable for this scrape", "err", err)
	}
}

func (p *platformGauges) query(ctx context.Context) error {
	db := p.db.WithContext(ctx)
	var outbox struct {
		Pending int64
		Lag     float64
	}
	// The partial index outbox_deliveries_due_idx serves both the order and
	// the filter; LIMIT bounds the rows read.
	err := db.Raw(`SELECT count(*) AS pending,
		       coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS lag
		  FROM (SELECT next_attempt_at FROM public.outbox_deliveries
		         WHERE state = 'pending' AND next_attempt_at <= now()
		         ORDER BY next_attempt_at LIMIT ?) due`, p.maxCount).Scan(&outbox).Error
	if err != nil {
		return fmt.Errorf("read outbox backlog: %w", err)
	}
	var states []struct {
		State string
		N     int64
	}
	if err := db.Raw(`SELECT state, count(*) AS n FROM public.tenants GROUP BY state`).Scan(&states).Error; err != nil {
		return fmt.Errorf("count tenants: %w", err)
	}
	p.lag.WithLabelValues().Set(max(outbox.Lag, 0))
	p.pending.WithLabelValues().Set(float64(outbox.Pending))
	for _, s := range TenantStates {
		p.tenants.WithLabelValues(s).Set(0)
	}
	for _, s := range states {
		if slices.Contains(TenantStates, s.State) { // the column's CHECK allows no other value
			p.tenants.WithLabelValues(s.State).Set(float64(s.N))
		}
	}
	return nil
}

// CatalogEntry is one metric family the registry can export.
type CatalogEntry struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"` // counter, gauge, histogram, summary, gauge_histogram, untyped
	Help   string   `json:"help"`
	Labels []string `json:"labels"`
}

// Catalog lists every metric family the registry holds, from the collectors'
// own descriptors (so a vector without samples yet is listed too), sorted by
// name. It reads no database: the platform gauges are not refreshed.
func (m *Metrics) Catalog() ([]CatalogEntry, error) {
	fams, err := m.Registry.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather: %w", err)
	}
	types := map[string]string{}
	for _, f := range fams {
		types[f.GetName()] = strings.ToLower(f.GetType().String())
	}
	m.mu.Lock()
	for n, t := range m.vecTypes {
		types[n] = t
	}
	m.mu.Unlock()
	var out []CatalogEntry
	seen := map[string]bool{}
	for _, d := range describe(m.Registry) {
		name, e, err := descName(d)
		if err != nil {
			return nil, err
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		t, ok := types[name]
		if !ok {
			return nil, fmt.Errorf("catalog: metric %s has no known type (register vectors through Metrics.Register)", name)
		}
		e.Type = t
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b CatalogEntry) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

func describe(c prometheus.Collector) []*prometheus.Desc {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var out []*prometheus.Desc
	for d := range ch {
		out = append(out, d)
	}
	return out
}

// descPattern reads a Desc's String() (client_golang offers no accessors);
// TestMetricsCatalog (cmd/promanage) fails if its format changes.
var descPattern = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), .*variableLabels: \{([^}]*)\}\}$`)

func descName(d *prometheus.Desc) (string, CatalogEntry, error) {
	if err := d.Err(); err != nil {
		return "", CatalogEntry{}, fmt.Errorf("catalog: invalid descriptor: %w", err)
	}
	sm := descPattern.FindStringSubmatch(d.String())
	if sm == nil {
		return "", CatalogEntry{}, fmt.Errorf("catalog: cannot read descriptor %s", d)
	}
	name, err1 := strconv.Unquote(sm[1])
	help, err2 := strconv.Unquote(sm[2])
	if err1 != nil || err2 != nil {
		return "", CatalogEntry{}, fmt.Errorf("catalog: cannot read descriptor %s", d)
	}
	labels := []string{}
	for _, l := range strings.Split(sm[3], ",") {
		// A constrained label is written c(name).
		if l = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(l), "c("), ")"); l != "" {
			labels = append(labels, l)
		}
	}
	return name, CatalogEntry{Name: name, Help: help, Labels: labels}, nil
}
