// Package storagetest starts the real blob protocol servers the tests run
// against — gofakes3 (S3), fake-gcs-server (GCS) and Azurite (Azure) on
// loopback ports — and gives the bucket URL an operator would configure for
// each. It is for tests only; it must never be imported by the product.
package storagetest

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
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Bucket is a bucket on a running server.
type Bucket struct {
	Name string
	// URL is what storage.OpenBucket / PROMANAGE_BLOB_URL is given.
	URL string
	// NativeSignedURLs: the driver signs URLs itself; otherwise
	// storage.SignedURL falls back to our Signer.
	NativeSignedURLs bool
	// ChecksSignatures: the server rejects a tampered native signed URL
	// (Azurite does; gofakes3 and fake-gcs-server do not verify).
	ChecksSignatures bool
	// Reach rewrites a native signed URL so it reaches the emulator
	// (nil: use it as is).
	Reach func(string) string
}

// Bucket name on every server.
const bucketName = "docs"

// File is a file:// bucket in a directory that does not exist yet.
func File(t testing.TB) Bucket {
	return Bucket{Name: "file", URL: "file://" + filepath.ToSlash(filepath.Join(t.TempDir(), "blobs"))}
}

// Mem is an in-process mem:// bucket.
func Mem(testing.TB) Bucket { return Bucket{Name: "mem", URL: "mem://"} }

// S3 serves gofakes3 in memory on a loopback port, as an operator would
// point us at MinIO. Static credentials come from the environment, with no
// shared config files, so the SDK never looks further (instance metadata
// would hang offline).
func S3(t testing.TB) Bucket {
	mem := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(mem, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(srv.Close)
	if err := mem.CreateBucket(bucketName); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "promanage-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "promanage-test-secret")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	q := url.Values{"endpoint": {srv.URL}, "region": {"us-east-1"}, "use_path_style": {"true"}, "disable_https": {"true"}}
	return Bucket{Name: "s3", URL: "s3://" + bucketName + "?" + q.Encode(), NativeSignedURLs: true}
}

// GCS serves fake-gcs-server on a loopback port. gocloud's gs:// opener
// honours STORAGE_EMULATOR_HOST, the switch the official client uses;
// access_id + private_key_path give the bucket a signing identity, so
// signed URLs take the native GCS path.
func GCS(t testing.TB) Bucket {
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
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucketName})
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.URL(), "http://"))
	q := url.Values{
		"access_id":        {"promanage-test@promanage-test.iam.gserviceaccount.com"},
		"private_key_path": {writeRSAKey(t)},
	}
	return Bucket{Name: "gcs", URL: "gs://" + bucketName + "?" + q.Encode(), NativeSignedURLs: true,
		// Signed URLs always say https; the emulator listens on http.
		Reach: func(s string) string { return strings.Replace(s, "https://", "http://", 1) }}
}

func writeRSAKey(t testing.TB) string {
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

// Azure starts Azurite (installed by scripts/azurite.sh into .tools) on a
// free loopback port with in-memory persistence, creates the container, and
// returns an azblob:// URL with shared-key credentials in the environment.
// Without node the test is skipped, visibly; with node it must run.
func Azure(t testing.TB) Bucket {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("Azure needs Node.js for Azurite: node not found on PATH (apt-get install nodejs npm)")
	}
	domain := startAzurite(t)
	t.Setenv("AZURE_STORAGE_ACCOUNT", azuriteAccount)
	t.Setenv("AZURE_STORAGE_KEY", azuriteKey)
	cred, err := container.NewSharedKeyCredential(azuriteAccount, azuriteKey)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := container.NewClientWithSharedKeyCredential("http://"+domain+"/"+azuriteAccount+"/"+bucketName, cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cc.Create(ctx, nil); err != nil {
		t.Fatalf("create Azurite container: %v", err)
	}
	return Bucket{Name: "azure", URL: "azblob://" + bucketName + "?protocol=http&domain=" + domain,
		NativeSignedURLs: true, ChecksSignatures: true}
}

var azuriteListening = regexp.MustCompile(`listens on http://(127\.0\.0\.1:\d+)`)

// repoRoot is the repository root, found from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// startAzurite runs azurite-blob and returns its host:port.
func startAzurite(t testing.TB) string {
	t.Helper()
	install := exec.Command("bash", filepath.Join(repoRoot(), "scripts", "azurite.sh"))
	install.Dir = repoRoot()
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
