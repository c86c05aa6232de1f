package api

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"path"
	"regexp"
	"strings"
	"sync"

	"github.com/gofiber/fiber/v2"
	"gopkg.in/yaml.v3"

	"github.com/promanage/promanage/core"
)

//go:embed openapi.yaml
var openapiYAML []byte

// Each area documents its paths in its own fragment (paths and
// components), merged into openapi.yaml at start-up.
//
//go:embed openapi
var openapiFragments embed.FS

var (
	specOnce sync.Once
	specJSON []byte
	specDoc  map[string]any
	specErr  error
)

// Spec returns the OpenAPI document as JSON and as a decoded map.
func Spec() ([]byte, map[string]any, error) {
	specOnce.Do(func() {
		var doc map[string]any
		if specErr = yaml.Unmarshal(openapiYAML, &doc); specErr != nil {
			specErr = fmt.Errorf("openapi.yaml: %w", specErr)
			return
		}
		if specErr = mergeFragments(doc); specErr != nil {
			return
		}
		specDoc = doc
		specJSON, specErr = json.Marshal(doc)
	})
	return specJSON, specDoc, specErr
}

func (s *Server) openapiJSON(c *fiber.Ctx) error {
	b, _, err := Spec()
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "application/json")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.Send(b)
}

// mergeFragments adds each fragment's paths and components to doc. A name
// defined twice is an error, so two areas cannot silently overwrite each
// other's definitions.
func mergeFragments(doc map[string]any) error {
	files, err := fs.Glob(openapiFragments, "openapi/*.yaml")
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := openapiFragments.ReadFile(f)
		if err != nil {
			return err
		}
		var frag map[string]any
		if err := yaml.Unmarshal(b, &frag); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for k := range frag {
			if k != "paths" && k != "components" {
				return fmt.Errorf("%s: a fragment holds only paths and components, not %s", f, k)
			}
		}
		sections := []string{"paths"}
		comps, _ := frag["components"].(map[string]any)
		for k := range comps {
			sections = append(sections, "components."+k)
		}
		for _, section := range sections {
			dst, src := lookup(doc, section), lookup(frag, section)
			for k, v := range src {
				if _, dup := dst[k]; dup {
					return fmt.Errorf("%s: %s %s defined twice", f, section, k)
				}
				dst[k] = v
			}
		}
	}
	return nil
}

// lookup returns the map at a dotted path, creating it if missing.
func lookup(doc map[string]any, path string) map[string]any {
	cur := doc
	for _, k := range strings.Split(path, ".") {
		next, ok := cur[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[k] = next
		}
		cur = next
	}
	return cur
}

// The reference page (/docs) is Redoc rendering /openapi.json in the
// browser. Redoc's bundle comes from npm at a pinned version and verified
// integrity (scripts/docs-assets.sh writes it to docs/assets/, which git
// ignores) and is embedded here, so the page works offline. A binary built
// without it still compiles: /docs then says how to build the assets.
//
//go:embed docs
var docsFS embed.FS

// docsBundle is the renderer's script, in docs/assets.
const docsBundle = "redoc.standalone.js"

var docsAssetName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// docsAsset is one embedded asset of the reference page, with its ETag and
// a gzip'd copy made on first use.
type docsAsset struct {
	body        []byte
	etag        string
	contentType string
	gzipOnce    sync.Once
	gzipped     []byte
}

var (
	docsAssetsMu sync.Mutex
	docsAssets   = map[string]*docsAsset{}
)

// loadDocsAsset returns the embedded asset name, or nil if there is none.
func loadDocsAsset(name string) *docsAsset {
	if !docsAssetName.MatchString(name) {
		return nil
	}
	docsAssetsMu.Lock()
	defer docsAssetsMu.Unlock()
	if a, ok := docsAssets[name]; ok {
		return a
	}
	b, err := docsFS.ReadFile("docs/assets/" + name)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	a := &docsAsset{body: b, etag: `"` + hex.EncodeToString(sum[:16]) + `"`, contentType: ct}
	docsAssets[name] = a
	return a
}

// docs serves the reference page, or, when the renderer was not built into
// this binary, a page saying how to build it (503).
func (s *Server) docs(c *fiber.Ctx) error {
	page := "docs/index.html"
	status := fiber.StatusOK
	if loadDocsAsset(docsBundle) == nil {
		page, status = "docs/unbuilt.html", fiber.StatusServiceUnavailable
	}
	b, err := docsFS.ReadFile(page)
	if err != nil {
		return fmt.Errorf("docs page: %w", err)
	}
	c.Set(fiber.HeaderContentType, "text/html; charset=utf-8")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.Status(status).Send(b)
}

// docsAssetHandler serves the reference page's scripts, gzip'd when the
// client accepts it, with an ETag (304 on If-None-Match).
func (s *Server) docsAssetHandler(c *fiber.Ctx) error {
	a := loadDocsAsset(c.Params("name"))
	if a == nil {
		return errf(core.ENOTFOUND, "no such asset")
	}
	c.Set(fiber.HeaderETag, a.etag)
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set(fiber.HeaderVary, fiber.HeaderAcceptEncoding)
	if etagMatches(c.Get(fiber.HeaderIfNoneMatch), a.etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	c.Set(fiber.HeaderContentType, a.contentType)
	if strings.Contains(c.Get(fiber.HeaderAcceptEncoding), "gzip") {
		a.gzipOnce.Do(func() {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			_, _ = zw.Write(a.body)
			if zw.Close() == nil {
				a.gzipped = buf.Bytes()
			}
		})
		if a.gzipped != nil {
			c.Set(fiber.HeaderContentEncoding, "gzip")
			return c.Send(a.gzipped)
		}
	}
	return c.Send(a.body)
}
