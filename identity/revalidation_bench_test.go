package identity_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/promanage/promanage/identity"
	"github.com/promanage/promanage/internal/testenv"
)

// countingTransport counts the toSession calls that reach Kratos (it
// forwards every request to the real Kratos; it only counts).
type countingTransport struct{ calls atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/sessions/whoami") {
		c.calls.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// BenchmarkSessionRevalidation measures what the short session cache costs
// Kratos: 40 sessions hammered through two replicas sharing Redis for 10 s,
// with the shared TTL at the default (revocation within ~5 s) and at the
// former 60 s, plus the price of one toSession call. It reports requests
// and Kratos calls per second; the cost is about sessions/TTL calls per
// second, whatever the request rate.
func BenchmarkSessionRevalidation(b *testing.B) {
	const sessions, workers, run = 40, 16, 10 * time.Second
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		b.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	signUp := func() []string { // fresh sessions: nothing cached from an earlier run
		tokens := make([]string, sessions)
		for i := range tokens {
			tokens[i] = testenv.SignUp(b, fmt.Sprintf("bench-%d", i)).Token
		}
		return tokens
	}
	for _, ttl := range []time.Duration{identity.DefaultSharedTTL, 60 * time.Second} {
		b.Run("SharedTTL="+ttl.String(), func(b *testing.B) {
			ct := &countingTransport{}
			var replicas []*identity.Authenticator
			for range 2 {
				replicas = append(replicas, identity.NewAuthenticator(identity.Options{KratosPublicURL: testenv.KratosURL(),
					Cache: identity.NewRedisCache(rc), SharedTTL: ttl, HTTPClient: &http.Client{Transport: ct, Timeout: 5 * time.Second}}))
			}
			ctx := context.Background()
			for range b.N {
				tokens := signUp()
				for _, tok := range tokens {
					if _, err := replicas[0].Authenticate(ctx, identity.Credential{Token: tok}, false); err != nil {
						b.Fatal(err)
					}
				}
				ct.calls.Store(0)
				var reqs atomic.Int64
				stop := time.Now().Add(run)
				var wg sync.WaitGroup
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rnd := rand.New(rand.NewPCG(uint64(w), 7))
						for time.Now().Before(stop) {
							a := replicas[rnd.IntN(len(replicas))]
							if _, err := a.Authenticate(ctx, identity.Credential{Token: tokens[rnd.IntN(sessions)]}, false); err != nil {
								b.Error(err)
								return
							}
							reqs.Add(1)
						}
					}()
				}
				wg.Wait()
				secs := run.Seconds()
				b.ReportMetric(float64(reqs.Load())/secs, "requests/s")
				b.ReportMetric(float64(ct.calls.Load())/secs, "kratos-calls/s")
				b.ReportMetric(float64(ct.calls.Load())/secs/sessions, "kratos-calls/s/session")
			}
		})
	}
	b.Run("ToSessionCall", func(b *testing.B) {
		tokens := signUp()
		a := identity.NewAuthenticator(identity.Options{KratosPublicURL: testenv.KratosURL()})
		ctx := context.Background()
		start := time.Now()
		n := 0
		for b.Loop() {
			if _, err := a.Authenticate(ctx, identity.Credential{Token: tokens[n%sessions]}, true); err != nil {
				b.Fatal(err)
			}
			n++
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(n)/1000, "ms/call")
	})
}
