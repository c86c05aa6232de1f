package storage

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"gocloud.dev/blob"
)

// A backend is one bucket of the conformance suite, opened through
// OpenBucket with the URL an operator would configure, and what the suite
// may expect of its server.
type backend struct {
	name   string
	url    string // what OpenBucket was given
	bucket *blob.Bucket

	// nativeSignedURLs: the driver signs URLs itself; otherwise SignedURL
	// falls back to our Signer.
	nativeSignedURLs bool
	// checksSignatures: the emulator rejects a tampered native signed URL.
	// gofakes3 and fake-gcs-server do not verify signatures; Azurite does.
	checksSignatures bool
	// reachSignedURL rewrites a native signed URL so it reaches the
	// emulator (nil: use as is).
	reachSignedURL func(string) string
}

// openBackend opens rawURL with OpenBucket and closes the bucket at cleanup.
func openBackend(t *testing.T, name, rawURL string) *backend {
	t.Helper()
	b, err := OpenBucket(context.Background(), rawURL)
	if err != nil {
		t.Fatalf("OpenBucket(%s): %v", rawURL, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &backend{name: name, url: rawURL, bucket: b}
}

func fileBackend(t *testing.T) *backend {
	// A directory that does not exist yet: OpenBucket must create it.
	return openBackend(t, "file", "file://"+filepath.ToSlash(filepath.Join(t.TempDir(), "blobs")))
}

func memBackend(t *testing.T) *backend {
	return openBackend(t, "mem", "mem://")
}

// s3Backend serves gofakes3 in memory on a loopback httptest server and opens
// it through an s3:// URL, as an operator would point us at MinIO.
func s3Backend(t *testing.T) *backend {
	mem := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(mem, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(srv.Close)
	if err := mem.CreateBucket("docs"); err != nil {
		t.Fatal(err)
	}
	// Static credentials from the environment, and no shared config files,
	// so the SDK never looks further (instance metadata would hang offline).
	t.Setenv("AWS_ACCESS_KEY_ID", "promanage-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "promanage-test-secret")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	q := url.Values{
		"endpoint":       {srv.URL},
		"region":         {"us-east-1"},
		"use_path_style": {"true"},
		"disable_https":  {"true"},
	}
	be := openBackend(t, "s3", "s3://docs?"+q.Encode())
	be.nativeSignedURLs = true
	return be
}

// gcsBackend serves fake-gcs-server on a loopback port and opens it through
// a gs:// URL. gocloud's default gs:// opener honours STORAGE_EMULATOR_HOST
// (unauthenticated client, JSON API at http://HOST/storage/v1/), the same
// switch the official client uses. access_id + private_key_path give the
// bucket a signing identity, so SignedURL takes the native GCS path.
func gcsBackend(t *testing.T) *backend {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme: "http",
		Host:   "127.0.0.1",
		// Serve the XML-API path style (/bucket/object) of signed URLs on
		// the emulator's own host; the matcher ignores the port.
		PublicHost: "127.0.0.1",
		Writer:     io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "docs"})
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.URL(), "http://"))

	q := url.Values{
		"access_id":        {"promanage-test@promanage-test.iam.gserviceaccount.com"},
		"private_key_path": {writeRSAKey(t)},
	}
	be := openBackend(t, "gcs", "gs://docs?"+q.Encode())
	be.nativeSignedURLs = true
	// storage.SignedURL always says https; the emulator listens on http.
	be.reachSignedURL = func(s string) string { return strings.Replace(s, "https://", "http://", 1) }
	return be
}

func writeRSAKey(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gcs-signer.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Azurite's well-known development account (public, documented by Microsoft).
const (
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// azureBackend starts Azurite (installed by scripts/azurite.sh into .tools)
// on a free loopback port with in-memory persistence, creates a container
// and opens it through an azblob:// URL with shared-key credentials from the
// environment. Without node the test is skipped; with node it must run.
func azureBackend(t *testing.T) *backend {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("azblob conformance needs Node.js for Azurite: node not found on PATH (apt-get install nodejs npm)")
	}
	domain := startAzurite(t)
	t.Setenv("AZURE_STORAGE_ACCOUNT", azuriteAccount)
	t.Setenv("AZURE_STORAGE_KEY", azuriteKey)
	be := openBackend(t, "azure", "azblob://docs?protocol=http&domain="+domain)

	var cc *container.Client
	if !be.bucket.As(&cc) {
		t.Fatal("azblob bucket does not expose *container.Client")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cc.Create(ctx, nil); err != nil {
		t.Fatalf("create Azurite container: %v", err)
	}
	be.nativeSignedURLs = true
	be.checksSignatures = true
	return be
}

var azuriteListening = regexp.MustCompile(`listens on http://(127\.0\.0\.1:\d+)`)

// startAzurite runs azurite-blob and returns its host:port.
func startAzurite(t *testing.T) string {
	t.Helper()
	install := exec.Command("bash", filepath.Join("..", "scripts", "azurite.sh"))
	install.Stderr = os.Stderr // npm progress on first install only
	out, err := install.Output()
	if err != nil {
		t.Fatalf("scripts/azurite.sh: %v", err)
	}
	bin := strings.TrimSpace(string(out))

	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1",
		"--blobPort", "0", // Azurite prints the port it got
		"--inMemoryPersistence", // excludes --location: nothing touches disk
		"--extentMemoryLimit", "256",
		"--skipApiVersionCheck", // the Go SDK may speak a newer API version
		"--disableTelemetry",
		"--loose",
	)
	cmd.Dir = t.TempDir() // Azurite's workspace default; stays empty in memory mode
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	type started struct {
		addr string
		log  []string // output before the failure, if it never listened
	}
	res := make(chan started, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var log []string
		for sc.Scan() {
			if m := azuriteListening.FindStringSubmatch(sc.Text()); m != nil {
				res <- started{addr: m[1]}
				_, _ = io.Copy(io.Discard, stdout) // keep the pipe drained
				return
			}
			log = append(log, sc.Text())
		}
		res <- started{log: log}
	}()
	select {
	case r := <-res:
		if r.addr == "" {
			t.Fatalf("azurite exited before listening:\n%s", strings.Join(r.log, "\n"))
		}
		return r.addr
	case <-time.After(30 * time.Second):
		t.Fatal("azurite did not start within 30s")
	}
	return ""
}
