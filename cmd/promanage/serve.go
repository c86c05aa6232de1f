package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/promanage/promanage/identity"
)

func (m *Main) runServe(ctx context.Context, args []string) error {
	if _, err := m.flags("serve", args, nil); err != nil {
		return err
	}
	if err := checkNoDevSecrets(m.Config); err != nil {
		return err
	}
	if err := checkJWKSURL(ctx, m.Config.JWKSURL); err != nil {
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
	stopMetrics, err := m.startMetrics(a)
	if err != nil {
		return err
	}
	defer stopMetrics()
	return m.serveAPI(ctx, a)
}

// checkJWKSURL refuses a tokenizer JWKS holding a development key. A
// remote JWKS that cannot be fetched yet is checked when it can: the
// verifier refuses every JWT until then anyway.
func checkJWKSURL(ctx context.Context, url string) error {
	if url == "" {
		return nil
	}
	keys, err := identity.LoadJWKS(ctx, url)
	if err != nil {
		slog.Warn("JWKS not checked for development keys: it cannot be read yet", "url", url, "err", err)
		return nil
	}
	return checkJWKSNotDev(keys)
}

// serveAPI serves until ctx ends, then drains in-flight requests.
func (m *Main) serveAPI(ctx context.Context, a *app) error {
	srv := a.server()
	ln, err := net.Listen("tcp", m.Config.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", m.Config.HTTPAddr, err)
	}
	go a.invalidator.Run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.App().Listener(ln) }()
	slog.Info("api listening", "addr", ln.Addr().String())
	if m.ready != nil {
		m.ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info("shutting down: draining in-flight requests", "timeout", m.Config.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	select {
	case err := <-errc:
		if err != nil {
			return err
		}
	case <-time.After(time.Second):
	}
	return nil
}
