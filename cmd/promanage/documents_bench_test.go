package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/promanage/promanage/internal/testenv"
)

// BenchmarkDocumentTransfer1GiB uploads 1 GiB through the API into a file
// bucket and downloads it again, in this process, and reports how much the
// process's resident memory grew at its peak during each direction
// (VmRSS from /proc/self/status, sampled every 20 ms, against a baseline
// taken after a GC). The client streams too, so the growth is the
// server's. Issue 5 requires a few tens of MiB at most.
//
//	BENCH=1 make bench   or   go test ./cmd/promanage -run '^$' -bench DocumentTransfer -benchtime 1x
func BenchmarkDocumentTransfer1GiB(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc/self/status (Linux) to read VmRSS")
	}
	const size = 1 << 30
	base := benchServer(b)
	f := benchFixture(b, base)
	for b.Loop() {
		up, down := transferOnce(b, base, f, size)
		b.ReportMetric(up, "upload-rss-growth-MiB")
		b.ReportMetric(down, "download-rss-growth-MiB")
	}
	b.SetBytes(2 * size)
}

func transferOnce(b *testing.B, base string, f benchDocs, size int64) (upMiB, downMiB float64) {
	// Multipart framing around a generated body with a known length, so
	// the request has a Content-Length (the quota check uses it).
	var head, tail bytes.Buffer
	mw := multipart.NewWriter(&head)
	if _, err := mw.CreateFormFile("file", "big.bin"); err != nil {
		b.Fatal(err)
	}
	boundary := mw.Boundary()
	tail.WriteString("\r\n--" + boundary + "--\r\n")
	hash := sha256.New()
	body := io.MultiReader(&head, io.TeeReader(&pattern{left: size}, hash), &tail)

	var doc struct{ ID string }
	upMiB = peakRSSGrowth(b, func() {
		req, _ := http.NewRequest("POST", base+f.docs, body)
		req.ContentLength = int64(head.Len()) + size + int64(tail.Len())
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
		req.Header.Set("Authorization", "Bearer "+f.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 201 {
			msg, _ := io.ReadAll(resp.Body)
			b.Fatalf("upload: %d %s", resp.StatusCode, msg)
		}
		json.NewDecoder(resp.Body).Decode(&doc)
	})
	want := hex.EncodeToString(hash.Sum(nil))

	downMiB = peakRSSGrowth(b, func() {
		req, _ := http.NewRequest("GET", base+f.slugPath+"/documents/"+doc.ID+"/content", nil)
		req.Header.Set("Authorization", "Bearer "+f.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != want {
			b.Fatalf("download: %d bytes, %v, sha256 match %v", n, err, hex.EncodeToString(h.Sum(nil)) == want)
		}
	})
	return upMiB, downMiB
}

// peakRSSGrowth runs fn and returns the largest VmRSS growth seen while it
// ran, in MiB.
func peakRSSGrowth(b *testing.B, fn func()) float64 {
	runtime.GC()
	debug.FreeOSMemory()
	baseline := vmRSS(b)
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if r := vmRSS(b); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	fn()
	close(done)
	wg.Wait()
	return float64(max(peak.Load()-baseline, 0)) / (1 << 20)
}

func vmRSS(b *testing.B) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// pattern generates left bytes cheaply (no allocation per read).
type pattern struct {
	left int64
	i    byte
}

func (p *pattern) Read(buf []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(buf)), p.left))
	for k := range n {
		buf[k] = p.i
		p.i = p.i*31 + 7
	}
	p.left -= int64(n)
	return n, nil
}

type benchDocs struct {
	token, slugPath, docs string
}

func benchFixture(b *testing.B, base string) benchDocs {
	u := testenv.SignUp(b, "bench")
	slug := testenv.Slug("bench")
	post := func(path string, body any) map[string]any {
		j, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", base+path, bytes.NewReader(j))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+u.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 201 {
			b.Fatalf("POST %s: %v %v", path, resp.StatusCode, err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return m
	}
	post("/v1/tenants", map[string]string{"slug": slug})
	p := post("/v1/tenants/"+slug+"/projects", map[string]any{"key": "BIG", "name": "Big files"})
	sp := "/v1/tenants/" + slug
	return benchDocs{token: u.Token, slugPath: sp, docs: fmt.Sprintf("%s/projects/%s/documents", sp, p["id"])}
}

// benchServer is server() for benchmarks: `promanage serve` in process,
// with a file bucket under a temporary directory.
func benchServer(b *testing.B) string {
	testenv.DB(b)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	m := NewMain(io.Discard, io.Discard)
	m.ready = ready
	dir := b.TempDir()
	args := []string{"serve", "-database-url", testenv.DatabaseURL(), "-redis-url", testenv.RedisURL(),
		"-kratos-public-url", testenv.KratosURL(), "-http-addr", "127.0.0.1:0", "-data-dir", dir,
		"-blob-url", "file://" + filepath.ToSlash(filepath.Join(dir, "blobs")), "-log-level", "error"}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, args) }()
	select {
	case addr := <-ready:
		b.Cleanup(func() { cancel(); <-done })
		return "http://" + addr
	case err := <-done:
		cancel()
		b.Fatalf("serve did not start: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		b.Fatal("serve did not start in 20s")
	}
	return ""
}
