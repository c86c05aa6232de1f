package contract

import (
	"net/http"
	"strings"
	"testing"

	"github.com/promanage/promanage/api"
)

// The checker passes answers that match the document and names what is
// wrong with those that do not.
func TestCheck(t *testing.T) {
	spec, _, err := api.Spec()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	const tenant = `{"id":"0190a5e2-6b0c-7a2d-8e9f-1a0b2c3d4e5f","slug":"acme","name":"Acme","state":"active","schema_version":7,"role":"owner","settings":{},"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}`
	problem := `{"type":"https://promanage.dev/problems/not_found","title":"Not Found","status":404,"code":"not_found","request_id":"x"}`
	cases := []struct {
		name, method, path string
		status             int
		contentType, body  string
		headers            []string
		want               string // "" = no problem; else a substring of one
	}{
		{"Valid", "GET", "/v1/tenants/acme", 200, "application/json", tenant, nil, ""},
		{"UndocumentedMember", "GET", "/v1/tenants/acme", 200, "application/json",
			strings.Replace(tenant, `"slug"`, `"secret":"x","slug"`, 1), nil, "'secret'"},
		{"MissingRequiredMember", "GET", "/v1/tenants/acme", 200, "application/json",
			strings.Replace(tenant, `"slug":"acme",`, "", 1), nil, "missing property 'slug'"},
		{"WrongFormat", "GET", "/v1/tenants/acme", 200, "application/json",
			strings.Replace(tenant, "2026-01-02T03:04:05Z", "yesterday", 1), nil, "date-time"},
		{"UndocumentedStatus", "GET", "/v1/tenants/acme", 418, "application/problem+json", problem, nil, "status 418 is not documented"},
		{"ErrorNotProblemJSON", "GET", "/v1/tenants/acme", 404, "application/json", problem, nil, "Content-Type"},
		{"UnknownErrorCode", "GET", "/v1/tenants/acme", 404, "application/problem+json",
			strings.Replace(problem, `"code":"not_found"`, `"code":"oops"`, 1), nil, "$.code: value must be one of"},
		{"MissingRequiredHeader", "POST", "/v1/tenants", 201, "application/json", tenant, nil, "Location"},
		{"RequiredHeader", "POST", "/v1/tenants", 201, "application/json", tenant, []string{"Location", "/v1/tenants/acme"}, ""},
		{"NoContent", "DELETE", "/v1/tenants/acme", 204, "", "", nil, ""},
		{"BodyOnNoContent", "DELETE", "/v1/tenants/acme", 204, "application/json", "{}", nil, "no body"},
		{"UnknownRouteProblem", "GET", "/v1/nope", 404, "application/problem+json", problem, nil, ""},
		{"UnknownRouteSuccess", "GET", "/v1/nope", 200, "application/json", "{}", nil, "not an operation"},
		{"UnknownRouteNotProblem", "GET", "/v1/nope", 404, "text/plain", "Cannot GET", nil, "problem+json"},
		{"Download", "GET", "/v1/tenants/acme/documents/0190a5e2-af40-7c61-8d33-5e4f6a7b8c93/content", 200, "application/json",
			`["any", "bytes"]`, []string{"ETag", `"abc"`}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://127.0.0.1:1"+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}, Request: req}
			if tc.contentType != "" {
				resp.Header.Set("Content-Type", tc.contentType)
			}
			for i := 0; i+1 < len(tc.headers); i += 2 {
				resp.Header.Set(tc.headers[i], tc.headers[i+1])
			}
			var body []byte
			if IsJSON(tc.contentType) || tc.body != "" {
				body = []byte(tc.body)
			}
			got := strings.Join(c.Check(req, resp, body), "\n")
			switch {
			case tc.want == "" && got != "":
				t.Errorf("want no problem, got:\n%s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("want a problem naming %q, got:\n%s", tc.want, got)
			}
		})
	}
	if cov := c.Coverage(); len(cov["getTenant"]) == 0 || len(cov["listProjects"]) != 0 {
		t.Errorf("coverage: getTenant %v, listProjects %v", cov["getTenant"], cov["listProjects"])
	}
}
