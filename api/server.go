// Package api is ProManage's REST API on Fiber: the route table (each tenant
// route names the permission it needs), the middleware chain (request id,
// access log, metrics, authentication, tenant resolution, authorization),
// problem+json errors, health endpoints and the OpenAPI document.
//
// It must never let a tenant route run without a membership and permission
// check, never answer 403 to someone outside the tenant (404 instead), and
// never keep a value from the request context (c.Params, c.Body, headers)
// beyond the handler: the app runs with Immutable so values are copies.
package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/identity"
	"github.com/promanage/promanage/rbac"
	"github.com/promanage/promanage/tenant"
)

// Deps are the services the API serves.
type Deps struct {
	DB        *gorm.DB
	Registry  *tenant.Registry
	Auth      *identity.Authenticator
	Enforcers *rbac.Enforcers
	Tenants   *core.TenantService
	Members   *core.MemberService
	Projects  *core.ProjectService
	Audit     *core.AuditService
	// Ready are the dependency checks of /readyz, by name.
	Ready []ReadyCheck
	// Metrics, if nil, is a new registry.
	Metrics *Metrics
	// Each area's own dependencies, declared in its routes_*.go file.
	Work      WorkDeps
	Documents DocumentDeps
	Plugins   PluginDeps
	Access    AccessDeps
}

// ReadyCheck is one dependency of /readyz.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Options tunes the HTTP server.
type Options struct {
	// BodyLimit caps request bodies (default 1 MiB).
	BodyLimit int
	// ReadTimeout, WriteTimeout, IdleTimeout (defaults 15s, 60s, 60s).
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// AllowedOrigins may send cookie-authenticated unsafe requests. The
	// request's own origin (scheme://host) is always allowed.
	AllowedOrigins []string
	// RequestTimeout bounds each request's database and dependency calls
	// (fasthttp does not cancel on client disconnect). Default 30s.
	RequestTimeout time.Duration
}

// Server is the HTTP API.
type Server struct {
	app     *fiber.App
	d       Deps
	o       Options
	metrics *Metrics
	routes  []Route
}

// New builds the API.
func New(d Deps, opts *Options) *Server {
	o := Options{BodyLimit: 1 << 20, ReadTimeout: 15 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 60 * time.Second, RequestTimeout: 30 * time.Second}
	if opts != nil {
		if opts.BodyLimit > 0 {
			o.BodyLimit = opts.BodyLimit
		}
		if opts.ReadTimeout > 0 {
			o.ReadTimeout = opts.ReadTimeout
		}
		if opts.WriteTimeout > 0 {
			o.WriteTimeout = opts.WriteTimeout
		}
		if opts.IdleTimeout > 0 {
			o.IdleTimeout = opts.IdleTimeout
		}
		if opts.RequestTimeout > 0 {
			o.RequestTimeout = opts.RequestTimeout
		}
		o.AllowedOrigins = opts.AllowedOrigins
	}
	s := &Server{d: d, o: o, metrics: d.Metrics}
	if s.metrics == nil {
		s.metrics = NewMetrics(d.DB)
	}
	s.app = fiber.New(fiber.Config{
		AppName:               "promanage",
		Immutable:             true,
		BodyLimit:             o.BodyLimit,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		IdleTimeout:           o.IdleTimeout,
		ErrorHandler:          errorHandler,
		DisableStartupMessage: true,
		JSONEncoder:           jsonMarshal,
		JSONDecoder:           json.Unmarshal,
		ReadBufferSize:        16 << 10,
	})
	s.app.Use(s.requestContext, s.accessLog)
	s.app.Get("/healthz", s.healthz)
	s.app.Get("/readyz", s.readyz)
	s.app.Get("/metrics", s.metrics.Handler())
	s.app.Get("/openapi.json", s.openapiJSON)
	s.app.Get("/docs", s.docs)
	s.routes = s.routeTable()
	for _, r := range s.routes {
		s.app.Add(r.Method, r.Path, s.wrap(r))
	}
	return s
}

// App exposes the Fiber app (tests use app.Test).
func (s *Server) App() *fiber.App { return s.app }

// Routes returns the route table.
func (s *Server) Routes() []Route { return s.routes }

// Listen serves on addr until Shutdown.
func (s *Server) Listen(addr string) error { return s.app.Listen(addr) }

// Shutdown stops accepting connections and waits for in-flight requests.
func (s *Server) Shutdown(ctx context.Context) error { return s.app.ShutdownWithContext(ctx) }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func (s *Server) healthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), 3*time.Second)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	ch := make(chan result, len(s.d.Ready))
	for _, chk := range s.d.Ready {
		go func() { ch <- result{chk.Name, chk.Check(ctx)} }()
	}
	checks := map[string]string{}
	ok := true
	for range s.d.Ready {
		r := <-ch
		if r.err != nil {
			ok = false
			checks[r.name] = "unavailable"
			slog.WarnContext(ctx, "readiness check failed", "dependency", r.name, "err", r.err)
		} else {
			checks[r.name] = "ok"
		}
	}
	if !ok {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "unavailable", "checks": checks})
	}
	return c.JSON(fiber.Map{"status": "ok", "checks": checks})
}
