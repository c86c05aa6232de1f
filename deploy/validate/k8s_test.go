package validate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// overlays lists every overlay with the policy profile it must meet. A new
// directory under deploy/k8s/overlays without an entry here fails the test.
var overlays = map[string]Profile{
	"dev":        {ZoneHA: false},
	"production": {ZoneHA: true},
	"kong":       {ZoneHA: true},
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var (
	buildOnce sync.Map // overlay name -> *built
)

type built struct {
	once sync.Once
	docs [][]byte
	err  error
}

// buildOverlay runs kustomize once per overlay per test binary.
func buildOverlay(t *testing.T, name string) [][]byte {
	t.Helper()
	v, _ := buildOnce.LoadOrStore(name, &built{})
	b := v.(*built)
	b.once.Do(func() {
		b.docs, b.err = BuildOverlay(filepath.Join(repoRoot(t), "deploy/k8s/overlays", name))
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.docs
}

func loadOverlay(t *testing.T, name string) Manifests {
	t.Helper()
	m, err := DecodeAll(buildOverlay(t, name))
	if err != nil {
		t.Fatalf("strict decode of overlay %s: %v", name, err)
	}
	return m
}

func TestEveryOverlayIsValidated(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join(repoRoot(t), "deploy/k8s/overlays"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := overlays[e.Name()]; e.IsDir() && !ok {
			t.Errorf("overlay %s has no policy profile in k8s_test.go", e.Name())
		}
	}
}

// TestOverlayBuildsAndDecodesStrictly: kustomize builds every overlay and every
// object decodes into its typed struct with unknown fields as errors.
func TestOverlayBuildsAndDecodesStrictly(t *testing.T) {
	for name := range overlays {
		t.Run(name, func(t *testing.T) {
			m := loadOverlay(t, name)
			kinds := map[string]int{}
			for _, o := range m {
				kinds[o.GVK.Kind]++
			}
			for _, k := range []string{"Namespace", "Deployment", "Job", "Service", "Ingress", "HorizontalPodAutoscaler",
				"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "ConfigMap", "ServiceAccount"} {
				if kinds[k] == 0 {
					t.Errorf("overlay %s has no %s", name, k)
				}
			}
			for _, want := range []string{"promanage-api", "promanage-worker", "kratos"} {
				if m.Find("Deployment", want) == nil {
					t.Errorf("overlay %s has no Deployment %s", name, want)
				}
			}
			if m.Find("Job", "promanage-migrate") == nil {
				t.Errorf("overlay %s has no migration Job", name)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	for name, profile := range overlays {
		t.Run(name, func(t *testing.T) {
			for _, v := range CheckPolicy(loadOverlay(t, name), profile) {
				t.Error(v)
			}
		})
	}
}

func TestStrictDecodeRejectsUnknownFields(t *testing.T) {
	docs := buildOverlay(t, "production")
	cases := []struct {
		name, kind, from, to string
	}{
		{"MisspeltProbe", "Deployment", `"livenessProbe"`, `"livenesProbe"`},
		{"WrongCase", "Deployment", `"readOnlyRootFilesystem"`, `"readOnlyRootFileSystem"`},
		{"HPAUnknownField", "HorizontalPodAutoscaler", `"minReplicas"`, `"minReplica"`},
		{"ServiceMonitorUnknownField", "ServiceMonitor", `"endpoints"`, `"endpoint"`},
		{"KindWithoutType", "Deployment", `"kind":"Deployment"`, `"kind":"Deploymnet"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var doc []byte
			for _, d := range docs {
				if strings.Contains(string(d), `"kind":"`+tc.kind+`"`) && strings.Contains(string(d), tc.from) {
					doc = []byte(strings.Replace(string(d), tc.from, tc.to, 1))
					break
				}
			}
			if doc == nil {
				t.Fatalf("no %s containing %s", tc.kind, tc.from)
			}
			if _, err := DecodeStrict(doc); err == nil {
				t.Fatalf("DecodeStrict accepted %s -> %s", tc.from, tc.to)
			} else {
				t.Logf("rejected as expected: %v", err)
			}
		})
	}
}

// TestPolicyRejectsMutations proves each rule can fail: every case breaks the
// production overlay in one way and expects that rule to report it.
func TestPolicyRejectsMutations(t *testing.T) {
	docs := buildOverlay(t, "production")
	fresh := func(t *testing.T) Manifests {
		m, err := DecodeAll(docs)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	deploy := func(m Manifests, name string) *appsv1.Deployment {
		return m.Find("Deployment", name).Typed.(*appsv1.Deployment)
	}
	hpa := func(m Manifests, name string) *autoscalingv2.HorizontalPodAutoscaler {
		return m.Find("HorizontalPodAutoscaler", name).Typed.(*autoscalingv2.HorizontalPodAutoscaler)
	}
	netpol := func(m Manifests, name string) *networkingv1.NetworkPolicy {
		return m.Find("NetworkPolicy", name).Typed.(*networkingv1.NetworkPolicy)
	}
	remove := func(m Manifests, kind, name string) Manifests {
		return slices.DeleteFunc(m, func(o Object) bool { return o.GVK.Kind == kind && o.Name == name })
	}
	ptr := func(b bool) *bool { return &b }

	cases := []struct {
		name, rule string
		mutate     func(Manifests) Manifests
	}{
		{"ApiWithoutReadinessProbe", "probe.readiness", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.Containers[0].ReadinessProbe = nil
			return m
		}},
		{"ReadinessOnHealthz", "probe.readiness.path", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Path = "/healthz"
			return m
		}},
		{"WorkerWithoutStartupProbe", "probe.startup", func(m Manifests) Manifests {
			deploy(m, "promanage-worker").Spec.Template.Spec.Containers[0].StartupProbe = nil
			return m
		}},
		{"LatestImage", "image.tag", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.Containers[0].Image = "registry.example.com/promanage:latest"
			return m
		}},
		{"ThirdPartyImageByTag", "image.digest", func(m Manifests) Manifests {
			deploy(m, "kratos").Spec.Template.Spec.Containers[0].Image = "oryd/kratos:v1.3.1"
			return m
		}},
		{"UntaggedImage", "image.tag", func(m Manifests) Manifests {
			deploy(m, "kratos").Spec.Template.Spec.Containers[0].Image = "oryd/kratos"
			return m
		}},
		{"SecretCommitted", "secret.committed", func(m Manifests) Manifests {
			s := &corev1.Secret{StringData: map[string]string{"PROMANAGE_SECRET_KEY": "hunter2"}}
			s.Name, s.Namespace = "promanage-secrets", "promanage"
			return append(m, Object{GVK: schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, Name: s.Name, Namespace: s.Namespace, Typed: s})
		}},
		{"DatabaseURLInConfigMap", "secret.in-configmap", func(m Manifests) Manifests {
			for _, cm := range Each[*corev1.ConfigMap](m) {
				if strings.HasPrefix(cm.Name, "promanage-config") {
					cm.Data["PROMANAGE_DATABASE_URL"] = "postgres://promanage:pw@db/promanage"
				}
			}
			return m
		}},
		{"PrivilegeEscalation", "security.allowPrivilegeEscalation", func(m Manifests) Manifests {
			deploy(m, "promanage-worker").Spec.Template.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr(true)
			return m
		}},
		{"WritableRootFS", "security.readOnlyRootFilesystem", func(m Manifests) Manifests {
			deploy(m, "kratos").Spec.Template.Spec.InitContainers[0].SecurityContext.ReadOnlyRootFilesystem = ptr(false)
			return m
		}},
		{"CapabilitiesKept", "security.capabilities", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.Containers[0].SecurityContext.Capabilities = nil
			return m
		}},
		{"NoSeccomp", "security.pod.seccomp", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.SecurityContext.SeccompProfile = nil
			return m
		}},
		{"NoMemoryLimit", "resources.limits", func(m Manifests) Manifests {
			delete(deploy(m, "promanage-api").Spec.Template.Spec.Containers[0].Resources.Limits, corev1.ResourceMemory)
			return m
		}},
		{"GoMemLimitAboveContainerLimit", "resources.gomemlimit", func(m Manifests) Manifests {
			c := &deploy(m, "promanage-api").Spec.Template.Spec.Containers[0]
			c.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("512Mi")
			return m
		}},
		{"SandboxesBeyondContainerLimit", "resources.gomemlimit", func(m Manifests) Manifests {
			c := &deploy(m, "promanage-worker").Spec.Template.Spec.Containers[0]
			for i := range c.Env {
				if c.Env[i].Name == "PROMANAGE_PLUGIN_MAX_SANDBOXES" {
					c.Env[i].Value = "64"
				}
			}
			return m
		}},
		{"NoZoneSpread", "spread.zone", func(m Manifests) Manifests {
			d := deploy(m, "promanage-api")
			d.Spec.Template.Spec.TopologySpreadConstraints = d.Spec.Template.Spec.TopologySpreadConstraints[1:]
			return m
		}},
		{"SoftZoneSpreadInProduction", "spread.zone.hard", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.TopologySpreadConstraints[0].WhenUnsatisfiable = corev1.ScheduleAnyway
			return m
		}},
		{"DuplicateZoneConstraint", "spread.duplicate", func(m Manifests) Manifests {
			s := &deploy(m, "kratos").Spec.Template.Spec
			s.TopologySpreadConstraints = append(s.TopologySpreadConstraints, s.TopologySpreadConstraints[0])
			return m
		}},
		{"SingleReplicaInProduction", "ha.replicas", func(m Manifests) Manifests {
			one := int32(1)
			hpa(m, "promanage-api").Spec.MinReplicas = &one
			return m
		}},
		{"ReplicasFightHPA", "hpa.replicas", func(m Manifests) Manifests {
			three := int32(3)
			deploy(m, "promanage-api").Spec.Replicas = &three
			return m
		}},
		{"ApiHPAWithoutCustomMetric", "hpa.api.custom", func(m Manifests) Manifests {
			h := hpa(m, "promanage-api")
			h.Spec.Metrics = slices.DeleteFunc(h.Spec.Metrics, func(x autoscalingv2.MetricSpec) bool { return x.Type == autoscalingv2.PodsMetricSourceType })
			return m
		}},
		{"ApiHPAWithoutCPU", "hpa.api.resources", func(m Manifests) Manifests {
			h := hpa(m, "promanage-api")
			h.Spec.Metrics = slices.DeleteFunc(h.Spec.Metrics, func(x autoscalingv2.MetricSpec) bool {
				return x.Type == autoscalingv2.ResourceMetricSourceType && x.Resource.Name == corev1.ResourceCPU
			})
			return m
		}},
		{"ApiHPAOnMemory", "hpa.memory", func(m Manifests) Manifests {
			h := hpa(m, "promanage-api")
			eighty := int32(80)
			h.Spec.Metrics = append(h.Spec.Metrics, autoscalingv2.MetricSpec{Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{Name: corev1.ResourceMemory, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: &eighty}}})
			return m
		}},
		{"MemoryRequestBelowLimit", "resources.memory", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceMemory] = resource.MustParse("512Mi")
			return m
		}},
		{"NoMetricsListener", "metrics.listener", func(m Manifests) Manifests {
			for _, cm := range Each[*corev1.ConfigMap](m) {
				delete(cm.Data, "PROMANAGE_METRICS_ADDR")
			}
			return m
		}},
		{"MetricsPortMismatch", "metrics.listener", func(m Manifests) Manifests {
			ports := deploy(m, "promanage-worker").Spec.Template.Spec.Containers[0].Ports
			for i := range ports {
				if ports[i].Name == "metrics" {
					ports[i].ContainerPort = 9100
				}
			}
			return m
		}},
		{"IngressRoutesMetrics", "ingress.metrics", func(m Manifests) Manifests {
			ing := m.Find("Ingress", "promanage").Typed.(*networkingv1.Ingress)
			ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Name = "metrics"
			return m
		}},
		{"PreStopShorterThanDeregistration", "rollout.prestop", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.Containers[0].Lifecycle.PreStop.Sleep.Seconds = 5
			return m
		}},
		{"DeregistrationLongerThanPreStop", "rollout.prestop", func(m Manifests) Manifests {
			ing := m.Find("Ingress", "promanage").Typed.(*networkingv1.Ingress)
			ing.Annotations["alb.ingress.kubernetes.io/target-group-attributes"] = "deregistration_delay.timeout_seconds=30"
			return m
		}},
		{"KratosGraceShorterThanPreStop", "shutdown.grace", func(m Manifests) Manifests {
			thirty := int64(30)
			deploy(m, "kratos").Spec.Template.Spec.TerminationGracePeriodSeconds = &thirty
			return m
		}},
		{"NoReadinessGateLabel", "alb.readiness-gate", func(m Manifests) Manifests {
			delete(m.Find("Namespace", "promanage").Typed.(*corev1.Namespace).Labels, "elbv2.k8s.aws/pod-readiness-gate-inject")
			return m
		}},
		{"ALBHealthCheckOnReadyz", "alb.healthcheck", func(m Manifests) Manifests {
			m.Find("Ingress", "promanage").Typed.(*networkingv1.Ingress).Annotations["alb.ingress.kubernetes.io/healthcheck-path"] = "/readyz"
			return m
		}},
		{"ReadinessGivesUpBeforeReadyz", "probe.readiness.timeout", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.Containers[0].ReadinessProbe.TimeoutSeconds = 2
			return m
		}},
		{"ReadinessFlaps", "probe.readiness.flap", func(m Manifests) Manifests {
			p := deploy(m, "promanage-worker").Spec.Template.Spec.Containers[0].ReadinessProbe
			p.PeriodSeconds, p.FailureThreshold = 2, 1
			return m
		}},
		{"ZoneSpreadCountsLostZone", "spread.zone.taints", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Spec.Template.Spec.TopologySpreadConstraints[0].NodeTaintsPolicy = nil
			return m
		}},
		{"MinDomainsCapsAfterZoneLoss", "spread.zone.capacity", func(m Manifests) Manifests {
			three := int32(3)
			deploy(m, "promanage-api").Spec.Template.Spec.TopologySpreadConstraints[0].MinDomains = &three
			return m
		}},
		{"MigrationAsPreSyncHook", "argocd.order", func(m Manifests) Manifests {
			m.Find("Job", "promanage-migrate").Typed.(*batchv1.Job).Annotations["argocd.argoproj.io/hook"] = "PreSync"
			return m
		}},
		{"MigrationSameWaveAsConfig", "argocd.order", func(m Manifests) Manifests {
			m.Find("Job", "promanage-migrate").Typed.(*batchv1.Job).Annotations["argocd.argoproj.io/sync-wave"] = "-1"
			return m
		}},
		{"MigrationBeforeBootstrap", "argocd.order", func(m Manifests) Manifests {
			m.Find("Job", "promanage-db-bootstrap").Typed.(*batchv1.Job).Annotations["argocd.argoproj.io/sync-wave"] = "1"
			return m
		}},
		{"ApiBeforeMigration", "argocd.order", func(m Manifests) Manifests {
			deploy(m, "promanage-api").Annotations["argocd.argoproj.io/sync-wave"] = "1"
			return m
		}},
		{"MigrationWithAppSecrets", "promanage.least-privilege", func(m Manifests) Manifests {
			j := m.Find("Job", "promanage-migrate").Typed.(*batchv1.Job)
			ef := &j.Spec.Template.Spec.Containers[0].EnvFrom
			*ef = append(*ef, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "promanage-secrets"}}})
			return m
		}},
		{"WorkerHPAWithoutOutboxLag", "hpa.worker.outbox", func(m Manifests) Manifests {
			h := hpa(m, "promanage-worker")
			h.Spec.Metrics = slices.DeleteFunc(h.Spec.Metrics, func(x autoscalingv2.MetricSpec) bool {
				return x.Type == autoscalingv2.ExternalMetricSourceType && x.External.Metric.Name == "promanage_outbox_lag_seconds"
			})
			return m
		}},
		{"NoPDB", "pdb.missing", func(m Manifests) Manifests { return remove(m, "PodDisruptionBudget", "promanage-worker") }},
		{"PDBBlocksDrains", "pdb.blocks-drain", func(m Manifests) Manifests {
			p := m.Find("PodDisruptionBudget", "promanage-api").Typed.(*policyv1.PodDisruptionBudget)
			three := intstr.FromInt32(3)
			p.Spec.MaxUnavailable, p.Spec.MinAvailable = nil, &three
			return m
		}},
		{"NoDefaultDeny", "netpol.default-deny", func(m Manifests) Manifests { return remove(m, "NetworkPolicy", "default-deny-all") }},
		{"WorkerExposedToIngress", "netpol.ingress.external", func(m Manifests) Manifests {
			np := netpol(m, "promanage-api-ingress")
			np.Spec.PodSelector.MatchLabels = map[string]string{"app.kubernetes.io/name": "promanage"}
			return m
		}},
		{"EgressReachesMetadataService", "netpol.egress.private", func(m Manifests) Manifests {
			np := netpol(m, "promanage-to-object-storage")
			np.Spec.Egress[0].To[0].IPBlock.Except = nil
			return m
		}},
		{"ApiCannotReachPostgres", "netpol.egress.missing", func(m Manifests) Manifests { return remove(m, "NetworkPolicy", "allow-postgres") }},
		{"GracePeriodShorterThanDrain", "shutdown.grace", func(m Manifests) Manifests {
			short := int64(20)
			deploy(m, "promanage-api").Spec.Template.Spec.TerminationGracePeriodSeconds = &short
			return m
		}},
		{"ServiceTargetsMissingPort", "service.targetPort", func(m Manifests) Manifests {
			m.Find("Service", "promanage-api").Typed.(*corev1.Service).Spec.Ports[0].TargetPort = intstr.FromString("web")
			return m
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckPolicy(tc.mutate(fresh(t)), overlays["production"])
			if !slices.ContainsFunc(got, func(v Violation) bool { return v.Rule == tc.rule }) {
				t.Fatalf("rule %s not reported; got %v", tc.rule, got)
			}
		})
	}
}

// TestPrometheusAdapterPublishesHPAMetrics: every custom or external metric an
// HPA asks for is published by the adapter rules we ship, under the same name.
func TestPrometheusAdapterPublishesHPAMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/k8s/monitoring/prometheus-adapter-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Rules struct {
			Custom   []struct{ Name struct{ As string } } `json:"custom"`
			External []struct{ Name struct{ As string } } `json:"external"`
		} `json:"rules"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	published := map[autoscalingv2.MetricSourceType][]string{}
	for _, r := range values.Rules.Custom {
		published[autoscalingv2.PodsMetricSourceType] = append(published[autoscalingv2.PodsMetricSourceType], r.Name.As)
	}
	for _, r := range values.Rules.External {
		published[autoscalingv2.ExternalMetricSourceType] = append(published[autoscalingv2.ExternalMetricSourceType], r.Name.As)
	}
	for name := range overlays {
		for _, h := range Each[*autoscalingv2.HorizontalPodAutoscaler](loadOverlay(t, name)) {
			for _, m := range h.Spec.Metrics {
				var metric string
				switch m.Type {
				case autoscalingv2.PodsMetricSourceType:
					metric = m.Pods.Metric.Name
				case autoscalingv2.ExternalMetricSourceType:
					metric = m.External.Metric.Name
				default:
					continue
				}
				if !slices.Contains(published[m.Type], metric) {
					t.Errorf("%s: HPA %s uses %s metric %s, which the adapter does not publish (has %v)", name, h.Name, m.Type, metric, published[m.Type])
				}
			}
		}
	}
}

// TestGrafanaDashboard: valid JSON and a panel for each signal the issue asks
// for (TestDeployMetricsExist checks the names and labels against the binary).
func TestGrafanaDashboard(t *testing.T) {
	m := loadOverlay(t, "production")
	o := m.Find("ConfigMap", "promanage-grafana-dashboard")
	if o == nil {
		t.Fatal("no ConfigMap promanage-grafana-dashboard")
	}
	cm := o.Typed.(*corev1.ConfigMap)
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Error("dashboard ConfigMap lacks the grafana_dashboard=1 label the Grafana sidecar watches")
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["promanage-dashboard.json"]), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var all strings.Builder
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			all.WriteString(tg.Expr + "\n")
		}
	}
	for _, want := range []string{
		"promanage_http_requests_total", "promanage_http_request_duration_seconds_bucket", `status=~"5..`,
		"promanage_plugin_invocations_total", "promanage_outbox_lag_seconds", "promanage_tenants", "by (route",
	} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("dashboard has no query with %s", want)
		}
	}
}

func TestKongOverlayGateway(t *testing.T) {
	m := loadOverlay(t, "kong")
	ing := m.Find("Ingress", "promanage").Typed.(*networkingv1.Ingress)
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "kong" {
		t.Fatalf("ingress class %v, want kong", ing.Spec.IngressClassName)
	}
	plugins := map[string]string{}
	for _, p := range Each[*KongPlugin](m) {
		plugins[p.Name] = p.Plugin
	}
	var kinds []string
	for _, name := range strings.Split(ing.Annotations["konghq.com/plugins"], ",") {
		kind, ok := plugins[strings.TrimSpace(name)]
		if !ok {
			t.Errorf("ingress references KongPlugin %q, which is not in the overlay", name)
		}
		kinds = append(kinds, kind)
	}
	for _, want := range []string{"rate-limiting", "correlation-id"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("ingress does not apply a %s plugin (has %v)", want, kinds)
		}
	}
	for k := range ing.Annotations {
		if strings.HasPrefix(k, "alb.ingress.kubernetes.io/") {
			t.Errorf("ALB annotation %s left on the Kong ingress", k)
		}
	}
}

// TestKratosRegistrationHook: the Kubernetes Kratos config calls the api's
// registration web hook with the jsonnet body it ships, and the hook's key is
// never in the config (the Secret provides it).
func TestKratosRegistrationHook(t *testing.T) {
	root := repoRoot(t)
	a, _ := os.ReadFile(filepath.Join(root, "deploy/kratos/registration-hook.jsonnet"))
	b, _ := os.ReadFile(filepath.Join(root, "deploy/k8s/base/kratos/registration-hook.jsonnet"))
	if len(a) == 0 || string(a) != string(b) {
		t.Error("deploy/k8s/base/kratos/registration-hook.jsonnet differs from deploy/kratos/registration-hook.jsonnet")
	}
	for name := range overlays {
		m := loadOverlay(t, name)
		var cm *corev1.ConfigMap
		for _, c := range Each[*corev1.ConfigMap](m) {
			if strings.HasPrefix(c.Name, "kratos-config") {
				cm = c
			}
		}
		if cm == nil {
			t.Fatalf("%s: no kratos-config", name)
		}
		var cfg struct {
			Selfservice struct {
				Flows struct {
					Registration struct {
						After struct {
							Password struct {
								Hooks []struct {
									Hook   string `json:"hook"`
									Config struct {
										URL  string `json:"url"`
										Body string `json:"body"`
										Auth struct {
											Config struct {
												Name  string `json:"name"`
												Value string `json:"value"`
											} `json:"config"`
										} `json:"auth"`
									} `json:"config"`
								} `json:"hooks"`
							} `json:"password"`
						} `json:"after"`
					} `json:"registration"`
				} `json:"flows"`
			} `json:"selfservice"`
		}
		if err := yaml.Unmarshal([]byte(cm.Data["kratos.yml"]), &cfg); err != nil {
			t.Fatal(err)
		}
		hooks := cfg.Selfservice.Flows.Registration.After.Password.Hooks
		if len(hooks) == 0 || hooks[0].Hook != "web_hook" {
			t.Errorf("%s: the first registration hook is not the web hook (the Secret key SELFSERVICE_FLOWS_REGISTRATION_AFTER_PASSWORD_HOOKS_0_... sets its key): %+v", name, hooks)
			continue
		}
		h := hooks[0].Config
		if h.URL != "http://promanage-api/v1/hooks/kratos/registration" || m.Find("Service", "promanage-api") == nil {
			t.Errorf("%s: web hook URL %q does not reach the api Service", name, h.URL)
		}
		if _, ok := cm.Data[strings.TrimPrefix(h.Body, "file:///etc/config/kratos/")]; !ok {
			t.Errorf("%s: web hook body %s is not in the kratos-config ConfigMap", name, h.Body)
		}
		if h.Auth.Config.Name != "X-Hook-Key" || !strings.HasPrefix(h.Auth.Config.Value, "set-from-") {
			t.Errorf("%s: web hook key must be a placeholder set from the Secret, got %q", name, h.Auth.Config.Value)
		}
	}
}

// TestSetPromanageImage: CI deploys exactly the digest it built: every
// promanage container gets it, nothing else changes, and a reference without
// a digest is refused.
func TestSetPromanageImage(t *testing.T) {
	docs := buildOverlay(t, "production")
	ref := "123456789012.dkr.ecr.eu-west-1.amazonaws.com/promanage@sha256:" + strings.Repeat("a", 64)
	out, err := SetPromanageImage(docs, ref)
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range Each[*appsv1.Deployment](m) {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Image == ref {
				n++
			} else if isPromanage(c.Image) {
				t.Errorf("%s still runs %s", d.Name, c.Image)
			}
		}
	}
	if n != 2 || m.Find("Job", "promanage-migrate").Typed.(*batchv1.Job).Spec.Template.Spec.Containers[0].Image != ref {
		t.Errorf("image set in %d Deployments (want api and worker) and the migration Job", n)
	}
	if _, err := SetPromanageImage(docs, "registry.example.com/promanage:v1"); err == nil {
		t.Error("a tag without digest was accepted")
	}
}

// TestDevDeps: the local Postgres and Redis of the dev overlay and the kind
// smoke test decode strictly and meet the security rules.
func TestDevDeps(t *testing.T) {
	docs, err := BuildOverlay(filepath.Join(repoRoot(t), "deploy/k8s/dev-deps"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeAll(docs)
	if err != nil {
		t.Fatal(err)
	}
	c := &checker{m: m}
	for _, d := range Each[*appsv1.Deployment](m) {
		c.podTemplate("Deployment/"+d.Name, &d.Spec.Template, false)
	}
	for _, v := range c.out {
		if v.Rule != "security.pod.automountToken" {
			t.Error(v)
		}
	}
	if len(Each[*appsv1.Deployment](m)) != 2 {
		t.Error("want Postgres and Redis")
	}
}
