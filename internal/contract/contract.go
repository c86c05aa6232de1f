// Package contract checks real HTTP exchanges against the OpenAPI document
// (api/openapi.yaml) with libopenapi-validator: the status is documented for
// the operation, the body and headers match the documented response, errors
// are problem+json. Tests use it (cmd/promanage's end-to-end tests check
// every response of the servers they start); it must never be imported by
// the binary.
package contract

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
	"github.com/pb33f/libopenapi-validator/paths"
	"github.com/pb33f/libopenapi-validator/responses"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
)

// MaxBody is the largest JSON body Check validates; larger ones are a
// failure (no API answer should be that large).
const MaxBody = 16 << 20

// freeForm are the members whose values are the client's or a plugin's own
// JSON (document metadata, plugin config, event payloads, ...): strict mode
// does not look inside them.
var freeForm = []string{"metadata", "config", "data", "details", "request", "result", "event", "checks"}

// headersNotPerResponse are response headers documented once for the whole
// API (rate limits, security headers, compression), not per response.
var headersNotPerResponse = []string{"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
	"content-encoding", "content-security-policy", "x-content-type-options", "strict-transport-security",
	"referrer-policy", "x-frame-options", "permissions-policy", "cross-origin-opener-policy",
	"cross-origin-resource-policy", "cross-origin-embedder-policy", "x-permitted-cross-domain-policies"}

// Checker validates exchanges against one document. It is safe for
// concurrent use.
type Checker struct {
	mu      sync.Mutex
	doc     *v3.Document
	opts    *config.ValidationOptions
	strict  validator.Validator // undeclared members and headers are errors
	lenient validator.Validator // for free-form documents (the OpenAPI document itself)
	schemas schema_validation.SchemaValidator
	problem *base.Schema
	seen    map[string]map[int]int // operationId -> status -> count
}

// New parses spec (the served /openapi.json) and prepares the validators.
func New(spec []byte) (*Checker, error) {
	doc, err := libopenapi.NewDocument(spec)
	if err != nil {
		return nil, fmt.Errorf("parse openapi: %w", err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("build openapi model: %w", err)
	}
	var ignore []string
	for _, name := range freeForm {
		ignore = append(ignore, "$.body."+name, "$.body.**."+name)
	}
	strictOpts := []config.Option{config.WithFormatAssertions(), config.WithStrictMode(),
		config.WithStrictIgnorePaths(ignore...), config.WithStrictIgnoredHeadersExtra(headersNotPerResponse...)}
	c := &Checker{
		doc:     &model.Model,
		opts:    config.NewValidationOptions(),
		strict:  validator.NewValidatorFromV3Model(&model.Model, strictOpts...),
		lenient: validator.NewValidatorFromV3Model(&model.Model, config.WithFormatAssertions()),
		schemas: schema_validation.NewSchemaValidator(config.WithFormatAssertions()),
		seen:    map[string]map[int]int{},
	}
	if p, ok := model.Model.Components.Schemas.Get("Problem"); ok {
		c.problem = p.Schema()
	}
	if c.problem == nil {
		return nil, fmt.Errorf("openapi: components.schemas.Problem is missing")
	}
	return c, nil
}

// IsJSON reports whether a Content-Type is JSON (application/json,
// application/problem+json, ...): Check validates the bodies of those.
func IsJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// Check validates one exchange and returns what does not match the
// document, as readable lines (none when it matches). body is the response
// body when it is JSON (IsJSON), else nil: the bytes of downloads are
// never read here.
func (c *Checker) Check(req *http.Request, resp *http.Response, body []byte) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	where := req.Method + " " + req.URL.Path + " -> " + strconv.Itoa(resp.StatusCode)
	if IsJSON(resp.Header.Get("Content-Type")) && len(body) > MaxBody {
		return []string{where + ": body larger than " + strconv.Itoa(MaxBody) + " bytes"}
	}
	pathItem, errs, template := paths.FindPath(req, c.doc, c.opts)
	var op *v3.Operation
	if pathItem != nil && len(errs) == 0 {
		op = helpers.ExtractOperation(req, pathItem)
	}
	if op == nil {
		// Not an operation of the document (an unknown route, or a method
		// the route does not have): only an error may answer it.
		c.record("(undocumented route)", resp.StatusCode)
		return c.checkProblemOnly(where, resp, body)
	}
	c.record(op.OperationId, resp.StatusCode)
	found := lookupResponse(op, resp.StatusCode)
	if found == nil {
		return []string{fmt.Sprintf("%s: status %d is not documented for %s", where, resp.StatusCode, op.OperationId)}
	}
	var out []string
	if orderedLen(found) == 0 {
		if req.Method != http.MethodHead && len(body) > 0 {
			out = append(out, where+": the documented response has no body, but one was sent")
		}
		return append(out, c.headers(req, resp, found, template)...)
	}
	ct := resp.Header.Get("Content-Type")
	media, ok := helpers.FindMediaType(found.Content, ct)
	if !ok {
		return []string{fmt.Sprintf("%s: Content-Type %q is not documented for %s", where, ct, op.OperationId)}
	}
	if req.Method == http.MethodHead || !IsJSON(ct) || isBinary(media) {
		// Bytes (a download, a page, metrics): the status, type and headers
		// are the contract, not the bytes.
		return c.headers(req, resp, found, template)
	}
	v := c.strict
	if media.Schema != nil && isFreeFormObject(media.Schema.Schema()) {
		v = c.lenient
	}
	r := *resp
	r.Body = io.NopCloser(bytes.NewReader(body))
	if ok, verrs := v.GetResponseBodyValidator().ValidateResponseBodyWithPathItem(req, &r, pathItem, template); !ok {
		out = append(out, describe(where, verrs)...)
	}
	return out
}

