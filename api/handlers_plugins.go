package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"

	"github.com/gofiber/fiber/v2"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/plugins"
)

// Upload limits besides the module's own (PluginDeps.MaxModuleBytes).
const (
	maxManifestBytes = 64 << 10
	// multipartSlack covers part headers and boundaries.
	multipartSlack = 64 << 10
	maxUploadParts = 8
)

func (s *Server) pluginRegistry() (*plugins.Registry, error) {
	if s.d.Plugins.Registry == nil {
		return nil, errf(core.EUNAVAILABLE, "plugins are not available on this server")
	}
	return s.d.Plugins.Registry, nil
}

func (s *Server) maxModuleBytes(reg *plugins.Registry) int64 {
	if n := s.d.Plugins.MaxModuleBytes; n > 0 {
		return n
	}
	return reg.Host().Options().MaxModuleBytes
}

func (s *Server) uploadPlugin(c *fiber.Ctx) error {
	reg, err := s.pluginRegistry()
	if err != nil {
		return err
	}
	wasm, manifestJSON, err := readPluginUpload(c, s.maxModuleBytes(reg))
	if err != nil {
		return err
	}
	var m plugins.Manifest
	dec := json.NewDecoder(bytes.NewReader(manifestJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return core.Invalid(core.FieldError{Field: "manifest", Message: "must be a JSON object with name, hooks, config, failure_policy, allowed_hosts, priority, timeout_ms: " + err.Error()})
	}
	if dec.More() {
		return core.Invalid(core.FieldError{Field: "manifest", Message: "must be one JSON object"})
	}
	t := currentTenant(c)
	info, _, err := reg.Upload(c.UserContext(), t.ID, actor(c), wasm, m)
	if err != nil {
		return err
	}
	c.Location("/v1/tenants/" + t.Slug + "/plugins/" + info.ID.String())
	c.Set(fiber.HeaderETag, info.ETag)
	c.Set(fiber.HeaderCacheControl, "no-store") // may carry the signing secret
	return c.Status(fiber.StatusCreated).JSON(info)
}

// errTooLarge is an upload body over its limit.
var errTooLarge = errors.New("body too large")

// limitedReader fails with errTooLarge past n bytes, instead of a silent EOF
// that would look like a truncated multipart body.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// readPluginUpload reads the `module` and `manifest` parts of a
// multipart/form-data body, limiting while reading: the body may be a stream
// (StreamRequestBody), so Fiber's BodyLimit does not protect this handler.
// A module over maxModule is EINVALID (the client sent a module the platform
// refuses), anything else over the limits ETOOLARGE.
func readPluginUpload(c *fiber.Ctx, maxModule int64) (wasm, manifest []byte, err error) {
	mt, params, perr := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if perr != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, nil, errf(core.EUNSUPPORTED, "the body must be multipart/form-data with a `module` part (.wasm) and a `manifest` part (JSON)")
	}
	if enc := c.Get(fiber.HeaderContentEncoding); enc != "" && enc != "identity" {
		return nil, nil, errf(core.EUNSUPPORTED, "compressed request bodies (Content-Encoding) are not accepted")
	}
	tooBigModule := core.Invalid(core.FieldError{Field: "module", Message: fmt.Sprintf("module is larger than the limit of %d bytes", maxModule)})
	// In order: the streamed body of an upload route; a body the server
	// already buffered (within BodyLimit); a raw stream; a pre-parsed form.
	var body io.Reader
	if sb, ok := requestBody(c); ok {
		body = sb
	} else if b := c.Request().Body(); len(b) > 0 {
		body = bytes.NewReader(b)
	} else if st := c.Context().RequestBodyStream(); st != nil {
		body = st
	} else if form, ferr := c.MultipartForm(); ferr == nil && form != nil {
		return pluginUploadFromForm(form, maxModule, tooBigModule)
	} else {
		return nil, nil, core.Invalid(core.FieldError{Field: "module", Message: "a `module` part is required"})
	}
	lr := &limitedReader{r: body, n: maxModule + maxManifestBytes + multipartSlack}
	// Whatever happens, consume what is left within the limit so the client
	// reads our answer instead of a reset connection.
	defer func() { _, _ = io.Copy(io.Discard, lr) }()
	mr := multipart.NewReader(lr, params["boundary"])
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if errors.Is(err, errTooLarge) {
			return nil, nil, errf(core.ETOOLARGE, "the upload is larger than the module limit plus the manifest")
		}
		if err != nil {
			return nil, nil, core.Invalid(core.FieldError{Field: "body", Message: "malformed multipart body"})
		}
		if i >= maxUploadParts {
			return nil, nil, core.Invalid(core.FieldError{Field: "body", Message: fmt.Sprintf("at most %d parts", maxUploadParts)})
		}
		switch part.FormName() {
		case "module":
			if wasm, err = readPart(part, maxModule); errors.Is(err, errPartTooLarge) {
				return nil, nil, tooBigModule
			}
		case "manifest":
			if manifest, err = readPart(part, maxManifestBytes); errors.Is(err, errPartTooLarge) {
				return nil, nil, core.Invalid(core.FieldError{Field: "manifest", Message: fmt.Sprintf("larger than %d bytes", maxManifestBytes)})
			}
		default:
			_, err = io.Copy(io.Discard, part)
		}
		if errors.Is(err, errTooLarge) {
			return nil, nil, errf(core.ETOOLARGE, "the upload is larger than the module limit plus the manifest")
		}
		if err != nil {
			return nil, nil, core.Invalid(core.FieldError{Field: "body", Message: "malformed multipart body"})
		}
	}
	return checkUploadParts(wasm, manifest)
}

