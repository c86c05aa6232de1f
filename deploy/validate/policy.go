package validate

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Profile says how strict the policy is for one overlay.
type Profile struct {
	// ZoneHA requires hard zone spread that survives the loss of a zone and
	// at least two replicas for every server Deployment.
	ZoneHA bool
	// Zones is the number of availability zones the cluster spans (the
	// Terraform module's availability_zone_count; 3 when zero).
	Zones int
}

// SecretNames are the Secrets the manifests may reference. External Secrets
// Operator (production) or the operator (deploy/README.md) creates them; they
// are never committed. promanage-secrets holds the app role's database URL,
// promanage-migrate-secrets the migration role's, promanage-db-admin the
// master user and role passwords the database bootstrap Job alone reads.
var SecretNames = []string{"promanage-secrets", "promanage-migrate-secrets", "promanage-db-admin", "kratos-secrets"}

// secretSettings must come from a Secret, never from a ConfigMap or a literal.
var secretSettings = []string{
	"PROMANAGE_DATABASE_URL", "PROMANAGE_REDIS_URL", "PROMANAGE_SECRET_KEY",
	"PROMANAGE_HOOK_API_KEY", "DSN", "SECRETS_COOKIE", "SECRETS_CIPHER",
	"SECRETS_DEFAULT", "COURIER_SMTP_CONNECTION_URI",
	"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
}

// Violation is one broken rule.
type Violation struct {
	Object string // "Deployment/promanage-api"
	Rule   string // short rule id, e.g. "probe.readiness"
	Detail string
}

func (v Violation) String() string { return v.Object + ": " + v.Rule + ": " + v.Detail }

type checker struct {
	m   Manifests
	p   Profile
	out []Violation
}

func (c *checker) add(obj, rule, format string, args ...any) {
	c.out = append(c.out, Violation{Object: obj, Rule: rule, Detail: fmt.Sprintf(format, args...)})
}

// CheckPolicy applies every rule to the built manifests of one overlay and
// returns the violations, sorted.
func CheckPolicy(m Manifests, p Profile) []Violation {
	c := &checker{m: m, p: p}
	c.namespaces()
	c.noSecrets()
	for _, d := range Each[*appsv1.Deployment](m) {
		c.podTemplate("Deployment/"+d.Name, &d.Spec.Template, true)
		c.deployment(d)
		c.gracePeriod("Deployment/"+d.Name, &d.Spec.Template)
		c.metricsListener("Deployment/"+d.Name, &d.Spec.Template)
	}
	for _, j := range Each[*batchv1.Job](m) {
		c.podTemplate("Job/"+j.Name, &j.Spec.Template, false)
		c.job(j)
	}
	c.autoscaling()
	c.disruptionBudgets()
	c.services()
	c.networkPolicies()
	c.monitoring()
	c.loadBalancer()
	c.argoWaves()
	sort.Slice(c.out, func(i, j int) bool { return c.out[i].String() < c.out[j].String() })
	return c.out
}

func (c *checker) namespaces() {
	ns := Each[*corev1.Namespace](c.m)
	if len(ns) != 1 {
		c.add("Namespace", "namespace.present", "want exactly one Namespace, got %d", len(ns))
	}
	for _, n := range ns {
		if n.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			c.add("Namespace/"+n.Name, "namespace.pod-security", "label pod-security.kubernetes.io/enforce must be \"restricted\"")
		}
	}
	for _, o := range c.m {
		if o.GVK.Kind != "Namespace" && len(ns) == 1 && o.Namespace != ns[0].Name {
			c.add(o.ID(), "namespace.consistent", "namespace %q, want %q", o.Namespace, ns[0].Name)
		}
	}
}

// noSecrets: Secrets are referenced, never committed; secret settings never sit
// in a ConfigMap.
func (c *checker) noSecrets() {
	for _, s := range Each[*corev1.Secret](c.m) {
		c.add("Secret/"+s.Name, "secret.committed", "manifests must not contain Secrets (%d data keys); reference %v instead", len(s.Data)+len(s.StringData), SecretNames)
	}
	for _, cm := range Each[*corev1.ConfigMap](c.m) {
		for k := range cm.Data {
			if slices.Contains(secretSettings, k) {
				c.add("ConfigMap/"+cm.Name, "secret.in-configmap", "%s is a secret setting; it belongs in a Secret", k)
			}
		}
	}
}

