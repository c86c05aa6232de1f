package plugins

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Webhook headers set by the host on every delivery.
const (
	// SignatureHeader is "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
	SignatureHeader = "ProManage-Signature"
	// DeliveryHeader carries the delivery id, stable across retries, so a
	// receiver can drop duplicates.
	DeliveryHeader = "ProManage-Delivery"
)

// Errors of Deliverer.Deliver. A DeliveryError says whether a retry can help.
var (
	ErrHostNotAllowed  = errors.New("webhook host not in the plugin's allowed_hosts")
	ErrAddressRefused  = errors.New("webhook address is not public")
	ErrInvalidDelivery = errors.New("invalid webhook delivery")
)

// DeliveryError is returned by Deliver for every failure. Status is the HTTP
// status when the receiver answered (0 otherwise).
type DeliveryError struct {
	Status    int
	Retryable bool // network failure, timeout, 408, 429 or 5xx
	Err       error
}

func (e *DeliveryError) Error() string {
	kind := "permanent"
	if e.Retryable {
		kind = "retryable"
	}
	return fmt.Sprintf("webhook delivery failed (%s): %v", kind, e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// Retryable reports whether err is a DeliveryError worth retrying.
func Retryable(err error) bool {
	var de *DeliveryError
	return errors.As(err, &de) && de.Retryable
}

// DelivererOptions configure a Deliverer; nil means defaults.
type DelivererOptions struct {
	// AllowPrivate lets deliveries reach loopback and private addresses.
	// Only for development and tests: in production it opens SSRF.
	AllowPrivate bool
	Timeout      time.Duration // whole request, default 10s
	MaxBodyBytes int           // request body, default 64 KiB
	UserAgent    string        // default "ProManage-Webhooks/1"
}

// Deliverer sends the webhooks notification plugins return. It never
// follows redirects, never uses a proxy from the environment, and checks the
// address it actually connects to (after DNS) so a name that resolves to an
// internal address, or re-resolves to one (DNS rebinding), is refused.
// Retries and backoff belong to the caller (the outbox worker).
type Deliverer struct {
	opts   DelivererOptions
	client *http.Client
}

// NewDeliverer returns a Deliverer with its own HTTP client.
func NewDeliverer(opts *DelivererOptions) *Deliverer {
	var o DelivererOptions
	if opts != nil {
		o = *opts
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 10
	}
	if o.UserAgent == "" {
		o.UserAgent = "ProManage-Webhooks/1"
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !o.AllowPrivate {
		dialer.Control = refuseNonPublic
	}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would make the dial-time check see the proxy, not the target
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: o.Timeout,
	}
	client := &http.Client{
		Transport: transport,
		Timeout:   o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return &Deliverer{opts: o, client: client}
}

// Deliver sends d if its host matches allowedHosts (exact, or "*.example.com"
// for subdomains), signed with secret, and returns the receiver's status. A
// 2xx answer is success; anything else is a *DeliveryError: retryable for
// network errors, timeouts, 408, 429 and 5xx; permanent for other statuses
// (3xx included: redirects are not followed), a host not allowed
// (ErrHostNotAllowed), a non-public address (ErrAddressRefused) or a
// malformed delivery (ErrInvalidDelivery).
func (dl *Deliverer) Deliver(ctx context.Context, d Delivery, allowedHosts []string, secret []byte, deliveryID string) (int, error) {
	permanent := func(err error) (int, error) { return 0, &DeliveryError{Err: err} }
	if err := d.check(); err != nil {
		return permanent(fmt.Errorf("%w: %w", ErrInvalidDelivery, err))
	}
	if len(secret) == 0 {
		return permanent(fmt.Errorf("%w: no signing secret", ErrInvalidDelivery))
	}
	u, _ := url.Parse(d.URL) // checked above
	if !hostAllowed(u.Hostname(), allowedHosts) {
		return permanent(fmt.Errorf("%w: %s", ErrHostNotAllowed, u.Hostname()))
	}
	if !dl.opts.AllowPrivate {
		// Literal addresses are refused before dialing too, so the error is
		// clear; names are checked on each resolved address in the dialer.
		if addr, err := netip.ParseAddr(u.Hostname()); err == nil && !publicAddr(addr) {
			return permanent(fmt.Errorf("%w: %s", ErrAddressRefused, addr))
		}
	}
	body, contentType := deliveryBody(d.Body)
	if len(body) > dl.opts.MaxBodyBytes {
		return permanent(fmt.Errorf("%w: body of %d bytes, the limit is %d", ErrInvalidDelivery, len(body), dl.opts.MaxBodyBytes))
	}

	req, err := http.NewRequestWithContext(ctx, d.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return permanent(fmt.Errorf("%w: %w", ErrInvalidDelivery, err))
	}
	for k, v := range d.Headers {
		req.Header.Set(k, v)
	}
	if req.Header.Get("Content-Type") == "" && len(body) > 0 {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", dl.opts.UserAgent)
	req.Header.Set(DeliveryHeader, deliveryID)
	req.Header.Set(SignatureHeader, Sign(secret, body, time.Now()))

	resp, err := dl.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrAddressRefused) {
			return permanent(err)
		}
		return 0, &DeliveryError{Retryable: true, Err: err}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return s, nil
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
		return s, &DeliveryError{Status: s, Retryable: true, Err: fmt.Errorf("receiver answered %s", resp.Status)}
	default:
		return s, &DeliveryError{Status: s, Err: fmt.Errorf("receiver answered %s", resp.Status)}
	}
}

// deliveryBody turns a plugin's body into bytes: a JSON string is sent as its
// text, anything else as JSON.
func deliveryBody(raw json.RawMessage) ([]byte, string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return []byte(s), "text/plain; charset=utf-8"
		}
	}
	return raw, "application/json"
}

// Sign returns the SignatureHeader value for body at time t:
// "t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>".
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// VerifySignature checks a SignatureHeader value as a receiver would: the
// HMAC must match (constant time) and the timestamp be within tolerance of
// now (replay protection).
func VerifySignature(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return errors.New("malformed signature header")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("signature timestamp outside tolerance")
	}
	want := Sign(secret, body, time.Unix(sec, 0))
	_, wantHex, _ := strings.Cut(want, ",v1=")
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(wantHex)) {
			return nil
		}
	}
	return errors.New("signature mismatch")
}

// refuseNonPublic is the dialer's Control hook: it runs for every address
// the dialer actually connects to, after DNS resolution.
func refuseNonPublic(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrAddressRefused, address)
	}
	if !publicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrAddressRefused, ap.Addr())
	}
	return nil
}

// nonPublic lists special-purpose ranges (IANA registries) beyond those the
// netip predicates cover.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: would reach any IPv4, private included
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001::/32"),       // Teredo (embeds IPv4)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4 (embeds IPv4)
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated; embeds IPv4)
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (SIIT; embeds IPv4)
}

// publicAddr reports whether a is a globally routable unicast address.
// Loopback, private (RFC 1918, IPv6 ULA), link-local (169.254.0.0/16 with the
// cloud metadata endpoint 169.254.169.254, fe80::/10), multicast, unspecified,
// CGNAT and the other special ranges are not.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.IsMulticast() ||
		a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return a.IsGlobalUnicast()
}
