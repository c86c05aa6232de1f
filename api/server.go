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
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/identity"
	"github.com/promanage/promanage/rbac"
	"github.com/promanage/promanage/storage"
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
	// Required marks what this process needs to serve at all (its database
	// pool): only a required check failing makes /readyz answer 503. The
	// others (Redis, Kratos, the bucket) are shared by every replica, so
	// failing readiness on them would take every replica out of the load
	// balancer at once during their outage; they are reported in the body
	// and as promanage_dependency_up instead.
	Required bool
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
	// TrustedProxies (IPs or CIDRs) may set the client address with
	// X-Forwarded-For (used for per-address limits and logs).
	TrustedProxies []string
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

	authBlockMu sync.Mutex
	authBlocked map[string]time.Time // client address -> end of its auth-failure block
	trusted     []netip.Prefix       // Options.TrustedProxies, parsed
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
		o.TrustedProxies = opts.TrustedProxies
	}
	s := &Server{d: d, o: o, metrics: d.Metrics, authBlocked: map[string]time.Time{}, trusted: parseTrustedProxies(o.TrustedProxies)}
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
		// Uploads stream from the socket to the bucket. With streaming,
		// fasthttp no longer enforces BodyLimit and a multipart body would
		// be pre-parsed into memory and temporary files: bodyGuard buffers
		// (at most BodyLimit) the body of every route that does not stream
		// it, and multipart pre-parsing is off.
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		// X-Forwarded-* are honoured only from the configured proxies. No
		// ProxyHeader: Fiber would take the LEFT-most X-Forwarded-For
		// address, which the client writes; the client address is
		// clientIP's (right-most untrusted hop).
		EnableTrustedProxyCheck: len(o.TrustedProxies) > 0,
		TrustedProxies:          o.TrustedProxies,
	})
	s.app.Use(s.bodyHygiene, s.securityHeaders, s.requestContext, s.accessLog)
	s.app.Get("/healthz", s.healthz)
	s.app.Get("/readyz", s.readyz)
	s.app.Get("/openapi.json", s.openapiJSON)
	s.app.Get("/docs", s.docs)
	s.app.Get("/docs/assets/:name", s.docsAssetHandler)
	// Signed URLs of buckets that cannot sign (file://, mem://) point here;
	// the HMAC signature in the query authorizes, not a session, so this is
	// outside the route table (whose /v1 routes all need a session).
	s.app.Get(storage.BlobsPath, s.serveBlob)
	s.routes = s.routeTable()
	streamed := s.streamedRoutes()
	for _, r := range s.routes {
		s.app.Add(r.Method, r.Path, s.bodyGuard(streamed[r.Method+" "+r.Path]), s.wrap(r))
	}
	return s
}

// App exposes the Fiber app (tests use app.Test).
func (s *Server) App() *fiber.App { return s.app }

// Routes returns the route table.
func (s *Server) Routes() []Route { return s.routes }

// Shutdown stops accepting connections and waits for in-flight requests.
func (s *Server) Shutdown(ctx context.Context) error { return s.app.ShutdownWithContext(ctx) }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func (s *Server) healthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) readyz(c *fiber.Ctx) error { return ReadyHandler(s.d.Ready, s.metrics)(c) }

// ReadyHandler answers /readyz: every check runs at once within 2 s; the
// answer is 503 only if a Required check failed, and the body names the
// state of each dependency. m, if set, records each as
// promanage_dependency_up. The API and the worker serve the same handler.
func ReadyHandler(checks []ReadyCheck, m *Metrics) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		type result struct {
			chk ReadyCheck
			err error
		}
		ch := make(chan result, len(checks))
		for _, chk := range checks {
			go func() { ch <- result{chk, chk.Check(ctx)} }()
		}
		states := map[string]string{}
		ok := true
		for range checks {
			r := <-ch
			up := r.err == nil
			if m != nil {
				m.dependencyUp(r.chk.Name, up)
			}
			if up {
				states[r.chk.Name] = "ok"
				continue
			}
			states[r.chk.Name] = "unavailable"
			if r.chk.Required {
				ok = false
			}
			slog.WarnContext(ctx, "readiness check failed", "dependency", r.chk.Name, "required", r.chk.Required, "err", r.err)
		}
		if !ok {
			return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "unavailable", "checks": states})
		}
		status := "ok"
		if len(states) > 0 {
			for _, v := range states {
				if v != "ok" {
					status = "degraded"
				}
			}
		}
		return c.JSON(fiber.Map{"status": status, "checks": states})
	}
}

const localBody = "pm.body"