var imageRef = regexp.MustCompile(`^[a-z0-9.\-/:]+(:[A-Za-z0-9_.\-]+)?(@sha256:[a-f0-9]{64})?$`)

func (c *checker) podTemplate(id string, t *corev1.PodTemplateSpec, server bool) {
	ps := &t.Spec
	psc := ps.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		c.add(id, "security.pod.runAsNonRoot", "pod securityContext.runAsNonRoot must be true")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.add(id, "security.pod.seccomp", "pod securityContext.seccompProfile.type must be RuntimeDefault")
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		c.add(id, "security.pod.automountToken", "automountServiceAccountToken must be false (no pod talks to the Kubernetes API)")
	}
	if ps.HostNetwork || ps.HostPID || ps.HostIPC {
		c.add(id, "security.pod.hostNamespaces", "host namespaces are forbidden")
	}
	for _, v := range ps.Volumes {
		if v.HostPath != nil {
			c.add(id, "security.pod.hostPath", "volume %s is a hostPath", v.Name)
		}
		if v.EmptyDir != nil && v.EmptyDir.SizeLimit == nil {
			c.add(id, "resources.emptyDir.sizeLimit", "emptyDir %s has no sizeLimit (a full node disk evicts every pod on it)", v.Name)
		}
	}
	all := append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...)
	for _, ctr := range all {
		cid := id + "[" + ctr.Name + "]"
		c.container(cid, ctr, psc)
	}
	for _, ctr := range ps.Containers {
		cid := id + "[" + ctr.Name + "]"
		if server && len(ctr.Ports) > 0 {
			c.probes(cid, ctr)
		}
		if isPromanage(ctr.Image) {
			c.promanageContainer(cid, ctr, ps)
		}
	}
}

