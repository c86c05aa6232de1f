package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"gorm.io/gorm"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/plugins"
)

// newMetrics builds the process's one Prometheus registry. serve, worker and
// dev all use it, so the api and the worker export the same families (the
// worker's HTTP series stay empty; the api's outbox and tenant gauges let the
// alerts see a backlog even when every worker is down). db may be nil
// (metrics-catalog).
func newMetrics(db *gorm.DB) (*api.Metrics, *plugins.Metrics, error) {
	m := api.NewMetrics(db)
	m.EnablePlatform(db, nil)
	pm, err := plugins.NewMetrics(m)
	if err != nil {
		return nil, nil, err
	}
	return m, pm, nil
}

// startMetrics serves the app's registry on PROMANAGE_METRICS_ADDR (its own
// listener: the Ingress routes the public port, never this one). The
// returned stop closes it. Without an address it serves nothing.
func (m *Main) startMetrics(a *app) (stop func(), err error) {
	if m.Config.MetricsAddr == "" {
		slog.Info("metrics listener disabled (PROMANAGE_METRICS_ADDR is empty)")
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", m.Config.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s (metrics): %w", m.Config.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.HTTPHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("metrics listener stopped", "err", err)
		}
	}()
	slog.Info("metrics listening", "addr", ln.Addr().String())
	if m.metricsReady != nil {
		m.metricsReady <- ln.Addr().String()
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// runMetricsCatalog is the hidden `promanage metrics-catalog`: one JSON
// object per line for every metric family the api and worker registries
// hold (name, type, help, labels). deploy/validate checks every metric name
// used under deploy/ against it, so dashboards, alerts and autoscalers
// cannot name a series the binary does not export.
func (m *Main) runMetricsCatalog(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("metrics-catalog takes no arguments")
	}
	reg, _, err := newMetrics(nil)
	if err != nil {
		return err
	}
	entries, err := reg.Catalog()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(m.Stdout)
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}
