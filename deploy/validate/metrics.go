package validate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/template"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// MetricFamily is one family the promanage binary exports, as its hidden
// `promanage metrics-catalog` command lists it (from the api's and the
// worker's own Prometheus registries).
type MetricFamily struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Help   string   `json:"help"`
	Labels []string `json:"labels"`
}

// Catalog is every family the binary exports, by name.
type Catalog map[string]MetricFamily

// LoadCatalog runs `go run ./cmd/promanage metrics-catalog` in the
// repository root: the names come from the binary's registries, never from a
// list kept here.
func LoadCatalog(root string) (Catalog, error) {
	cmd := exec.Command("go", "run", "./cmd/promanage", "metrics-catalog")
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("promanage metrics-catalog: %w: %s", err, stderr.String())
	}
	return ParseCatalog(stdout.Bytes())
}

// ParseCatalog reads the JSON lines of `promanage metrics-catalog`.
func ParseCatalog(b []byte) (Catalog, error) {
	c := Catalog{}
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var f MetricFamily
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("metrics catalog: %w", err)
		}
		c[f.Name] = f
	}
	if len(c) == 0 {
		return nil, fmt.Errorf("metrics catalog is empty")
	}
	return c, nil
}

// Series returns the family a series name belongs to: the family itself, or
// a histogram's _bucket/_sum/_count, or a summary's _sum/_count.
func (c Catalog) Series(name string) (MetricFamily, bool) {
	if f, ok := c[name]; ok {
		return f, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if f, ok := c[base]; ok && (f.Type == "histogram" || (f.Type == "summary" && suffix != "_bucket")) {
			return f, true
		}
	}
	return MetricFamily{}, false
}

// targetLabels are the labels Prometheus (Operator) adds to every series of
// a scraped target, besides the ones the binary sets.
var targetLabels = []string{"__name__", "job", "instance", "namespace", "pod", "service", "container", "endpoint"}

// externalMetric reports whether a metric name belongs to another exporter
// the platform runs (kube-state-metrics, cAdvisor, node exporter,
// Prometheus itself). Every other name must be in the binary's catalog.
func externalMetric(name string) bool {
	if name == "up" || name == "ALERTS" || name == "ALERTS_FOR_STATE" {
		return true
	}
	for _, p := range []string{"kube_", "container_", "node_", "kubelet_", "apiserver_", "scrape_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// MetricUse is one PromQL expression found under deploy/.
type MetricUse struct {
	Where string // "PrometheusRule/promanage PromanageOutboxLagging"
	Expr  string
}

var promql = parser.NewParser(parser.Options{})

// CheckPromQL parses expr with Prometheus' own parser and reports syntax
// errors, metric names the catalog lacks, and label names (in matchers and
// in by/without of aggregations over promanage series) that those series
// do not carry.
func CheckPromQL(c Catalog, u MetricUse) []string {
	expr, err := promql.ParseExpr(u.Expr)
	if err != nil {
		return []string{fmt.Sprintf("%s: PromQL does not parse: %v", u.Where, err)}
	}
	var out []string
	bad := func(format string, a ...any) { out = append(out, u.Where+": "+fmt.Sprintf(format, a...)) }
	labelsOf := func(vs *parser.VectorSelector) (allowed []string, ok bool) {
		name := selectorName(vs)
		f, ok := c.Series(name)
		if !ok {
			return nil, false
		}
		allowed = append(append([]string{}, f.Labels...), targetLabels...)
		if strings.HasSuffix(name, "_bucket") {
			allowed = append(allowed, "le")
		}
		return allowed, true
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := selectorName(n)
			if name == "" {
				bad("selector %s names no metric", n)
				return nil
			}
			allowed, ok := labelsOf(n)
			if !ok {
				if !externalMetric(name) {
					bad("metric %s is not exported by promanage (promanage metrics-catalog)", name)
				}
				return nil
			}
			for _, m := range n.LabelMatchers {
				if !slices.Contains(allowed, m.Name) {
					bad("%s has no label %q (it has %v)", name, m.Name, allowed)
				}
			}
		case *parser.AggregateExpr:
			if n.Without || len(n.Grouping) == 0 {
				return nil
			}
			var union []string
			all := true
			parser.Inspect(n.Expr, func(inner parser.Node, _ []parser.Node) error {
				if vs, ok := inner.(*parser.VectorSelector); ok {
					if allowed, ok := labelsOf(vs); ok {
						union = append(union, allowed...)
					} else {
						all = false
					}
				}
				return nil
			})
			if !all || len(union) == 0 {
				return nil // label_replace and foreign series may add labels
			}
			for _, g := range n.Grouping {
				if !slices.Contains(union, g) {
					bad("aggregation by %q over series that have no such label (they have %v)", g, dedupe(union))
				}
			}
		}
		return nil
	})
	return out
}

func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == "__name__" && m.Type.String() == "=" {
			return m.Value
		}
	}
	return ""
}

func dedupe(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return slices.Compact(s)
}

// grafanaVariables are replaced with PromQL-valid stand-ins before parsing a
// dashboard query.
var grafanaRange = regexp.MustCompile(`\$(__rate_interval|__interval|__range|\{__rate_interval\}|\{__interval\}|\{__range\})`)