func isPromanage(image string) bool {
	name := image
	if i := strings.IndexAny(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return name == "promanage" || strings.HasSuffix(name, "/promanage")
}

func (c *checker) container(cid string, ctr corev1.Container, psc *corev1.PodSecurityContext) {
	// Image: explicit tag or digest, never latest.
	img := ctr.Image
	switch {
	case !imageRef.MatchString(img):
		c.add(cid, "image.reference", "image %q is not a valid reference", img)
	case strings.Contains(img, "@sha256:"):
	case strings.LastIndex(img, ":") <= strings.LastIndex(img, "/"):
		c.add(cid, "image.tag", "image %q has no tag (means :latest)", img)
	case strings.HasSuffix(img, ":latest"):
		c.add(cid, "image.tag", "image %q uses :latest", img)
	}
	// Third-party images are pinned by digest (Renovate updates them); the
	// promanage image gets the digest CI built and scanned at deploy time.
	if !isPromanage(img) && !strings.Contains(img, "@sha256:") {
		c.add(cid, "image.digest", "image %q is not pinned by digest", img)
	}

	sc := ctr.SecurityContext
	if sc == nil {
		c.add(cid, "security.container", "no securityContext")
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.add(cid, "security.allowPrivilegeEscalation", "must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.add(cid, "security.readOnlyRootFilesystem", "must be true")
	}
	if sc.Privileged != nil && *sc.Privileged {
		c.add(cid, "security.privileged", "must not be privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		c.add(cid, "security.capabilities", "capabilities.drop must contain ALL")
	} else if len(sc.Capabilities.Add) > 0 {
		c.add(cid, "security.capabilities", "adds capabilities %v", sc.Capabilities.Add)
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
	if !nonRoot {
		c.add(cid, "security.runAsNonRoot", "must run as non-root")
	}
	uid := sc.RunAsUser
	if uid == nil && psc != nil {
		uid = psc.RunAsUser
	}
	if uid == nil || *uid == 0 {
		c.add(cid, "security.runAsUser", "needs a numeric non-zero runAsUser")
	}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.add(cid, "security.seccomp", "container seccompProfile must be RuntimeDefault")
	}

	// Resources: requests for scheduling and HPA utilisation, limits against noisy neighbours.
	r := ctr.Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := r.Requests[name]; !ok {
			c.add(cid, "resources.requests", "no %s request", name)
		}
		if _, ok := r.Limits[name]; !ok {
			c.add(cid, "resources.limits", "no %s limit", name)
		}
	}
	if req, ok := r.Requests[corev1.ResourceMemory]; ok {
		if lim, ok := r.Limits[corev1.ResourceMemory]; ok && req.Cmp(lim) != 0 {
			c.add(cid, "resources.memory", "memory request %s != limit %s: a pod above its request is the first a node under memory pressure evicts", req.String(), lim.String())
		}
	}
	for _, e := range ctr.Env {
		if slices.Contains(secretSettings, e.Name) && e.Value != "" {
			c.add(cid, "secret.literal-env", "%s is set as a literal; use secretKeyRef", e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !slices.Contains(SecretNames, e.ValueFrom.SecretKeyRef.Name) {
			c.add(cid, "secret.unknown", "references Secret %s, not one of %v", e.ValueFrom.SecretKeyRef.Name, SecretNames)
		}
	}
	for _, e := range ctr.Env {
		if e.Name == "GOMEMLIMIT" {
			c.goMemLimit(cid, e.Value, sandboxes(ctr), r)
		}
	}
	for _, ef := range ctr.EnvFrom {
		if ef.SecretRef != nil && !slices.Contains(SecretNames, ef.SecretRef.Name) {
			c.add(cid, "secret.unknown", "references Secret %s, not one of %v", ef.SecretRef.Name, SecretNames)
		}
	}
}

// SandboxResidentBytes is what one plugin sandbox process holds of its own
// (a Go plugin's, measured by the plugins package's hostile suite: ~36 MiB;
// the binary's pages are shared). Sandboxes are child processes in the same
// container, so they count against its memory limit.
const SandboxResidentBytes = 40 << 20

// sandboxes is the container's PROMANAGE_PLUGIN_MAX_SANDBOXES (0 when unset:
// a container that runs no plugins, such as the migration Job, must not set
// it; api and worker set it next to GOMEMLIMIT).
func sandboxes(ctr corev1.Container) int64 {
	for _, e := range ctr.Env {
		if e.Name == "PROMANAGE_PLUGIN_MAX_SANDBOXES" {
			n, err := strconv.ParseInt(e.Value, 10, 64)
			if err != nil || n < 0 {
				return -1
			}
			return n
		}
	}
	return 0
}

// goMemLimit: the Go soft memory limit plus the plugin sandboxes' memory
// must leave headroom below the container limit, and the Go heap must get
// most of what the sandboxes leave.
func (c *checker) goMemLimit(cid, v string, sandboxes int64, r corev1.ResourceRequirements) {
	q, err := resource.ParseQuantity(strings.TrimSuffix(strings.TrimSuffix(v, "B"), "b"))
	if err != nil {
		c.add(cid, "resources.gomemlimit", "GOMEMLIMIT %q does not parse: %v", v, err)
		return
	}
	if sandboxes < 0 {
		c.add(cid, "resources.gomemlimit", "PROMANAGE_PLUGIN_MAX_SANDBOXES must be a non-negative integer")
		return
	}
	lim, ok := r.Limits[corev1.ResourceMemory]
	if !ok {
		return
	}
	sb := sandboxes * SandboxResidentBytes
	if q.Value()+sb >= lim.Value()*95/100 || q.Value() < (lim.Value()-sb)*60/100 {
		c.add(cid, "resources.gomemlimit", "GOMEMLIMIT %s plus %d plugin sandboxes (%d MiB each) should be 60-95%% of the memory limit %s",
			v, sandboxes, SandboxResidentBytes>>20, lim.String())
	}
}

func (c *checker) probes(cid string, ctr corev1.Container) {
	ports := map[string]bool{}
	for _, p := range ctr.Ports {
		ports[p.Name] = true
	}
	check := func(kind string, p *corev1.Probe) {
		if p == nil {
			c.add(cid, "probe."+kind, "no %s probe", kind)
			return
		}
		if p.HTTPGet != nil && p.HTTPGet.Port.Type == intstr.String && !ports[p.HTTPGet.Port.StrVal] {
			c.add(cid, "probe."+kind, "%s probe uses undeclared port %q", kind, p.HTTPGet.Port.StrVal)
		}
	}
	check("liveness", ctr.LivenessProbe)
	check("readiness", ctr.ReadinessProbe)
	check("startup", ctr.StartupProbe)
}

// promanageContainer: rules that come from the binary's contract.
func (c *checker) promanageContainer(cid string, ctr corev1.Container, ps *corev1.PodSpec) {
	if len(ctr.Command) > 0 {
		c.add(cid, "promanage.command", "do not override the image ENTRYPOINT; pass the subcommand in args")
	}
	if len(ctr.Args) == 0 || !slices.Contains([]string{"serve", "worker", "migrate"}, ctr.Args[0]) {
		c.add(cid, "promanage.args", "args must start with serve, worker or migrate, got %v", ctr.Args)
	}
	if len(ctr.Ports) > 0 {
		path := func(p *corev1.Probe) string {
			if p == nil || p.HTTPGet == nil {
				return ""
			}
			return p.HTTPGet.Path
		}
		if got := path(ctr.LivenessProbe); got != "/healthz" {
			c.add(cid, "probe.liveness.path", "liveness must GET /healthz (process alive), got %q", got)
		}
		if got := path(ctr.ReadinessProbe); got != "/readyz" {
			c.add(cid, "probe.readiness.path", "readiness must GET /readyz (this process can serve: its database pool), got %q", got)
		}
		// /readyz bounds its own checks at 3 s and answers 503 itself: a probe
		// that gives up first turns a slow database into a flapping pod.
		if p := ctr.ReadinessProbe; p != nil && p.TimeoutSeconds < readyzTimeoutSeconds+1 {
			c.add(cid, "probe.readiness.timeout", "readiness timeoutSeconds %d must exceed /readyz's own %d s bound", p.TimeoutSeconds, readyzTimeoutSeconds)
		}
		if p := ctr.ReadinessProbe; p != nil && p.PeriodSeconds*max(p.FailureThreshold, 1) < 10 {
			c.add(cid, "probe.readiness.flap", "readiness takes a pod out after %d s of failures; at least 10 s rides out a database blip", p.PeriodSeconds*max(p.FailureThreshold, 1))
		}
		if got := path(ctr.StartupProbe); got != "/healthz" {
			c.add(cid, "probe.startup.path", "startup must GET /healthz, got %q", got)
		}
		if !slices.ContainsFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == 8080 && p.Name == "http" }) {
			c.add(cid, "promanage.port", "must expose 8080 as \"http\" (PROMANAGE_HTTP_ADDR=:8080)")
		}
	}
	// The root filesystem is read-only: PROMANAGE_DATA_DIR and /tmp must be volumes.
	mounts := map[string]string{}
	for _, vm := range ctr.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	for _, dir := range []string{"/var/lib/promanage", "/tmp"} {
		name, ok := mounts[dir]
		if !ok {
			c.add(cid, "promanage.writable", "%s must be a mounted volume (root filesystem is read-only)", dir)
			continue
		}
		for _, v := range ps.Volumes {
			if v.Name == name && v.EmptyDir == nil {
				c.add(cid, "promanage.writable", "%s should be an emptyDir", dir)
			}
		}
	}
	// api and worker connect as the app role; the migration Job alone holds
	// the migration role's credentials (DDL), and no app keys.
	wantSecret := "promanage-secrets"
	if len(ctr.Args) > 0 && ctr.Args[0] == "migrate" {
		wantSecret = "promanage-migrate-secrets"
	}
	var fromConfig, fromSecret bool
	for _, ef := range ctr.EnvFrom {
		fromConfig = fromConfig || (ef.ConfigMapRef != nil && strings.HasPrefix(ef.ConfigMapRef.Name, "promanage-config"))
		if ef.SecretRef != nil {
			fromSecret = fromSecret || ef.SecretRef.Name == wantSecret
			if ef.SecretRef.Name != wantSecret && strings.HasPrefix(ef.SecretRef.Name, "promanage-") {
				c.add(cid, "promanage.least-privilege", "loads Secret %s; %s needs %s only", ef.SecretRef.Name, ctr.Args, wantSecret)
			}
		}
	}
	if !fromConfig || !fromSecret {
		c.add(cid, "promanage.settings", "must take settings from ConfigMap promanage-config and Secret %s", wantSecret)
	}
}

// readyzTimeoutSeconds is how long /readyz lets its checks run before it
// answers (api.Server.readyz).
const readyzTimeoutSeconds = 3

func (c *checker) hpaFor(kind, name string) *autoscalingv2.HorizontalPodAutoscaler {
	for _, h := range Each[*autoscalingv2.HorizontalPodAutoscaler](c.m) {
		if h.Spec.ScaleTargetRef.Kind == kind && h.Spec.ScaleTargetRef.Name == name {
			return h
		}
	}
	return nil
}

// minReplicas is the replica floor of a Deployment: the HPA's minimum, or spec.replicas.
func (c *checker) minReplicas(d *appsv1.Deployment) int32 {
	if h := c.hpaFor("Deployment", d.Name); h != nil {
		if h.Spec.MinReplicas == nil {
			return 1
		}
		return *h.Spec.MinReplicas
	}
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func (c *checker) deployment(d *appsv1.Deployment) {
	id := "Deployment/" + d.Name
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		c.add(id, "deployment.selector", "selector does not match the pod template labels")
	}
	h := c.hpaFor("Deployment", d.Name)
	if h != nil && d.Spec.Replicas != nil {
		c.add(id, "hpa.replicas", "spec.replicas is set although HPA %s owns the scale (every apply would reset it)", h.Name)
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		// Singletons (e.g. the Kratos courier) are allowed only with exactly one replica.
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || h != nil {
			c.add(id, "deployment.recreate", "Recreate is only for single-replica singletons")
		}
		return
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxUnavailable != nil && ru.MaxUnavailable.String() != "0" {
		c.add(id, "deployment.rollout", "maxUnavailable must be 0: a rollout must never lower capacity")
	}
	minR := c.minReplicas(d)
	if c.p.ZoneHA && minR < 2 {
		c.add(id, "ha.replicas", "at least 2 replicas needed for zone redundancy, floor is %d", minR)
	}
	// Topology spread across zones and nodes.
	var zone, host *corev1.TopologySpreadConstraint
	seen := map[string]int{}
	for i := range d.Spec.Template.Spec.TopologySpreadConstraints {
		t := &d.Spec.Template.Spec.TopologySpreadConstraints[i]
		seen[t.TopologyKey]++
		s, err := metav1.LabelSelectorAsSelector(t.LabelSelector)
		if err != nil || t.LabelSelector == nil || !s.Matches(labels.Set(d.Spec.Template.Labels)) {
			c.add(id, "spread.selector", "%s constraint does not select the Deployment's own pods", t.TopologyKey)
		}
		switch t.TopologyKey {
		case "topology.kubernetes.io/zone":
			zone = t
		case "kubernetes.io/hostname":
			host = t
		}
	}
	for k, n := range seen {
		if n > 1 {
			c.add(id, "spread.duplicate", "%d constraints on %s (a strategic merge patch added one instead of changing it?)", n, k)
		}
	}
	if zone == nil {
		c.add(id, "spread.zone", "no topologySpreadConstraint on topology.kubernetes.io/zone")
	} else if c.p.ZoneHA && minR > 1 {
		c.zoneLoss(id, d, zone)
	}
	if host == nil {
		c.add(id, "spread.host", "no topologySpreadConstraint on kubernetes.io/hostname")
	}
}

// zoneLoss: production spreads pods evenly over the zones (DoNotSchedule, so
// the autoscaler adds capacity where the spread needs it) in a way that still
// places every replica when a zone is lost: nodes of the lost zone are tainted
// unreachable and must leave the count (nodeTaintsPolicy Honor), and
// minDomains above the surviving zones would cap the Deployment at
// maxSkew x surviving zones.
func (c *checker) zoneLoss(id string, d *appsv1.Deployment, zone *corev1.TopologySpreadConstraint) {
	if zone.WhenUnsatisfiable != corev1.DoNotSchedule {
		c.add(id, "spread.zone.hard", "zone spread must be DoNotSchedule in production (ScheduleAnyway lets replicas pile into one zone)")
		return
	}
	if zone.NodeTaintsPolicy == nil || *zone.NodeTaintsPolicy != corev1.NodeInclusionPolicyHonor {
		c.add(id, "spread.zone.taints", "zone spread needs nodeTaintsPolicy: Honor, or the unreachable nodes of a lost zone still count as a domain with no pods and cap every other zone at maxSkew")
	}
	zones := c.p.Zones
	if zones == 0 {
		zones = 3
	}
	maxR := c.minReplicas(d)
	if h := c.hpaFor("Deployment", d.Name); h != nil {
		maxR = h.Spec.MaxReplicas
	}
	if zone.MinDomains != nil && int(*zone.MinDomains) > zones-1 {
		if capacity := zone.MaxSkew * int32(zones-1); capacity < maxR {
			c.add(id, "spread.zone.capacity", "minDomains %d with %d zones: after losing one, at most %d pods (maxSkew %d x %d zones) of up to %d can be scheduled",
				*zone.MinDomains, zones, capacity, zone.MaxSkew, zones-1, maxR)
		}
	}
}

// gracePeriod: Kubernetes kills the pod terminationGracePeriodSeconds after it
// starts the preStop hook, so the grace period must cover the preStop sleep plus
// the binary's own drain timeout (PROMANAGE_SHUTDOWN_TIMEOUT), with a margin.
func (c *checker) gracePeriod(id string, t *corev1.PodTemplateSpec) {
	grace := int64(30)
	if t.Spec.TerminationGracePeriodSeconds != nil {
		grace = *t.Spec.TerminationGracePeriodSeconds
	}
	for _, ctr := range t.Spec.Containers {
		if !isPromanage(ctr.Image) {
			continue
		}
		var need int64 = 20 // the binary's default shutdown timeout
		if v, ok := c.configValue(ctr, "PROMANAGE_SHUTDOWN_TIMEOUT"); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				c.add(id, "shutdown.timeout", "PROMANAGE_SHUTDOWN_TIMEOUT %q: %v", v, err)
				continue
			}
			need = int64(d.Seconds())
		}
		if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil && ctr.Lifecycle.PreStop.Sleep != nil {
			need += ctr.Lifecycle.PreStop.Sleep.Seconds
		}
		if grace < need+5 {
			c.add(id, "shutdown.grace", "terminationGracePeriodSeconds %d < preStop + shutdown timeout + 5s = %d: in-flight work is killed", grace, need+5)
		}
	}
}

// configValue resolves a setting of a container from its env or the ConfigMaps
// it loads with envFrom.
func (c *checker) configValue(ctr corev1.Container, key string) (string, bool) {
	for _, e := range ctr.Env {
		if e.Name == key && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	for _, ef := range ctr.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		if o := c.m.Find("ConfigMap", ef.ConfigMapRef.Name); o != nil {
			if v, ok := o.Typed.(*corev1.ConfigMap).Data[key]; ok {
				return v, true
			}
		}
	}
	return "", false
}

func (c *checker) job(j *batchv1.Job) {
	id := "Job/" + j.Name
	if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever && j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		c.add(id, "job.restartPolicy", "must be Never or OnFailure")
	}
	if j.Spec.BackoffLimit == nil || j.Spec.ActiveDeadlineSeconds == nil {
		c.add(id, "job.bounded", "backoffLimit and activeDeadlineSeconds must bound a Job")
	}
	if j.Spec.TTLSecondsAfterFinished == nil {
		c.add(id, "job.ttl", "ttlSecondsAfterFinished must clean finished Jobs up")
	}
}