func (c *Checker) checkProblemOnly(where string, resp *http.Response, body []byte) []string {
	if resp.StatusCode < 400 {
		return []string{where + ": not an operation of the document, yet answered with success"}
	}
	if resp.Request != nil && resp.Request.Method == http.MethodHead {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "application/problem+json" {
		return []string{fmt.Sprintf("%s: an error answered with %q, not application/problem+json", where, mt)}
	}
	if ok, verrs := c.schemas.ValidateSchemaBytes(c.problem, body); !ok {
		return describe(where, verrs)
	}
	return nil
}

func (c *Checker) headers(req *http.Request, resp *http.Response, found *v3.Response, template string) []string {
	if found.Headers == nil {
		return nil
	}
	code := strconv.Itoa(resp.StatusCode)
	ok, verrs := responses.ValidateResponseHeaders(req, resp, found.Headers, template, code,
		config.WithStrictMode(), config.WithStrictIgnoredHeadersExtra(headersNotPerResponse...))
	if ok {
		return nil
	}
	return describe(req.Method+" "+req.URL.Path+" -> "+code, verrs)
}

func (c *Checker) record(op string, status int) {
	m := c.seen[op]
	if m == nil {
		m = map[int]int{}
		c.seen[op] = m
	}
	m[status]++
}

// Coverage returns, for each operationId of the document, the statuses its
// checked responses had (none: never exercised), and under
// "(undocumented route)" those of requests outside the document.
func (c *Checker) Coverage() map[string][]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]int{}
	for _, pi := range c.doc.Paths.PathItems.FromOldest() {
		for _, op := range pi.GetOperations().FromOldest() {
			out[op.OperationId] = nil
		}
	}
	for op, statuses := range c.seen {
		for s := range statuses {
			out[op] = append(out[op], s)
		}
		slices.Sort(out[op])
	}
	return out
}

func lookupResponse(op *v3.Operation, status int) *v3.Response {
	if op.Responses == nil || op.Responses.Codes == nil {
		return nil
	}
	if r, ok := op.Responses.Codes.Get(strconv.Itoa(status)); ok {
		return r
	}
	if r, ok := op.Responses.Codes.Get(strconv.Itoa(status/100) + "XX"); ok {
		return r
	}
	return op.Responses.Default
}

func orderedLen(r *v3.Response) int {
	if r.Content == nil {
		return 0
	}
	return r.Content.Len()
}

// isBinary: a media type whose schema is opaque bytes (format: binary).
func isBinary(m *v3.MediaType) bool {
	if m.Schema == nil {
		return true
	}
	s := m.Schema.Schema()
	return s != nil && s.Format == "binary"
}

// isFreeFormObject: an object schema that declares no members (the
// document's own /openapi.json answer).
func isFreeFormObject(s *base.Schema) bool {
	return s != nil && slices.Contains(s.Type, "object") && (s.Properties == nil || s.Properties.Len() == 0) &&
		len(s.AllOf) == 0 && len(s.OneOf) == 0 && len(s.AnyOf) == 0
}

func describe(where string, verrs []*liberrors.ValidationError) []string {
	var out []string
	for _, e := range verrs {
		line := where + ": " + e.Message
		if e.Reason != "" {
			line += " (" + e.Reason + ")"
		}
		for _, f := range e.SchemaValidationErrors {
			loc := f.FieldPath
			if loc == "" {
				loc = f.KeywordLocation
			}
			line += "; " + loc + ": " + f.Reason
		}
		out = append(out, line)
	}
	return out
}