// DashboardUses returns the PromQL of a Grafana dashboard: every panel
// target and every label_values() template variable.
func DashboardUses(name string, dashboard []byte) ([]MetricUse, error) {
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", name, err)
	}
	var out []MetricUse
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			out = append(out, MetricUse{Where: fmt.Sprintf("dashboard %s panel %q", name, p.Title), Expr: grafanaRange.ReplaceAllString(t.Expr, "5m")})
		}
	}
	labelValues := regexp.MustCompile(`^\s*label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	for _, v := range d.Templating.List {
		q, ok := v.Query.(string)
		if v.Type != "query" || !ok {
			continue
		}
		if m := labelValues.FindStringSubmatch(q); m != nil {
			out = append(out, MetricUse{Where: fmt.Sprintf("dashboard %s variable %s", name, v.Name), Expr: m[1]})
		}
	}
	return out, nil
}

// AdapterRule is one rule of the prometheus-adapter Helm values.
type AdapterRule struct {
	SeriesQuery string `json:"seriesQuery"`
	Resources   struct {
		Namespaced *bool `json:"namespaced,omitempty"`
		Overrides  map[string]struct {
			Resource string `json:"resource"`
		} `json:"overrides"`
	} `json:"resources"`
	Name struct {
		Matches string `json:"matches"`
		As      string `json:"as"`
	} `json:"name"`
	MetricsQuery string `json:"metricsQuery"`
}

// AdapterValues is the part of deploy/k8s/monitoring/prometheus-adapter-values.yaml
// the checks read.
type AdapterValues struct {
	Rules struct {
		Custom   []AdapterRule  `json:"custom"`
		External []AdapterRule  `json:"external"`
		Resource map[string]any `json:"resource"`
	} `json:"rules"`
}

// LoadAdapterValues reads the prometheus-adapter values file.
func LoadAdapterValues(path string) (*AdapterValues, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v AdapterValues
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &v, nil
}

// Published returns the metric name an HPA asks the adapter for and the
// series name behind it, per API ("custom" for Pods metrics, "external").
func (v *AdapterValues) Published() map[string]map[string]string {
	out := map[string]map[string]string{"custom": {}, "external": {}}
	for api, rules := range map[string][]AdapterRule{"custom": v.Rules.Custom, "external": v.Rules.External} {
		for _, r := range rules {
			out[api][r.Name.As] = r.seriesName()
		}
	}
	return out
}

func (r AdapterRule) seriesName() string {
	if e, err := promql.ParseExpr(r.SeriesQuery); err == nil {
		if vs, ok := e.(*parser.VectorSelector); ok {
			return selectorName(vs)
		}
	}
	return ""
}

// AdapterUses returns the PromQL of every adapter rule: the series query,
// and the metrics query with its Go template filled as the adapter fills it.
func (v *AdapterValues) AdapterUses() ([]MetricUse, []string) {
	var out []MetricUse
	var errs []string
	check := func(api string, i int, r AdapterRule) {
		where := fmt.Sprintf("prometheus-adapter %s rule %d (%s)", api, i, r.Name.As)
		out = append(out, MetricUse{Where: where + " seriesQuery", Expr: r.SeriesQuery})
		series := r.seriesName()
		if series == "" {
			errs = append(errs, where+": seriesQuery does not select one metric by name")
			return
		}
		if r.Name.Matches != "" {
			re, err := regexp.Compile(r.Name.Matches)
			if err != nil || !re.MatchString(series) {
				errs = append(errs, fmt.Sprintf("%s: name.matches %q does not match the series %s", where, r.Name.Matches, series))
			}
		}
		q, err := fillAdapterTemplate(r.MetricsQuery, series)
		if err != nil {
			errs = append(errs, where+": metricsQuery: "+err.Error())
			return
		}
		out = append(out, MetricUse{Where: where + " metricsQuery", Expr: q})
	}
	for i, r := range v.Rules.Custom {
		check("custom", i, r)
	}
	for i, r := range v.Rules.External {
		check("external", i, r)
	}
	for name, raw := range v.Rules.Resource {
		m, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		for _, key := range []string{"containerQuery", "nodeQuery"} {
			if s, ok := m[key].(string); ok {
				q, err := fillAdapterTemplate(s, "")
				if err != nil {
					errs = append(errs, fmt.Sprintf("prometheus-adapter resource %s %s: %v", name, key, err))
					continue
				}
				out = append(out, MetricUse{Where: fmt.Sprintf("prometheus-adapter resource %s %s", name, key), Expr: q})
			}
		}
	}
	return out, errs
}

// fillAdapterTemplate renders a prometheus-adapter query template (delimiters
// << >>) the way the adapter does for one namespace.
func fillAdapterTemplate(q, series string) (string, error) {
	t, err := template.New("q").Delims("<<", ">>").Option("missingkey=error").Parse(q)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = t.Execute(&b, map[string]any{
		"Series": series, "LabelMatchers": `namespace="promanage"`, "GroupBy": "namespace",
		"LabelValuesByName": map[string]string{"namespace": "promanage"}, "GroupBySlice": []string{"namespace"},
	})
	return b.String(), err
}

// metricToken finds metric-like names in prose, comments and any other text.
var metricToken = regexp.MustCompile(`\bpromanage_[a-z0-9_]*[a-z0-9]\b`)

// MetricTokens returns every promanage_* token of text that is not a
// non-metric identifier (a Terraform output or variable, a database name).
func MetricTokens(text string, notMetrics map[string]bool) []string {
	var out []string
	for _, tok := range metricToken.FindAllString(text, -1) {
		if !notMetrics[tok] && !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	return out
}