func (c *checker) autoscaling() {
	for _, h := range Each[*autoscalingv2.HorizontalPodAutoscaler](c.m) {
		id := "HorizontalPodAutoscaler/" + h.Name
		ref := h.Spec.ScaleTargetRef
		if c.m.Find(ref.Kind, ref.Name) == nil {
			c.add(id, "hpa.target", "scale target %s/%s is not in the manifests", ref.Kind, ref.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			c.add(id, "hpa.bounds", "minReplicas must be set and <= maxReplicas")
		}
		var resources, custom []string
		for _, m := range h.Spec.Metrics {
			switch m.Type {
			case autoscalingv2.ResourceMetricSourceType:
				resources = append(resources, string(m.Resource.Name))
			case autoscalingv2.PodsMetricSourceType:
				custom = append(custom, m.Pods.Metric.Name)
			case autoscalingv2.ExternalMetricSourceType:
				custom = append(custom, m.External.Metric.Name)
			case autoscalingv2.ObjectMetricSourceType:
				custom = append(custom, m.Object.Metric.Name)
			}
		}
		if h.Spec.Behavior == nil || h.Spec.Behavior.ScaleDown == nil || h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds == nil {
			c.add(id, "hpa.behavior", "scaleDown stabilization must be explicit (avoid flapping)")
		}
		if slices.Contains(resources, "memory") && strings.HasPrefix(ref.Name, "promanage-") {
			c.add(id, "hpa.memory", "scales on memory: the Go heap grows towards GOMEMLIMIT whatever the load, so it scales out on garbage and never back in")
		}
		switch ref.Name {
		case "promanage-api":
			if !slices.Contains(resources, "cpu") {
				c.add(id, "hpa.api.resources", "api must scale on cpu, has %v", resources)
			}
			if !slices.Contains(custom, "promanage_http_in_flight_requests") && !slices.Contains(custom, "promanage_http_requests_total") {
				c.add(id, "hpa.api.custom", "api must scale on a workload metric (in-flight requests or request rate), has %v", custom)
			}
		case "promanage-worker":
			if !slices.Contains(custom, "promanage_outbox_lag_seconds") {
				c.add(id, "hpa.worker.outbox", "worker must scale on promanage_outbox_lag_seconds, has %v", custom)
			}
		}
	}
	for _, name := range []string{"promanage-api", "promanage-worker"} {
		if c.m.Find("Deployment", name) != nil && c.hpaFor("Deployment", name) == nil {
			c.add("Deployment/"+name, "hpa.missing", "no HorizontalPodAutoscaler")
		}
	}
}

func (c *checker) disruptionBudgets() {
	pdbs := Each[*policyv1.PodDisruptionBudget](c.m)
	for _, d := range Each[*appsv1.Deployment](c.m) {
		id := "Deployment/" + d.Name
		minR := c.minReplicas(d)
		var match *policyv1.PodDisruptionBudget
		for _, p := range pdbs {
			s, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			if err == nil && p.Spec.Selector != nil && !s.Empty() && s.Matches(labels.Set(d.Spec.Template.Labels)) {
				if match != nil {
					c.add(id, "pdb.overlap", "selected by PDBs %s and %s (eviction API refuses pods with two)", match.Name, p.Name)
				}
				match = p
			}
		}
		if minR < 2 && d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
			continue // singleton: a PDB would block node drains forever
		}
		if match == nil {
			c.add(id, "pdb.missing", "no PodDisruptionBudget selects its pods")
			continue
		}
		pid := "PodDisruptionBudget/" + match.Name
		switch {
		case match.Spec.MaxUnavailable != nil:
			if match.Spec.MaxUnavailable.String() == "0" || match.Spec.MaxUnavailable.String() == "0%" {
				c.add(pid, "pdb.blocks-drain", "maxUnavailable 0 blocks every node drain")
			}
		case match.Spec.MinAvailable != nil:
			v, err := intstr.GetScaledValueFromIntOrPercent(match.Spec.MinAvailable, int(minR), true)
			if err != nil || v >= int(minR) {
				c.add(pid, "pdb.blocks-drain", "minAvailable %s leaves no disruption at %d replicas", match.Spec.MinAvailable.String(), minR)
			}
		default:
			c.add(pid, "pdb.empty", "neither minAvailable nor maxUnavailable")
		}
	}
}

