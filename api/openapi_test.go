package api

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/pb33f/go-yaml"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	"github.com/pb33f/libopenapi/orderedmap"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/plugins"
	"github.com/promanage/promanage/rbac"
)

// servedSpec is /openapi.json as the server sends it.
func servedSpec(t *testing.T) []byte {
	t.Helper()
	resp, err := New(Deps{}, nil).App().Test(mustRequest(t, "GET", "/openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustRequest(t *testing.T, method, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// The served document is valid OpenAPI 3.1 for libopenapi-validator (the
// OAS 3.1 JSON Schema, 2022-10-07, which libopenapi embeds), and every
// reference in it resolves.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	spec := servedSpec(t)
	doc, err := libopenapi.NewDocument(spec)
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Errorf("openapi version %s, want 3.1.0", v)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("the model does not build (a broken $ref?): %v", err)
	}
	if errs := model.Index.GetReferenceIndexErrors(); len(errs) > 0 {
		t.Errorf("reference errors: %v", errs)
	}
	if refs := model.Index.GetAllReferences(); len(refs) == 0 {
		t.Error("no $ref found: the index did not read the document")
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	ok, verrs := v.ValidateDocument()
	for _, e := range verrs {
		t.Errorf("%s", e.Error())
	}
	if !ok && len(verrs) == 0 {
		t.Error("invalid, without a reason")
	}
}

// The validator is not a rubber stamp: the kind of mistake issue 17 found
// (a description in a YAML flow mapping split at a comma, leaving a stray
// key in a parameter) makes the document invalid.
func TestOpenAPIValidatorCatchesStrayKeys(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(servedSpec(t), &doc); err != nil {
		t.Fatal(err)
	}
	get := doc["paths"].(map[string]any)["/v1/tenants/{tenant}/projects"].(map[string]any)["get"].(map[string]any)
	params := get["parameters"].([]any)
	params = append(params, map[string]any{"name": "q2", "in": "query", "description": "over key", "name and description": nil,
		"schema": map[string]any{"type": "string"}})
	get["parameters"] = params
	b, _ := json.Marshal(doc)
	d, err := libopenapi.NewDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, _ := v.ValidateDocument(); ok {
		t.Fatal("a parameter with a stray key passed validation")
	}
}

// operations walks the document's operations.
func operations(t *testing.T) []docOperation {
	t.Helper()
	_, doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	var out []docOperation
	for p, item := range doc["paths"].(map[string]any) {
		item := item.(map[string]any)
		pathParams, _ := item["parameters"].([]any)
		for m, op := range item {
			if m == "parameters" {
				continue
			}
			op := op.(map[string]any)
			params, _ := op["parameters"].([]any)
			out = append(out, docOperation{Path: p, Method: m, Op: op, Params: append(slices.Clone(pathParams), params...)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path+out[i].Method < out[j].Path+out[j].Method })
	return out
}

type docOperation struct {
	Path, Method string
	Op           map[string]any
	Params       []any
}

func (o docOperation) String() string { return strings.ToUpper(o.Method) + " " + o.Path }

func (o docOperation) public() bool {
	sec, ok := o.Op["security"].([]any)
	return ok && len(sec) == 0
}

func (o docOperation) hasParam(ref string) bool {
	for _, p := range o.Params {
		if m, ok := p.(map[string]any); ok && m["$ref"] == "#/components/parameters/"+ref {
			return true
		}
	}
	return false
}

func (o docOperation) response(code string) (string, bool) {
	r, ok := o.Op["responses"].(map[string]any)[code].(map[string]any)
	if !ok {
		return "", false
	}
	ref, _ := r["$ref"].(string)
	return ref, true
}

var operationIDPattern = regexp.MustCompile(`^[a-z]+[A-Za-z0-9]*$`)

// The house rules of api/openapi.yaml, so that every operation reads the
// same to a client and to a generator: a unique camelCase operationId, a
// known tag, a summary; the shared error answers every operation can give;
// Idempotency-Key on every POST; If-Match (412, 428) on every PATCH; 413,
// 415 and 422 wherever a body is read; every error is a shared problem+json
// response.
func TestOpenAPIHouseRules(t *testing.T) {
	_, doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]bool{}
	for _, tg := range doc["tags"].([]any) {
		tags[tg.(map[string]any)["name"].(string)] = true
	}
	ids := map[string]string{}
	for _, o := range operations(t) {
		id, _ := o.Op["operationId"].(string)
		switch {
		case id == "":
			t.Errorf("%s: no operationId", o)
		case !operationIDPattern.MatchString(id):
			t.Errorf("%s: operationId %q is not camelCase", o, id)
		case ids[id] != "":
			t.Errorf("%s: operationId %q is also %s", o, id, ids[id])
		}
		ids[id] = o.String()
		if s, _ := o.Op["summary"].(string); s == "" || len(s) > 80 {
			t.Errorf("%s: summary %q (1-80 characters)", o, s)
		}
		opTags, _ := o.Op["tags"].([]any)
		if len(opTags) != 1 || !tags[opTags[0].(string)] {
			t.Errorf("%s: tags %v, want one of the document's tags", o, opTags)
		}
		var want []string
		if !o.public() {
			want = append(want, "401", "429", "500", "503")
		}
		if strings.HasPrefix(o.Path, "/v1/tenants/{tenant}") {
			want = append(want, "403", "404")
		}
		if !o.public() && o.Method != "get" && !strings.HasPrefix(o.Path, "/v1/hooks/") {
			want = append(want, "403") // a cookie from an origin that is not allowed
		}
		if o.Op["requestBody"] != nil {
			want = append(want, "413", "415", "422")
		}
		if o.Method == "post" {
			if !o.hasParam("idempotencyKey") {
				t.Errorf("%s: a POST without the Idempotency-Key parameter", o)
			}
			if !o.public() {
				want = append(want, "422")
			}
		}
		if o.Method == "patch" {
			if !o.hasParam("ifMatch") && o.Path != "/v1/tenants/{tenant}" {
				t.Errorf("%s: a PATCH without If-Match", o)
			}
			if o.hasParam("ifMatch") {
				want = append(want, "412", "428")
			}
		}
		for _, code := range want {
			if _, ok := o.response(code); !ok {
				t.Errorf("%s: does not document %s", o, code)
			}
		}
		for code := range o.Op["responses"].(map[string]any) {
			n, err := strconv.Atoi(code)
			if err != nil {
				t.Errorf("%s: response %q is not a status code", o, code)
				continue
			}
			// Platform pages (/readyz, /docs) answer their own bodies.
			platform := slices.Contains(opTags, any("Platform"))
			if ref, _ := o.response(code); n >= 400 && !platform && !strings.HasPrefix(ref, "#/components/responses/") {
				t.Errorf("%s: %s is not one of the shared problem+json responses", o, code)
			}
		}
	}
}

// Every example in the document (media type examples and schema examples)
// is valid against its schema, checked by libopenapi-validator.
func TestOpenAPIExamplesMatchTheirSchemas(t *testing.T) {
	doc, err := libopenapi.NewDocument(servedSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	sv := schema_validation.NewSchemaValidator(config.WithFormatAssertions())
	checked := 0
	check := func(where string, s *base.Schema, example any) {
		checked++
		b, _ := json.Marshal(example)
		if ok, errs := sv.ValidateSchemaBytes(s, b); !ok {
			for _, e := range errs {
				t.Errorf("%s: example %s: %s", where, b, e.Error())
			}
		}
	}
	var walk func(where string, sp *base.SchemaProxy, depth int)
	walk = func(where string, sp *base.SchemaProxy, depth int) {
		if sp == nil || depth > 6 || (sp.IsReference() && depth > 0) {
			return // a referenced schema is checked where it is defined
		}
		s := sp.Schema()
		if s == nil {
			t.Errorf("%s: schema does not build: %v", where, sp.GetBuildError())
			return
		}
		for _, ex := range s.Examples {
			var v any
			if err := ex.Decode(&v); err != nil {
				t.Errorf("%s: example: %v", where, err)
				continue
			}
			check(where, s, v)
		}
		if s.Properties != nil {
			for name, p := range s.Properties.FromOldest() {
				walk(where+"."+name, p, depth+1)
			}
		}
		if s.Items != nil && s.Items.IsA() {
			walk(where+"[]", s.Items.A, depth+1)
		}
		for i, sub := range append(append(slices.Clone(s.OneOf), s.AnyOf...), s.AllOf...) {
			walk(where+"/"+strconv.Itoa(i), sub, depth+1)
		}
	}
	for name, sp := range model.Model.Components.Schemas.FromOldest() {
		walk("#/components/schemas/"+name, sp, 0)
	}
	for name, p := range model.Model.Components.Parameters.FromOldest() {
		walk("#/components/parameters/"+name, p.Schema, 1)
	}
	for path, item := range model.Model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			where := strings.ToUpper(method) + " " + path
			for _, p := range op.Parameters {
				walk(where+" parameter "+p.Name, p.Schema, 1)
			}
			if op.RequestBody != nil {
				for mt, m := range op.RequestBody.Content.FromOldest() {
					checkMedia(t, where+" request "+mt, m.Schema, m.Example, m.Examples, check)
				}
			}
			for code, r := range op.Responses.Codes.FromOldest() {
				if r.Content == nil {
					continue
				}
				for mt, m := range r.Content.FromOldest() {
					checkMedia(t, where+" "+code+" "+mt, m.Schema, m.Example, m.Examples, check)
				}
			}
		}
	}
	if checked < 100 {
		t.Errorf("only %d examples checked: the walk missed them", checked)
	}
}

// checkMedia checks a media type's example and named examples against its
// schema.
func checkMedia(t *testing.T, where string, sp *base.SchemaProxy, example *yaml.Node,
	examples *orderedmap.Map[string, *base.Example], check func(string, *base.Schema, any)) {
	t.Helper()
	if sp == nil {
		return
	}
	s := sp.Schema()
	if s == nil {
		t.Errorf("%s: schema does not build: %v", where, sp.GetBuildError())
		return
	}
	var values []*yaml.Node
	if example != nil {
		values = append(values, example)
	}
	if examples != nil {
		for _, ex := range examples.FromOldest() {
			values = append(values, ex.Value)
		}
	}
	for _, n := range values {
		var v any
		if err := n.Decode(&v); err != nil {
			t.Errorf("%s: example: %v", where, err)
			continue
		}
		check(where, s, v)
	}
}

// The codes the binary can answer with are all in the Problem schema's
// code enum, and the enum is the catalogue of the document's introduction.
// The binary's codes are read from its source (the E* constants of
// core/error.go and every `Code: "..."` literal of package api) and from
// codeOfStatus itself, so no list is kept by hand.
func TestOpenAPIErrorCodesAreTheBinarys(t *testing.T) {
	_, doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	var enum []string
	for _, v := range doc["components"].(map[string]any)["schemas"].(map[string]any)["ErrorCode"].(map[string]any)["enum"].([]any) {
		enum = append(enum, v.(string))
	}
	produced := map[string]string{}
	fset := token.NewFileSet()
	for _, pattern := range []string{"../core/*.go", "*.go"} {
		files, _ := filepath.Glob(pattern)
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.ValueSpec: // const EXXX = "code"
					for i, id := range n.Names {
						if strings.HasPrefix(id.Name, "E") && strings.ToUpper(id.Name) == id.Name && i < len(n.Values) {
							if lit, ok := n.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
								code, _ := strconv.Unquote(lit.Value)
								produced[code] = fset.Position(lit.Pos()).String()
							}
						}
					}
				case *ast.KeyValueExpr: // Code: "code"
					if k, ok := n.Key.(*ast.Ident); ok && k.Name == "Code" {
						if lit, ok := n.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							code, _ := strconv.Unquote(lit.Value)
							produced[code] = fset.Position(lit.Pos()).String()
						}
					}
				}
				return true
			})
		}
	}
	for status := 400; status < 600; status++ {
		produced[codeOfStatus(status)] = "codeOfStatus(" + strconv.Itoa(status) + ")"
	}
	if len(produced) < 15 {
		t.Fatalf("found only %d codes in the source: %v", len(produced), produced)
	}
	for code, where := range produced {
		if !slices.Contains(enum, code) {
			t.Errorf("code %q (%s) is not in ErrorCode's enum", code, where)
		}
	}
	intro := doc["info"].(map[string]any)["description"].(string)
	for _, code := range enum {
		if !strings.Contains(intro, "| `"+code+"` |") {
			t.Errorf("code %q is not in the introduction's error table", code)
		}
		status := statusOf(code)
		if s, ok := codeStatus[code]; ok {
			status = s
		}
		if !strings.Contains(intro, "| `"+code+"` | "+strconv.Itoa(status)+" |") {
			t.Errorf("the introduction's error table does not give %q the status %d", code, status)
		}
	}
}

