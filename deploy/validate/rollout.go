package validate

import (
	"net"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// metricsListener: the api and the worker serve /metrics on
// PROMANAGE_METRICS_ADDR, declared as the container port "metrics", apart
// from the public port.
func (c *checker) metricsListener(id string, t *corev1.PodTemplateSpec) {
	for _, ctr := range t.Spec.Containers {
		if !isPromanage(ctr.Image) || len(ctr.Args) == 0 || (ctr.Args[0] != "serve" && ctr.Args[0] != "worker") {
			continue
		}
		cid := id + "[" + ctr.Name + "]"
		addr, ok := c.configValue(ctr, "PROMANAGE_METRICS_ADDR")
		if !ok || addr == "" {
			c.add(cid, "metrics.listener", "PROMANAGE_METRICS_ADDR is not set: the process serves no /metrics")
			continue
		}
		_, port, err := net.SplitHostPort(addr)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			c.add(cid, "metrics.listener", "PROMANAGE_METRICS_ADDR %q is not host:port", addr)
			continue
		}
		var declared *corev1.ContainerPort
		for i := range ctr.Ports {
			if ctr.Ports[i].Name == "metrics" {
				declared = &ctr.Ports[i]
			}
		}
		switch {
		case declared == nil:
			c.add(cid, "metrics.listener", "no container port named \"metrics\" for PROMANAGE_METRICS_ADDR %s", addr)
		case int(declared.ContainerPort) != n:
			c.add(cid, "metrics.listener", "container port \"metrics\" is %d but PROMANAGE_METRICS_ADDR listens on %d", declared.ContainerPort, n)
		}
		if http, ok := c.configValue(ctr, "PROMANAGE_HTTP_ADDR"); ok && strings.HasSuffix(http, ":"+port) {
			c.add(cid, "metrics.listener", "metrics share the public port %s", port)
		}
	}
}

// servicePods returns the pod templates a Service selects.
func (c *checker) servicePods(s *corev1.Service) map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	if len(s.Spec.Selector) == 0 {
		return out
	}
	for id, t := range c.podTemplates() {
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(t.Labels)) {
			out[id] = t
		}
	}
	return out
}

// albTargetGroupAttribute reads one attribute of the annotation
// alb.ingress.kubernetes.io/target-group-attributes (Service overrides Ingress).
func albTargetGroupAttribute(name string, annotations ...map[string]string) (string, bool) {
	var v string
	found := false
	for _, a := range annotations {
		for _, kv := range strings.Split(a["alb.ingress.kubernetes.io/target-group-attributes"], ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if ok && k == name {
				v, found = val, true
			}
		}
	}
	return v, found
}

// loadBalancer: rollout timing and readiness behind the ALB, and what the
// Ingress may route.
//   - Nothing routes the metrics port.
//   - ALB with IP targets: the namespace carries the controller's
//     readiness-gate label (a new pod is ready only once its target is
//     healthy, so a rollout never empties the target group); the ALB health
//     check is /healthz (process alive; readiness is the gate's business);
//     every pod behind it sleeps in preStop at least the deregistration delay
//     plus 5 s (it keeps serving what the ALB still sends while draining), and
//     its grace period covers preStop plus its own drain.
func (c *checker) loadBalancer() {
	svcs := map[string]*corev1.Service{}
	for _, s := range Each[*corev1.Service](c.m) {
		svcs[s.Name] = s
	}
	for _, ing := range Each[*networkingv1.Ingress](c.m) {
		id := "Ingress/" + ing.Name
		alb := ing.Spec.IngressClassName != nil && *ing.Spec.IngressClassName == "alb" &&
			ing.Annotations["alb.ingress.kubernetes.io/target-type"] == "ip"
		if alb {
			for _, ns := range Each[*corev1.Namespace](c.m) {
				if ns.Labels["elbv2.k8s.aws/pod-readiness-gate-inject"] != "enabled" {
					c.add("Namespace/"+ns.Name, "alb.readiness-gate", "label elbv2.k8s.aws/pod-readiness-gate-inject=enabled is missing: pods count as ready before the ALB routes to them, so a rollout can leave it without healthy targets (502)")
				}
			}
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
					continue
				}
				for _, sp := range s.Spec.Ports {
					if (b.Port.Name != "" && sp.Name != b.Port.Name) || (b.Port.Number != 0 && sp.Port != b.Port.Number) {
						continue
					}
					if sp.Name == "metrics" || (sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal == "metrics") {
						c.add(id, "ingress.metrics", "routes Service %s port %s, the metrics port", s.Name, sp.Name)
					}
				}
				if alb {
					c.albBackend(id, ing, s)
				}
			}
		}
	}
}

