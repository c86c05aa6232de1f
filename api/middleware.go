package api

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/identity"
	"github.com/promanage/promanage/rbac"
	"github.com/promanage/promanage/tenant"
)

const (
	localRequestID = "pm.request_id"
	localPrincipal = "pm.principal"
	localTenant    = "pm.tenant"
	localRole      = "pm.role"
	localCancel    = "pm.cancel"
)

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func requestID(c *fiber.Ctx) string {
	id, _ := c.Locals(localRequestID).(string)
	return id
}

// requestContext assigns the request id and a context with a deadline, since
// fasthttp does not cancel a request when the client goes away.
func (s *Server) requestContext(c *fiber.Ctx) error {
	rid := c.Get("X-Request-ID")
	if !requestIDPattern.MatchString(rid) {
		rid = uuid.NewString()
	}
	c.Locals(localRequestID, rid)
	c.Set("X-Request-ID", rid)
	ctx, cancel := context.WithTimeout(context.Background(), s.o.RequestTimeout)
	defer cancel()
	c.SetUserContext(ctx)
	return c.Next()
}

// accessLog writes one JSON log line and the HTTP metrics per request.
func (s *Server) accessLog(c *fiber.Ctx) error {
	start := time.Now()
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	err := c.Next()
	if err != nil {
		if herr := errorHandler(c, err); herr != nil {
			slog.Error("write error response", "err", herr)
		}
	}
	status := c.Response().StatusCode()
	route := c.Route().Path
	if status == fiber.StatusNotFound && route == "/" {
		route = "unmatched"
	}
	d := time.Since(start)
	s.metrics.observe(c.Method(), route, status, d)
	attrs := []any{"request_id", requestID(c), "ip", s.clientIP(c), "method", c.Method(), "route", route,
		"status", status, "latency_ms", float64(d.Microseconds()) / 1000}
	if t, ok := c.Locals(localTenant).(*tenant.Tenant); ok {
		attrs = append(attrs, "tenant", t.Slug)
	}
	if p, ok := c.Locals(localPrincipal).(*identity.Principal); ok {
		attrs = append(attrs, "user", p.ID.String())
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	slog.Log(c.UserContext(), level, "http request", attrs...)
	return nil
}

// wrap applies authentication and, for tenant routes, tenant resolution and
// authorization before the handler.
func (s *Server) wrap(r Route) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if r.Public {
			return r.Handler(c)
		}
		if strings.HasPrefix(r.Path, hooksPath) {
			if err := s.authenticateHook(c); err != nil {
				return err
			}
			return r.Handler(c)
		}
		ip := s.clientIP(c)
		c.SetUserContext(identity.WithVerifyGate(c.UserContext(), func() error { return s.authGate(c, ip) }))
		p, err := s.authenticate(c, r.Fresh)
		if err != nil {
			if core.ErrorCode(err) == core.EUNAUTHORIZED {
				if lerr := s.countAuthFailure(c, ip); lerr != nil {
					return lerr
				}
			}
			return err
		}
		c.Locals(localPrincipal, p)
		if err := s.rateLimit(c, "u:"+p.ID.String(), s.d.Access.RateLimits.User); err != nil {
			return err
		}
		if r.Perm == nil {
			return s.handle(c, r)
		}
		if err := s.authorizeTenant(c, p, *r.Perm); err != nil {
			return err
		}
		return s.handle(c, r)
	}
}

// handle runs an authorized route's handler; a POST goes through the
// Idempotency-Key layer (after authorization, so a stored answer is only
// replayed to someone still allowed to make the request).
func (s *Server) handle(c *fiber.Ctx, r Route) error {
	if r.Method == fiber.MethodPost {
		return s.idempotent(c, r.Handler)
	}
	return r.Handler(c)
}

