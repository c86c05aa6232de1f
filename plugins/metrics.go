package plugins

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts plugin invocations for Prometheus:
// promanage_plugin_invocations_total{hook,outcome} and
// promanage_plugin_invocation_duration_seconds{hook}. Labels are bounded: hook
// is one of ValidationHooks and NotificationHooks ("other" for anything
// else) and outcome one of the invocation log's outcomes; no tenant or plugin
// id ever becomes a label (per-tenant detail is in the invocation log).
// Dry runs (a tenant testing its plugin) are not counted: the metrics
// describe production traffic the operator is paged for.
type Metrics struct {
	invocations *prometheus.CounterVec
	duration    *prometheus.HistogramVec
}

// NewMetrics registers the plugin metrics with reg, with a zero series for
// every hook and the outcomes it can have, so rates and alerts work from the
// first invocation.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "promanage_plugin_invocations_total",
			Help: "Plugin invocations by hook and outcome (allowed, rejected, ok, failed).",
		}, []string{"hook", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "promanage_plugin_invocation_duration_seconds",
			Help:    "Time a plugin invocation ran in the sandbox, by hook.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"hook"}),
	}
	for _, c := range []prometheus.Collector{m.invocations, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register plugin metrics: %w", err)
		}
	}
	for _, h := range ValidationHooks {
		for _, o := range []string{OutcomeAllowed, OutcomeRejected, OutcomeFailed} {
			m.invocations.WithLabelValues(h, o)
		}
	}
	for _, h := range NotificationHooks {
		for _, o := range []string{OutcomeOK, OutcomeFailed} {
			m.invocations.WithLabelValues(h, o)
		}
	}
	return m, nil
}

// observe counts one recorded invocation; m may be nil.
func (m *Metrics) observe(hook, outcome string, inv *Invocation, dryRun bool) {
	if m == nil || dryRun || outcome == "" {
		return
	}
	if !KnownHook(hook) {
		hook = "other"
	}
	m.invocations.WithLabelValues(hook, outcome).Inc()
	if inv != nil {
		m.duration.WithLabelValues(hook).Observe(inv.Duration.Seconds())
	}
}