// podsSelectedBy returns the pod templates (by Deployment/Job id) a selector matches.
func (c *checker) podTemplates() map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for _, d := range Each[*appsv1.Deployment](c.m) {
		out["Deployment/"+d.Name] = &d.Spec.Template
	}
	for _, j := range Each[*batchv1.Job](c.m) {
		out["Job/"+j.Name] = &j.Spec.Template
	}
	return out
}

func (c *checker) services() {
	tpls := c.podTemplates()
	svcs := map[string]*corev1.Service{}
	for _, s := range Each[*corev1.Service](c.m) {
		svcs[s.Name] = s
		id := "Service/" + s.Name
		if len(s.Spec.Selector) == 0 {
			c.add(id, "service.selector", "no selector")
			continue
		}
		var pods []*corev1.PodTemplateSpec
		for _, t := range tpls {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(t.Labels)) {
				pods = append(pods, t)
			}
		}
		if len(pods) == 0 {
			c.add(id, "service.selector", "selects no pod template")
		}
		for _, sp := range s.Spec.Ports {
			if sp.TargetPort.Type != intstr.String {
				continue
			}
			for _, t := range pods {
				found := false
				for _, ctr := range t.Spec.Containers {
					found = found || slices.ContainsFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.Name == sp.TargetPort.StrVal })
				}
				if !found {
					c.add(id, "service.targetPort", "targetPort %q is not a named port of the selected pods", sp.TargetPort.StrVal)
				}
			}
		}
	}
	for _, ing := range Each[*networkingv1.Ingress](c.m) {
		id := "Ingress/" + ing.Name
		if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName == "" {
			c.add(id, "ingress.class", "ingressClassName must be explicit")
		}
		if len(ing.Spec.TLS) == 0 && c.p.ZoneHA {
			c.add(id, "ingress.tls", "production ingress must terminate TLS")
		}
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				if b == nil {
					continue
				}
				s, ok := svcs[b.Name]
				if !ok {
					c.add(id, "ingress.backend", "backend Service %s does not exist", b.Name)
					continue
				}
				if b.Port.Name != "" && !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name }) {
					c.add(id, "ingress.backend", "Service %s has no port %q", b.Name, b.Port.Name)
				}
			}
		}
	}
}

// monitoring: ServiceMonitors select real Services and ports. The metric names
// alerts, dashboards and autoscalers use are checked against the binary in
// metrics_test.go.
func (c *checker) monitoring() {
	for _, sm := range Each[*ServiceMonitor](c.m) {
		id := "ServiceMonitor/" + sm.Name
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			c.add(id, "monitor.selector", "%v", err)
			continue
		}
		var matched []*corev1.Service
		for _, s := range Each[*corev1.Service](c.m) {
			if sel.Matches(labels.Set(s.Labels)) {
				matched = append(matched, s)
			}
		}
		if len(matched) == 0 {
			c.add(id, "monitor.selector", "selects no Service")
		}
		for _, ep := range sm.Spec.Endpoints {
			for _, s := range matched {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					c.add(id, "monitor.port", "Service %s has no port %q", s.Name, ep.Port)
				}
			}
		}
	}
	if len(Each[*ServiceMonitor](c.m)) == 0 {
		c.add("ServiceMonitor", "monitor.missing", "no ServiceMonitor scrapes /metrics")
	}
}