func (c *checker) albBackend(id string, ing *networkingv1.Ingress, s *corev1.Service) {
	hc := s.Annotations["alb.ingress.kubernetes.io/healthcheck-path"]
	if hc == "" {
		hc = ing.Annotations["alb.ingress.kubernetes.io/healthcheck-path"]
	}
	if hc == "/readyz" {
		c.add(id, "alb.healthcheck", "Service %s: ALB health check on /readyz; use /healthz (readiness is the pods' own, through the readiness gate)", s.Name)
	}
	delay := int64(300) // the ALB's default deregistration delay
	if v, ok := albTargetGroupAttribute("deregistration_delay.timeout_seconds", ing.Annotations, s.Annotations); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			c.add(id, "alb.deregistration", "deregistration_delay.timeout_seconds %q is not a number", v)
			return
		}
		delay = n
	}
	for pid, t := range c.servicePods(s) {
		for _, ctr := range t.Spec.Containers {
			if len(ctr.Ports) == 0 {
				continue
			}
			var sleep int64
			if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil && ctr.Lifecycle.PreStop.Sleep != nil {
				sleep = ctr.Lifecycle.PreStop.Sleep.Seconds
			}
			if sleep < delay+5 {
				c.add(pid+"["+ctr.Name+"]", "rollout.prestop", "preStop sleep %d s < ALB deregistration delay %d s + 5 s: the ALB still sends requests to a pod that stopped serving (502 on every rollout)", sleep, delay)
			}
			if isPromanage(ctr.Image) {
				continue // gracePeriod checks preStop + PROMANAGE_SHUTDOWN_TIMEOUT
			}
			grace := int64(30)
			if t.Spec.TerminationGracePeriodSeconds != nil {
				grace = *t.Spec.TerminationGracePeriodSeconds
			}
			if grace < sleep+10 {
				c.add(pid, "shutdown.grace", "terminationGracePeriodSeconds %d leaves under 10 s to drain after the %d s preStop sleep", grace, sleep)
			}
		}
	}
}

// argoWave is an object's Argo CD phase and wave.
func argoWave(annotations map[string]string) (phase string, wave int, err error) {
	phase = "Sync"
	if h := annotations["argocd.argoproj.io/hook"]; h != "" {
		phase = h
	}
	if w := annotations["argocd.argoproj.io/sync-wave"]; w != "" {
		wave, err = strconv.Atoi(w)
	}
	return phase, wave, err
}

var phaseOrder = map[string]int{"PreSync": 0, "Sync": 1, "PostSync": 2}