// streamedRoutes are the routes ("METHOD path") whose handlers read the
// request body as a stream (requestBody) with their own limits, instead of
// the buffered c.Body(): document uploads and plugin uploads (modules may
// exceed BodyLimit). Every other route's body is capped at BodyLimit.
func (s *Server) streamedRoutes() map[string]bool {
	const t = tenantPath
	return map[string]bool{
		"POST " + t + "/projects/:id/documents":  true,
		"POST " + t + "/documents/:doc/versions": true,
		"POST " + t + "/plugins":                 true,
	}
}

// bodyGuard prepares the request body for a route. A route that streams its
// body (an upload) gets a streamedBody that tracks how far it was read and
// keeps the connection's read deadline moving while bytes arrive. Every
// other route gets its body read now, through a reader limited to
// BodyLimit (413 beyond, without reading further), so c.Body(),
// decodeObject and multipart helpers see a bounded, buffered body.
func (s *Server) bodyGuard(streams bool) fiber.Handler {
	return func(c *fiber.Ctx) error {
		stream := c.Context().RequestBodyStream()
		if stream == nil {
			return c.Next()
		}
		if streams {
			c.Locals(localBody, &streamedBody{r: stream, conn: c.Context().Conn(), idle: s.o.ReadTimeout})
			return c.Next()
		}
		limit := s.o.BodyLimit
		tooLarge := func() error {
			// Read (and drop) what the client is still sending, so it can
			// read the 413 instead of a connection reset; the connection
			// closes after the answer either way.
			drain(&streamedBody{r: stream}, c.Context().Conn())
			c.Context().SetConnectionClose()
			return errf(core.ETOOLARGE, "the request body exceeds "+strconv.Itoa(limit)+" bytes")
		}
		if cl := c.Request().Header.ContentLength(); cl > limit {
			return tooLarge()
		}
		buf, err := io.ReadAll(io.LimitReader(stream, int64(limit)+1))
		if err != nil {
			c.Context().SetConnectionClose()
			return fiber.NewError(fiber.StatusBadRequest, "the request body could not be read")
		}
		if len(buf) > limit {
			return tooLarge()
		}
		c.Request().SetBodyRaw(buf)
		return c.Next()
	}
}

// bodyHygiene runs around every request. fasthttp does not skip the unread
// rest of a streamed body: the next request on the connection would be
// parsed from it. So when a body was not read to its end (an upload
// refused early, a body sent to an unknown route), it drains a little of
// it and otherwise closes the connection after the response.
func (s *Server) bodyHygiene(c *fiber.Ctx) error {
	err := c.Next()
	stream := c.Context().RequestBodyStream()
	if stream == nil {
		return err
	}
	if sb, ok := c.Locals(localBody).(*streamedBody); ok {
		if sb.eof {
			return err
		}
		cl := int64(c.Request().Header.ContentLength())
		if sb.err == nil && (cl < 0 || cl-sb.n <= drainMax) && drain(sb, c.Context().Conn()) {
			return err
		}
	} else if c.Request().Header.ContentLength() == 0 {
		return err
	}
	c.Context().SetConnectionClose()
	return err
}

// drainMax is how much of an unread upload body the server still reads
// (and discards) after refusing it early (401, 403, 404, 413 on quota...):
// a client still sending can then read the answer instead of a connection
// reset. Larger remainders close the connection at once.
const drainMax = 64 << 20

// drain reads up to drainMax of an unread body within 10 s and reports
// whether the body ended.
func drain(sb *streamedBody, conn net.Conn) bool {
	if conn != nil {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	sb.idle = 0
	_, _ = io.Copy(io.Discard, io.LimitReader(sb, drainMax))
	if sb.eof {
		return true
	}
	var one [1]byte
	n, _ := sb.Read(one[:])
	return n == 0 && sb.eof
}

// streamedBody is the request body of a streaming route.
type streamedBody struct {
	r    io.Reader
	conn net.Conn
	// idle is how long a read may wait for the next bytes; every read
	// pushes the connection's deadline (the server's ReadTimeout would
	// otherwise cut a long upload off).
	idle     time.Duration
	extended time.Time
	n        int64 // bytes read
	eof      bool
	err      error
}

func (b *streamedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.idle > 0 && b.conn != nil {
		if now := time.Now(); now.Sub(b.extended) > 100*time.Millisecond {
			_ = b.conn.SetReadDeadline(now.Add(b.idle))
			b.extended = now
		}
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if errors.Is(err, io.EOF) {
		b.eof = true
		err = io.EOF
	} else if err != nil {
		b.err = err
	}
	return n, err
}

// requestBody is the streamed body of an upload route.
func requestBody(c *fiber.Ctx) (*streamedBody, bool) {
	sb, ok := c.Locals(localBody).(*streamedBody)
	return sb, ok
}