// codeStatus are the statuses of codes that statusOf does not map (fiber's
// own errors and the 416 of downloads).
var codeStatus = map[string]int{"bad_request": 400, "method_not_allowed": 405, "timeout": 408,
	"range_not_satisfiable": 416, "idempotency_key_reused": 422}

// The document's enums are the domain's own lists.
func TestOpenAPIEnumsAreTheDomains(t *testing.T) {
	_, doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	enum := func(name string) []string {
		var out []string
		for _, v := range schemas[name].(map[string]any)["enum"].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	for _, tc := range []struct {
		schema string
		domain []string
	}{
		{"ProjectStatus", core.ProjectStatuses},
		{"TaskStatus", core.TaskStatuses},
		{"DeliveryState", core.DeliveryStates},
		{"AuditOutcome", []string{core.OutcomeSuccess, core.OutcomeDenied}},
		{"PluginHook", append(slices.Clone(plugins.ValidationHooks), plugins.NotificationHooks...)},
		{"PluginInvocationOutcome", []string{plugins.OutcomeAllowed, plugins.OutcomeRejected, plugins.OutcomeOK, plugins.OutcomeFailed}},
		{"FailurePolicy", []string{plugins.FailClosed, plugins.FailOpen}},
	} {
		t.Run(tc.schema, func(t *testing.T) {
			got, want := enum(tc.schema), slices.Clone(tc.domain)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("enum %v, the domain has %v", got, want)
			}
		})
	}
}

// Descriptions that say who may call an operation ("Manager and up.",
// "Admin and owner.", "Owner only.", "Member and up.") agree with the
// lowest built-in role holding the operation's x-permission.
func TestOpenAPIRoleProseMatchesRBAC(t *testing.T) {
	claims := map[string]string{"Owner only": rbac.RoleOwner, "Admin and owner": rbac.RoleAdmin,
		"Manager and up": rbac.RoleManager, "Member and up": rbac.RoleMember}
	n := 0
	for _, o := range operations(t) {
		perm, _ := o.Op["x-permission"].(string)
		desc, _ := o.Op["description"].(string)
		if perm == "" {
			continue
		}
		p, ok := rbac.ParsePermission(perm)
		if !ok {
			t.Errorf("%s: x-permission %q", o, perm)
			continue
		}
		lowest := ""
		for _, role := range rbac.BuiltinRoleNames {
			if slices.Contains(rbac.BuiltinPermissions(role), p) {
				lowest = role
			}
		}
		for phrase, role := range claims {
			if strings.HasPrefix(desc, phrase) {
				n++
				if role != lowest {
					t.Errorf("%s: says %q, but the lowest role with %s is %s", o, phrase, perm, lowest)
				}
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d operations say who may call them", n)
	}
}
