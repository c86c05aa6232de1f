package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/sync/errgroup"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
)

func (m *Main) runWorker(ctx context.Context, args []string) error {
	if _, err := m.flags("worker", args, nil); err != nil {
		return err
	}
	if err := checkNoDevSecrets(m.Config); err != nil {
		return err
	}
	a, err := openApp(ctx, m.Config)
	if err != nil {
		return err
	}
	defer a.close()
	if err := a.checkSchema(ctx); err != nil {
		return err
	}
	// The worker serves its own /healthz and /readyz; /metrics is on the
	// metrics listener, as for the api.
	stopMetrics, err := m.startMetrics(a)
	if err != nil {
		return err
	}
	defer stopMetrics()
	health := fiber.New(fiber.Config{DisableStartupMessage: true})
	health.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	health.Get("/readyz", api.ReadyHandler(a.readyChecks(), a.metrics))
	ln, err := net.Listen("tcp", m.Config.HTTPAddr)
	if err != nil {
		return err
	}
	go health.Listener(ln)
	defer health.Shutdown()
	slog.Info("worker running", "health_addr", ln.Addr().String())
	return a.runWorker(ctx)
}

// runWorker runs the outbox worker and every area's background jobs (the
// scheduler, garbage collection, ...) until ctx ends.
func (a *app) runWorker(ctx context.Context) error {
	consumers := map[string]core.Consumer{}
	for _, cs := range []map[string]core.Consumer{a.workConsumers(), a.documentConsumers(), a.pluginConsumers()} {
		for name, c := range cs {
			consumers[name] = c
		}
	}
	for _, name := range outboxConsumers {
		if consumers[name] == nil {
			return fmt.Errorf("outbox consumer %q has no handler", name)
		}
	}
	// LISTEN needs a session: the direct URL, never a transaction pooler.
	listenURL, err := a.cfg.sessionURL()
	if err != nil {
		return err
	}
	w := &core.OutboxWorker{DB: a.db, ListenURL: listenURL, Consumers: consumers, Lease: a.cfg.OutboxLease}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(ctx) })
	for _, job := range concat(a.workJobs(), a.documentJobs(), a.pluginJobs(), a.accessJobs()) {
		g.Go(func() error { return job(ctx) })
	}
	return g.Wait()
}

func concat[T any](lists ...[]T) []T {
	var out []T
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}
