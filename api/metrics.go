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
)

// Metrics is the API's Prometheus registry.
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight prometheus.Gauge
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
	}
	reg.MustRegister(m.requests, m.latency, m.inFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if db != nil {
		if sqlDB, err := db.DB(); err == nil {
			reg.MustRegister(
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "promanage_db_open_connections", Help: "Open database connections."},
					func() float64 { return float64(sqlDB.Stats().OpenConnections) }),
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "promanage_db_in_use_connections", Help: "Database connections in use."},
					func() float64 { return float64(sqlDB.Stats().InUse) }),
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "promanage_db_idle_connections", Help: "Idle database connections."},
					func() float64 { return float64(sqlDB.Stats().Idle) }),
				prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "promanage_db_wait_count_total", Help: "Waits for a free database connection."},
					func() float64 { return float64(sqlDB.Stats().WaitCount) }),
			)
		}
	}
	return m
}

func (m *Metrics) observe(method, route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(d.Seconds())
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() fiber.Handler {
	return adaptor.HTTPHandler(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
}