var errPartTooLarge = errors.New("part too large")

func readPart(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, errPartTooLarge
	}
	return b, nil
}

// pluginUploadFromForm handles a body fasthttp already parsed (when the app
// pre-parses multipart forms).
func pluginUploadFromForm(form *multipart.Form, maxModule int64, tooBig error) (wasm, manifest []byte, err error) {
	read := func(fh *multipart.FileHeader, max int64) ([]byte, error) {
		if fh.Size > max {
			return nil, errPartTooLarge
		}
		f, err := fh.Open()
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readPart(f, max)
	}
	if fhs := form.File["module"]; len(fhs) > 0 {
		if wasm, err = read(fhs[0], maxModule); errors.Is(err, errPartTooLarge) {
			return nil, nil, tooBig
		} else if err != nil {
			return nil, nil, fmt.Errorf("read module part: %w", err)
		}
	} else if vs := form.Value["module"]; len(vs) > 0 {
		if int64(len(vs[0])) > maxModule {
			return nil, nil, tooBig
		}
		wasm = []byte(vs[0])
	}
	if vs := form.Value["manifest"]; len(vs) > 0 {
		manifest = []byte(vs[0])
	} else if fhs := form.File["manifest"]; len(fhs) > 0 {
		if manifest, err = read(fhs[0], maxManifestBytes); err != nil {
			return nil, nil, core.Invalid(core.FieldError{Field: "manifest", Message: fmt.Sprintf("larger than %d bytes", maxManifestBytes)})
		}
	}
	if int64(len(manifest)) > maxManifestBytes {
		return nil, nil, core.Invalid(core.FieldError{Field: "manifest", Message: fmt.Sprintf("larger than %d bytes", maxManifestBytes)})
	}
	return checkUploadParts(wasm, manifest)
}

func checkUploadParts(wasm, manifest []byte) ([]byte, []byte, error) {
	var errs []core.FieldError
	if len(wasm) == 0 {
		errs = append(errs, core.FieldError{Field: "module", Message: "a `module` part with the .wasm file is required"})
	}
	if len(bytes.TrimSpace(manifest)) == 0 {
		errs = append(errs, core.FieldError{Field: "manifest", Message: "a `manifest` part (JSON) is required"})
	}
	if err := fieldsErr(errs); err != nil {
		return nil, nil, err
	}
	return wasm, manifest, nil
}