// authenticate reads, in order, Authorization: Bearer, X-Session-Token and the
// ory_kratos_session cookie. A cookie on an unsafe method needs an allowed
// Origin (CSRF). A token shaped like a JWT is verified locally against the
// tokenizer's JWKS; any other token and the cookie are checked with Kratos.
func (s *Server) authenticate(c *fiber.Ctx, fresh bool) (*identity.Principal, error) {
	var cred identity.Credential
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
			return nil, errf(core.EUNAUTHORIZED, "the Authorization header must be 'Bearer <session token or JWT>'")
		}
		cred.Token = strings.TrimSpace(tok)
	} else if tok := c.Get("X-Session-Token"); tok != "" {
		cred.Token = tok
	} else if ck := c.Cookies("ory_kratos_session"); ck != "" {
		if !isSafeMethod(c.Method()) && !s.originAllowed(c) {
			return nil, errf(core.EFORBIDDEN, "cross-origin request with a session cookie refused (Origin not allowed)")
		}
		cred.Cookie = ck
	}
	if len(cred.Token) > 4096 || len(cred.Cookie) > 8192 {
		return nil, errf(core.EUNAUTHORIZED, "invalid credentials")
	}
	var p *identity.Principal
	var err error
	if cred.Token != "" && identity.LooksLikeJWT(cred.Token) {
		p, err = s.d.Auth.AuthenticateJWT(c.UserContext(), s.d.Access.JWT, cred.Token, fresh)
	} else {
		p, err = s.d.Auth.Authenticate(c.UserContext(), cred, fresh)
	}
	switch {
	case errors.Is(err, identity.ErrUnauthenticated):
		return nil, errf(core.EUNAUTHORIZED, "a valid session is required")
	case errors.Is(err, identity.ErrUnavailable):
		slog.ErrorContext(c.UserContext(), "authentication unavailable", "request_id", requestID(c), "err", err)
		return nil, errf(core.EUNAVAILABLE, "authentication is temporarily unavailable")
	case err != nil:
		return nil, err
	}
	return p, nil
}

func isSafeMethod(m string) bool {
	return m == fiber.MethodGet || m == fiber.MethodHead || m == fiber.MethodOptions
}

func (s *Server) originAllowed(c *fiber.Ctx) bool {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		return false
	}
	if slices.Contains(s.o.AllowedOrigins, origin) {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == string(c.Request().Host()) && u.Scheme == c.Protocol()
}

// authorizeTenant resolves {tenant}, requires membership (404 otherwise, the
// same answer as a tenant that does not exist) and the route's permission
// (403). Denied attempts at changes are audited. Unsafe methods read the
// tenant's row fresh (one indexed read), so a suspension or deletion made
// elsewhere stops writes at once, with or without Redis; reads may use the
// registry's cache for its few seconds.
func (s *Server) authorizeTenant(c *fiber.Ctx, p *identity.Principal, perm rbac.Permission) error {
	ctx := c.UserContext()
	bySlug := s.d.Registry.BySlug
	if !isSafeMethod(c.Method()) {
		bySlug = s.d.Registry.BySlugFresh
	}
	t, err := bySlug(ctx, c.Params("tenant"))
	if errors.Is(err, tenant.ErrNotFound) {
		return errf(core.ENOTFOUND, "tenant not found")
	} else if err != nil {
		return err
	}
	if t.State != tenant.StateActive && t.State != tenant.StateSuspended {
		return errf(core.ENOTFOUND, "tenant not found")
	}
	role, err := s.d.Enforcers.RoleOf(ctx, t.ID, p.ID)
	if err != nil {
		return err
	}
	if role == "" {
		return errf(core.ENOTFOUND, "tenant not found")
	}
	c.Locals(localTenant, t)
	c.Locals(localRole, role)
	if err := s.rateLimit(c, "t:"+t.ID.String(), s.d.Access.RateLimits.Tenant); err != nil {
		return err
	}
	if t.State == tenant.StateSuspended {
		return errf(core.ESUSPENDED, "this tenant is suspended")
	}
	ok, err := s.d.Enforcers.Allow(ctx, t.ID, p.ID, perm.Object, perm.Action)
	if err != nil {
		return err
	}
	if !ok {
		if perm.Action != rbac.ActRead {
			actor := core.Actor{UserID: p.ID, RequestID: requestID(c)}
			if err := s.d.Audit.Record(ctx, t.Scope(), actor, perm.String(), perm.Object, "", core.OutcomeDenied,
				map[string]any{"route": c.Route().Path, "method": c.Method(), "role": role}); err != nil {
				slog.ErrorContext(ctx, "audit denied attempt", "request_id", requestID(c), "err", err)
			}
		}
		return errf(core.EFORBIDDEN, "your role ("+role+") does not allow "+perm.String())
	}
	return nil
}

func principal(c *fiber.Ctx) *identity.Principal {
	p, _ := c.Locals(localPrincipal).(*identity.Principal)
	return p
}

func currentTenant(c *fiber.Ctx) *tenant.Tenant {
	t, _ := c.Locals(localTenant).(*tenant.Tenant)
	return t
}

func currentRole(c *fiber.Ctx) string {
	r, _ := c.Locals(localRole).(string)
	return r
}

func actor(c *fiber.Ctx) core.Actor {
	a := core.Actor{RequestID: requestID(c)}
	if p := principal(c); p != nil {
		a.UserID = p.ID
	}
	return a
}
