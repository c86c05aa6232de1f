package validate

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/hashicorp/terraform-config-inspect/tfconfig"
)

var (
	catalogOnce sync.Once
	catalog     Catalog
	catalogErr  error
)

// binaryCatalog is what the promanage binary exports, read once per test
// binary from `promanage metrics-catalog` (built with the go command).
func binaryCatalog(t *testing.T) Catalog {
	t.Helper()
	catalogOnce.Do(func() { catalog, catalogErr = LoadCatalog(repoRoot(t)) })
	if catalogErr != nil {
		t.Fatal(catalogErr)
	}
	return catalog
}

func adapterValues(t *testing.T) *AdapterValues {
	t.Helper()
	v, err := LoadAdapterValues(filepath.Join(repoRoot(t), "deploy/k8s/monitoring/prometheus-adapter-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// deployMetricUses is every PromQL expression of an overlay (alert and
// recording rules, the Grafana dashboard) and of the adapter rules.
func deployMetricUses(t *testing.T, m Manifests, adapter *AdapterValues) []MetricUse {
	t.Helper()
	var uses []MetricUse
	for _, pr := range Each[*PrometheusRule](m) {
		for _, g := range pr.Spec.Groups {
			for _, r := range g.Rules {
				uses = append(uses, MetricUse{Where: "PrometheusRule/" + pr.Name + " " + r.Alert + r.Record, Expr: r.Expr})
			}
		}
	}
	for _, cm := range Each[*corev1.ConfigMap](m) {
		if cm.Labels["grafana_dashboard"] != "1" {
			continue
		}
		for key, data := range cm.Data {
			u, err := DashboardUses(cm.Name+"/"+key, []byte(data))
			if err != nil {
				t.Fatal(err)
			}
			uses = append(uses, u...)
		}
	}
	au, errs := adapter.AdapterUses()
	for _, e := range errs {
		t.Error(e)
	}
	return append(uses, au...)
}

// hpaMetricProblems: every Pods/External metric an HPA asks for is
// published by the adapter, from a series the binary exports.
func hpaMetricProblems(m Manifests, adapter *AdapterValues, c Catalog) []string {
	published := adapter.Published()
	var out []string
	for _, h := range Each[*autoscalingv2.HorizontalPodAutoscaler](m) {
		for _, ms := range h.Spec.Metrics {
			var api, name string
			switch ms.Type {
			case autoscalingv2.PodsMetricSourceType:
				api, name = "custom", ms.Pods.Metric.Name
			case autoscalingv2.ExternalMetricSourceType:
				api, name = "external", ms.External.Metric.Name
			case autoscalingv2.ObjectMetricSourceType:
				api, name = "custom", ms.Object.Metric.Name
			default:
				continue
			}
			series, ok := published[api][name]
			if !ok {
				out = append(out, "HorizontalPodAutoscaler/"+h.Name+": "+api+" metric "+name+" is not published by the prometheus-adapter rules")
				continue
			}
			if _, ok := c.Series(series); !ok {
				out = append(out, "HorizontalPodAutoscaler/"+h.Name+": "+name+" comes from series "+series+", which promanage does not export")
			}
		}
	}
	return out
}

// TestDeployMetricsExist: every metric named by an alert, the dashboard, the
// adapter or an HPA, in every overlay, is a series the binary exports (read
// from its own registries), with the labels used; every query parses.
func TestDeployMetricsExist(t *testing.T) {
	c := binaryCatalog(t)
	adapter := adapterValues(t)
	for name := range overlays {
		t.Run(name, func(t *testing.T) {
			m := loadOverlay(t, name)
			uses := deployMetricUses(t, m, adapter)
			if len(uses) < 20 {
				t.Fatalf("found only %d PromQL expressions in the overlay and adapter rules", len(uses))
			}
			for _, u := range uses {
				for _, p := range CheckPromQL(c, u) {
					t.Error(p)
				}
			}
			for _, p := range hpaMetricProblems(m, adapter, c) {
				t.Error(p)
			}
		})
	}
}

// TestDeployMetricTokens: any promanage_* name written anywhere in the
// manifests, dashboards or the operator's README (comments and prose
// included) is a series the binary exports, unless it is a Terraform output
// or variable.
func TestDeployMetricTokens(t *testing.T) {
	c := binaryCatalog(t)
	root := repoRoot(t)
	notMetrics := map[string]bool{}
	mods, err := TerraformModules(filepath.Join(root, "deploy/terraform"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range mods {
		mod, diags := tfconfig.LoadModule(d)
		if diags.HasErrors() {
			t.Fatal(diags.Err())
		}
		for n := range mod.Outputs {
			notMetrics[n] = true
		}
		for n := range mod.Variables {
			notMetrics[n] = true
		}
	}
	// Role names of the database bootstrap are not metrics either.
	sql, err := os.ReadFile(filepath.Join(root, "deploy/k8s/base/db/bootstrap.sql"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`'(promanage_[a-z_]+)'`).FindAllStringSubmatch(string(sql), -1) {
		notMetrics[m[1]] = true
	}
	var files []string
	filepath.WalkDir(filepath.Join(root, "deploy/k8s"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	files = append(files, filepath.Join(root, "deploy/README.md"))
	found := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range MetricTokens(string(b), notMetrics) {
			found++
			if _, ok := c.Series(tok); !ok {
				rel, _ := filepath.Rel(root, f)
				t.Errorf("%s names %s, which promanage does not export", rel, tok)
			}
		}
	}
	if found < 10 {
		t.Errorf("found only %d metric names under deploy/", found)
	}
}

// TestMetricChecksCanFail: each metric rule rejects a broken input.
func TestMetricChecksCanFail(t *testing.T) {
	c := binaryCatalog(t)
	for _, tc := range []struct{ name, expr, want string }{
		{"UnknownMetric", `rate(promanage_http_errors_total[5m]) > 1`, "promanage_http_errors_total is not exported"},
		{"UnknownUnprefixed", `sum(http_requests_total)`, "http_requests_total is not exported"},
		{"WrongLabel", `sum(rate(promanage_plugin_invocations_total{result!~"ok"}[5m]))`, `no label "result"`},
		{"WrongGrouping", `sum by (hook, result) (rate(promanage_plugin_invocations_total[5m]))`, `aggregation by "result"`},
		{"BucketOfCounter", `rate(promanage_http_requests_total_bucket[5m])`, "promanage_http_requests_total_bucket is not exported"},
		{"SyntaxError", `sum(rate(promanage_http_requests_total[5m])`, "does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckPromQL(c, MetricUse{Where: "test", Expr: tc.expr})
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Fatalf("want a problem containing %q, got %q", tc.want, got)
			}
		})
	}
	for _, ok := range []string{
		`histogram_quantile(0.99, sum by (le, route) (rate(promanage_http_request_duration_seconds_bucket{namespace="x"}[5m])))`,
		`max(promanage_outbox_lag_seconds{service="promanage-worker"}) > 300`,
		`sum(up{service="promanage-api"}) < 2`,
	} {
		if got := CheckPromQL(c, MetricUse{Where: "test", Expr: ok}); len(got) > 0 {
			t.Errorf("a correct query was rejected: %v", got)
		}
	}

	t.Run("DashboardLabel", func(t *testing.T) {
		dash, _ := json.Marshal(map[string]any{"panels": []any{map[string]any{"title": "p", "targets": []any{
			map[string]any{"expr": `sum by (hook, result) (rate(promanage_plugin_invocations_total[$__rate_interval]))`}}}}})
		uses, err := DashboardUses("d", dash)
		if err != nil || len(uses) != 1 || len(CheckPromQL(c, uses[0])) == 0 {
			t.Fatalf("dashboard grouping by a missing label accepted: %v %v", uses, err)
		}
	})
	t.Run("AdapterUnknownSeries", func(t *testing.T) {
		v := adapterValues(t)
		v.Rules.External[0].SeriesQuery = `promanage_outbox_lag{namespace!="",service!=""}`
		v.Rules.External[0].Name.Matches = "^promanage_outbox_lag$"
		uses, _ := v.AdapterUses()
		var problems []string
		for _, u := range uses {
			problems = append(problems, CheckPromQL(c, u)...)
		}
		if !slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, "promanage_outbox_lag is not exported") }) {
			t.Fatalf("adapter rule on an unknown series accepted: %v", problems)
		}
	})
	t.Run("AdapterMatchesMismatch", func(t *testing.T) {
		v := adapterValues(t)
		v.Rules.Custom[0].Name.Matches = "^promanage_http_requests_in_flight$"
		if _, errs := v.AdapterUses(); len(errs) == 0 {
			t.Fatal("name.matches that does not match the series accepted")
		}
	})
	t.Run("HPAOnUnpublishedMetric", func(t *testing.T) {
		m, err := DecodeAll(buildOverlay(t, "production"))
		if err != nil {
			t.Fatal(err)
		}
		h := m.Find("HorizontalPodAutoscaler", "promanage-worker").Typed.(*autoscalingv2.HorizontalPodAutoscaler)
		for i := range h.Spec.Metrics {
			if h.Spec.Metrics[i].Type == autoscalingv2.ExternalMetricSourceType {
				h.Spec.Metrics[i].External.Metric.Name = "promanage_outbox_age_seconds"
			}
		}
		if got := hpaMetricProblems(m, adapterValues(t), c); len(got) == 0 {
			t.Fatal("HPA on a metric the adapter does not publish accepted")
		}
	})
	t.Run("TokenInProse", func(t *testing.T) {
		toks := MetricTokens("alert on promanage_outbox_age_seconds; output promanage_blob_url", map[string]bool{"promanage_blob_url": true})
		if !slices.Equal(toks, []string{"promanage_outbox_age_seconds"}) {
			t.Fatalf("tokens %v", toks)
		}
		if _, ok := c.Series(toks[0]); ok {
			t.Fatal("unknown name found in the catalog")
		}
	})
}
