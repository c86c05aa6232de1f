package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/internal/contract"
	"github.com/promanage/promanage/plugins"
)

// Every response of a server the tests start (server()) is checked against
// the OpenAPI document by contract.Checker (libopenapi-validator): the status
// must be documented for the operation, the JSON body must match the
// response's schema (strictly: an undocumented member is a mismatch), the
// documented headers must be right, and anything else must be a
// problem+json error. A mismatch fails the test that made the request.
//
// The check wraps http.DefaultTransport, which the tests' clients use; only
// requests to registered servers are checked (Kratos, blob servers and
// webhook receivers are not ProManage). After a run of the whole package,
// every operation of the document must have answered at least once with
// success; the statuses seen are written to .data/artifacts.
var (
	checker   *contract.Checker
	contracts sync.Map // host:port -> *testing.T
)

// TestMain lets the plugin host re-execute this test binary as its sandbox
// child (as the promanage binary does with `promanage plugin-sandbox`) and
// the fault run as its worker process; otherwise it checks every response of
// the servers the tests start against the OpenAPI document.
func TestMain(m *testing.M) {
	plugins.SandboxMain()
	runChaosWorker()
	spec, _, err := api.Spec()
	if err == nil {
		checker, err = contract.New(spec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "contract checker:", err)
		os.Exit(2)
	}
	http.DefaultTransport = &contractTransport{next: http.DefaultTransport}
	code := m.Run()
	if code == 0 && wholePackageRun() {
		code = contractCoverage()
	}
	os.Exit(code)
}

// watchContract checks every response of the server at addr (host:port)
// until t ends.
func watchContract(t *testing.T, addr string) {
	contracts.Store(addr, t)
	t.Cleanup(func() { contracts.Delete(addr) })
}

type contractTransport struct{ next http.RoundTripper }

func (ct *contractTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := ct.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	v, ok := contracts.Load(req.URL.Host)
	if !ok {
		return resp, nil
	}
	t := v.(*testing.T)
	var body []byte
	if contract.IsJSON(resp.Header.Get("Content-Type")) {
		body, err = io.ReadAll(io.LimitReader(resp.Body, contract.MaxBody+1))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("contract check: read %s %s: %w", req.Method, req.URL.Path, err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	for _, problem := range checker.Check(req, resp, body) {
		t.Errorf("contract: %s\n\tbody: %.600s", problem, body)
	}
	return resp, nil
}

// wholePackageRun: no -run or -skip selected a subset of the tests.
func wholePackageRun() bool {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return !testing.Short()
}

// contractCoverage writes the statuses each operation answered with and
// fails (1) when an operation never answered with success.
func contractCoverage() int {
	cov := checker.Coverage()
	ops := make([]string, 0, len(cov))
	for op := range cov {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	var report strings.Builder
	var missing []string
	for _, op := range ops {
		fmt.Fprintf(&report, "%-32s %v\n", op, cov[op])
		if op != "(undocumented route)" && !slices.ContainsFunc(cov[op], func(s int) bool { return s < 400 }) {
			missing = append(missing, op)
		}
	}
	dir := filepath.Join("..", "..", ".data", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "contract-coverage.txt"), []byte(report.String()), 0o644)
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "contract: these operations never answered with success in the end-to-end tests: %s\n",
			strings.Join(missing, ", "))
		return 1
	}
	return 0
}
