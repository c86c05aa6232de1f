package api

import (
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// Metrics is the API's Prometheus registry.
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight prometheus.Gauge
	deps     *prometheus.GaugeVec
}

// NewMetrics registers the HTTP, DB pool and Go runtime metrics. db may be nil.
func NewMetrics(db *gorm.DB) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
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
	reg.MustRegister(m.requests, m.latency, m.inFlight, m.deps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if db != nil {
		// The pool is pgxpool's (tenant.OpenDB); database/sql keeps no idle
		// connections of its own, so its statistics would say little.
		stat := func() tenant.PoolStats { st, _ := tenant.Stats(db); return st }
		reg.MustRegister(
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
	}
	return m
}

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

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() fiber.Handler {
	return adaptor.HTTPHandler(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
}