// argoWaves: under Argo CD the migration Job runs after everything it needs
// exists (the namespace, its service account, the ConfigMaps and Secrets it
// loads, the ExternalSecrets that make them, the NetworkPolicies that let it
// reach Postgres) and before the api and worker Deployments roll out.
func (c *checker) argoWaves() {
	at := func(o Object) (string, int, bool) {
		obj, ok := o.Typed.(metav1.Object)
		if !ok {
			return "", 0, false
		}
		phase, wave, err := argoWave(obj.GetAnnotations())
		if err != nil {
			c.add(o.ID(), "argocd.wave", "sync-wave: %v", err)
			return "", 0, false
		}
		return phase, wave, true
	}
	before := func(p1 string, w1 int, p2 string, w2 int) bool {
		if phaseOrder[p1] != phaseOrder[p2] {
			return phaseOrder[p1] < phaseOrder[p2]
		}
		return w1 < w2
	}
	for _, j := range Each[*batchv1.Job](c.m) {
		if !slices.ContainsFunc(j.Spec.Template.Spec.Containers, func(ct corev1.Container) bool { return isPromanage(ct.Image) }) {
			continue
		}
		jid := "Job/" + j.Name
		jphase, jwave, err := argoWave(j.Annotations)
		if err != nil {
			c.add(jid, "argocd.wave", "sync-wave: %v", err)
			continue
		}
		if _, ok := phaseOrder[jphase]; !ok || jphase == "PostSync" {
			c.add(jid, "argocd.hook", "hook %q: the migration must run as a Sync (or PreSync) hook", jphase)
			continue
		}
		for _, o := range c.m {
			if !c.jobNeeds(j, o) {
				continue
			}
			phase, wave, ok := at(o)
			if ok && !before(phase, wave, jphase, jwave) {
				c.add(jid, "argocd.order", "runs in %s wave %d, not after %s (%s wave %d) it needs: a first sync or a config change would fail", jphase, jwave, o.ID(), phase, wave)
			}
		}
		for _, d := range Each[*appsv1.Deployment](c.m) {
			comp := d.Spec.Template.Labels["app.kubernetes.io/component"]
			if d.Spec.Template.Labels["app.kubernetes.io/name"] != "promanage" || (comp != "api" && comp != "worker") {
				continue
			}
			phase, wave, err := argoWave(d.Annotations)
			if err == nil && !before(jphase, jwave, phase, wave) {
				c.add("Deployment/"+d.Name, "argocd.order", "rolls out in %s wave %d, not after the migration Job (%s wave %d)", phase, wave, jphase, jwave)
			}
		}
	}
}

// jobNeeds reports whether the Job cannot run without object o.
func (c *checker) jobNeeds(j *batchv1.Job, o Object) bool {
	spec := j.Spec.Template.Spec
	switch t := o.Typed.(type) {
	case *corev1.Namespace:
		return true
	case *corev1.ServiceAccount:
		return t.Name == spec.ServiceAccountName
	case *corev1.ConfigMap:
		return podUses(spec, "ConfigMap", t.Name)
	case *corev1.Secret:
		return podUses(spec, "Secret", t.Name)
	case *ExternalSecret:
		target := t.Spec.Target.Name
		if target == "" {
			target = t.Name
		}
		return podUses(spec, "Secret", target)
	case *batchv1.Job:
		// The roles the migration connects as come from the bootstrap Job.
		return t.Name != j.Name && t.Spec.Template.Labels["app.kubernetes.io/component"] == "db-bootstrap"
	case *networkingv1.NetworkPolicy:
		sel, err := metav1.LabelSelectorAsSelector(&t.Spec.PodSelector)
		return err == nil && sel.Matches(labels.Set(j.Spec.Template.Labels))
	}
	return false
}

// podUses reports whether a pod loads the ConfigMap or Secret name (envFrom,
// env valueFrom, volumes), unless it is marked optional.
func podUses(spec corev1.PodSpec, kind, name string) bool {
	for _, ctr := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		for _, ef := range ctr.EnvFrom {
			if kind == "ConfigMap" && ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == name {
				return true
			}
			if kind == "Secret" && ef.SecretRef != nil && ef.SecretRef.Name == name {
				return true
			}
		}
		for _, e := range ctr.Env {
			if e.ValueFrom == nil {
				continue
			}
			if kind == "ConfigMap" && e.ValueFrom.ConfigMapKeyRef != nil && e.ValueFrom.ConfigMapKeyRef.Name == name {
				return true
			}
			if kind == "Secret" && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == name {
				return true
			}
		}
	}
	for _, v := range spec.Volumes {
		if kind == "ConfigMap" && v.ConfigMap != nil && v.ConfigMap.Name == name && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional) {
			return true
		}
		if kind == "Secret" && v.Secret != nil && v.Secret.SecretName == name && (v.Secret.Optional == nil || !*v.Secret.Optional) {
			return true
		}
	}
	return false
}