func (s *Server) listPlugins(c *fiber.Ctx) error {
	reg, err := s.pluginRegistry()
	if err != nil {
		return err
	}
	list, err := reg.List(c.UserContext(), currentTenant(c).ID)
	if err != nil {
		return err
	}
	return c.JSON(core.Page[*plugins.PluginInfo]{Items: list})
}

func (s *Server) getPlugin(c *fiber.Ctx) error {
	reg, err := s.pluginRegistry()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "id", "plugin")
	if err != nil {
		return err
	}
	info, err := reg.Get(c.UserContext(), currentTenant(c).ID, id)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, info.ETag)
	return c.JSON(info)
}

func (s *Server) patchPlugin(c *fiber.Ctx) error {
	reg, err := s.pluginRegistry()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "id", "plugin")
	if err != nil {
		return err
	}
	revision, err := ifMatch(c)
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "enabled", "config", "failure_policy", "allowed_hosts", "priority", "timeout_ms")
	if err != nil {
		return err
	}
	var u plugins.PluginUpdate
	var errs []core.FieldError
	var enabled bool
	var config json.RawMessage
	var policy string
	var hosts []string
	var priority, timeout int
	if field(m, "enabled", &enabled, &errs) {
		u.Enabled = &enabled
	}
	if field(m, "config", &config, &errs) {
		u.Config = &config
	}
	if field(m, "failure_policy", &policy, &errs) {
		u.FailurePolicy = &policy
	}
	if field(m, "allowed_hosts", &hosts, &errs) {
		u.AllowedHosts = &hosts
	}
	if field(m, "priority", &priority, &errs) {
		u.Priority = &priority
	}
	if field(m, "timeout_ms", &timeout, &errs) {
		u.TimeoutMS = &timeout
	}
	if err := fieldsErr(errs); err != nil {
		return err
	}
	info, err := reg.Update(c.UserContext(), currentTenant(c).ID, actor(c), id, revision, u)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, info.ETag)
	return c.JSON(info)
}

func (s *Server) deletePlugin(c *fiber.Ctx) error {
	reg, err := s.pluginRegistry()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "id", "plugin")
	if err != nil {
		return err
	}
	if err := reg.Delete(c.UserContext(), currentTenant(c).ID, actor(c), id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) testPlugin(c *fiber.Ctx) error {
	reg, err := s.pluginRegistry()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "id", "plugin")
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "hook", "event", "config")
	if err != nil {
		return err
	}
	var run plugins.TestRun
	var errs []core.FieldError
	if !field(m, "hook", &run.Hook, &errs) && len(errs) == 0 {
		errs = append(errs, core.FieldError{Field: "hook", Message: "is required"})
	}
	field(m, "event", &run.Event, &errs)
	field(m, "config", &run.Config, &errs)
	if err := fieldsErr(errs); err != nil {
		return err
	}
	t := currentTenant(c)
	res, err := reg.Test(c.UserContext(), t.ID, t.Slug, id, run)
	if err != nil {
		return err
	}
	return c.JSON(res)
}

func (s *Server) listPluginInvocations(c *fiber.Ctx) error {
	reg, err := s.pluginRegistry()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "id", "plugin")
	if err != nil {
		return err
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	page, err := reg.Invocations(c.UserContext(), currentTenant(c).ID, id, limit, c.Query("cursor"))
	if err != nil {
		return err
	}
	return c.JSON(page)
}

func (s *Server) listPluginDeliveries(c *fiber.Ctx) error {
	reg, err := s.pluginRegistry()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "id", "plugin")
	if err != nil {
		return err
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	items, err := reg.Deliveries(c.UserContext(), currentTenant(c).ID, id, limit)
	if err != nil {
		return err
	}
	return c.JSON(core.Page[plugins.DeliveryInfo]{Items: items})
}
