package api

import (
	"embed"
	"encoding/json"
	"fmt"
	"html"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/gofiber/fiber/v2"
	"gopkg.in/yaml.v3"
)

//go:embed openapi.yaml
var openapiYAML []byte

// Each area documents its paths in its own fragment (paths and
// components.schemas), merged into openapi.yaml at start-up.
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
	return c.Send(b)
}

// docs renders a self-contained (offline) reference page from the spec.
func (s *Server) docs(c *fiber.Ctx) error {
	_, doc, err := Spec()
	if err != nil {
		return err
	}
	var b strings.Builder
	info, _ := doc["info"].(map[string]any)
	title := fmt.Sprint(info["title"])
	b.WriteString("<!doctype html><html><head><meta charset=utf-8><title>" + html.EscapeString(title) + "</title>")
	b.WriteString(`<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .2em}.m{display:inline-block;width:4.5rem;font-weight:bold}
h2{border-bottom:1px solid #ddd;margin-top:2rem}.op{margin:.6rem 0}.d{color:#444;margin-left:4.8rem}</style></head><body>`)
	b.WriteString("<h1>" + html.EscapeString(title) + "</h1><p>" + html.EscapeString(fmt.Sprint(info["description"])) +
		"</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>")
	paths, _ := doc["paths"].(map[string]any)
	keys := make([]string, 0, len(paths))
	for k := range paths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, p := range keys {
		ops, _ := paths[p].(map[string]any)
		b.WriteString("<h2><code>" + html.EscapeString(p) + "</code></h2>")
		for _, m := range []string{"get", "post", "put", "patch", "delete"} {
			op, ok := ops[m].(map[string]any)
			if !ok {
				continue
			}
			b.WriteString("<div class=op><span class=m>" + strings.ToUpper(m) + "</span>" + html.EscapeString(fmt.Sprint(op["summary"])))
			if d, ok := op["description"].(string); ok {
				b.WriteString("<div class=d>" + html.EscapeString(d) + "</div>")
			}
			if x, ok := op["x-permission"].(string); ok {
				b.WriteString("<div class=d>Permission: <code>" + html.EscapeString(x) + "</code></div>")
			}
			b.WriteString("</div>")
		}
	}
	b.WriteString("</body></html>")
	c.Set(fiber.HeaderContentType, "text/html; charset=utf-8")
	return c.SendString(b.String())
}

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
		for _, section := range []string{"paths", "components.schemas", "components.parameters"} {
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
