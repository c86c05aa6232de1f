package validate

import (
	"fmt"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// privateRanges must be excluded from every egress rule to "the internet": they
// hold the cluster, the VPC and (169.254/16) the instance metadata service.
var privateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}

// podPolicy is the union of the NetworkPolicy rules that select one pod.
type podPolicy struct {
	isolatedIngress, isolatedEgress bool
	ingress                         []networkingv1.NetworkPolicyIngressRule
	egress                          []networkingv1.NetworkPolicyEgressRule
}

func (c *checker) policyFor(podLabels map[string]string) podPolicy {
	var pp podPolicy
	for _, np := range Each[*networkingv1.NetworkPolicy](c.m) {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(podLabels)) {
			continue
		}
		for _, t := range np.Spec.PolicyTypes {
			switch t {
			case networkingv1.PolicyTypeIngress:
				pp.isolatedIngress = true
				pp.ingress = append(pp.ingress, np.Spec.Ingress...)
			case networkingv1.PolicyTypeEgress:
				pp.isolatedEgress = true
				pp.egress = append(pp.egress, np.Spec.Egress...)
			}
		}
	}
	return pp
}

func portNumbers(ports []networkingv1.NetworkPolicyPort) []int32 {
	var out []int32
	for _, p := range ports {
		if p.Port != nil {
			out = append(out, p.Port.IntVal)
		}
	}
	return out
}

// egressPorts returns every port some egress rule opens.
func (pp podPolicy) egressPorts() []int32 {
	var out []int32
	for _, r := range pp.egress {
		out = append(out, portNumbers(r.Ports)...)
	}
	return out
}

func (pp podPolicy) ingressPorts() []int32 {
	var out []int32
	for _, r := range pp.ingress {
		out = append(out, portNumbers(r.Ports)...)
	}
	return out
}

func isMonitoringPeer(p networkingv1.NetworkPolicyPeer) bool {
	return p.IPBlock == nil && p.NamespaceSelector != nil &&
		p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "monitoring"
}

// isExternalPeer: traffic from outside the namespace other than Prometheus (an
// ingress controller, a load balancer's subnets, anything by address).
func isExternalPeer(p networkingv1.NetworkPolicyPeer) bool {
	return p.IPBlock != nil || (p.NamespaceSelector != nil && !isMonitoringPeer(p))
}

func (c *checker) networkPolicies() {
	nps := Each[*networkingv1.NetworkPolicy](c.m)
	defaultDeny := slices.ContainsFunc(nps, func(np *networkingv1.NetworkPolicy) bool {
		return len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) &&
			len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0
	})
	if !defaultDeny {
		c.add("NetworkPolicy", "netpol.default-deny", "no default-deny policy (empty podSelector, Ingress+Egress, no rules)")
	}
	for _, np := range nps {
		id := "NetworkPolicy/" + np.Name
		for i, r := range np.Spec.Ingress {
			if len(r.From) == 0 {
				c.add(id, "netpol.ingress.any-source", "ingress rule %d allows every source", i)
			}
			if len(r.Ports) == 0 {
				c.add(id, "netpol.ingress.any-port", "ingress rule %d allows every port", i)
			}
		}
		for i, r := range np.Spec.Egress {
			if len(r.Ports) == 0 {
				c.add(id, "netpol.egress.any-port", "egress rule %d allows every port", i)
			}
			for _, p := range r.To {
				if p.IPBlock != nil && strings.HasSuffix(p.IPBlock.CIDR, "/0") {
					for _, pr := range privateRanges {
						if !slices.Contains(p.IPBlock.Except, pr) {
							c.add(id, "netpol.egress.private", "egress rule %d to %s does not exclude %s", i, p.IPBlock.CIDR, pr)
						}
					}
					for _, port := range portNumbers(r.Ports) {
						if !slices.Contains([]int32{80, 443, 465, 587}, port) {
							c.add(id, "netpol.egress.internet-port", "egress rule %d opens port %d to the internet", i, port)
						}
					}
				}
			}
			if len(r.To) == 0 {
				c.add(id, "netpol.egress.any-destination", "egress rule %d allows every destination", i)
			}
		}
	}

	type want struct {
		egress  []int32 // ports that must be open
		ingress []int32 // the only ports that may be open
		// external: whether traffic from outside the namespace (ingress controller,
		// load balancer) may reach the pod, and on which port.
		externalPort int32
	}
	wants := map[string]want{
		"api":          {egress: []int32{53, 5432, 6379, 4433, 4434, 443}, ingress: []int32{8080, 9091}, externalPort: 8080},
		"worker":       {egress: []int32{53, 5432, 6379, 4434, 80, 443}, ingress: []int32{9091}},
		"migrate":      {egress: []int32{53, 5432}},
		"db-bootstrap": {egress: []int32{53, 5432}},
	}
	for id, t := range c.podTemplates() {
		pp := c.policyFor(t.Labels)
		if !pp.isolatedIngress || !pp.isolatedEgress {
			c.add(id, "netpol.isolated", "pods are not isolated for ingress and egress")
		}
		name, comp := t.Labels["app.kubernetes.io/name"], t.Labels["app.kubernetes.io/component"]
		w, ok := wants[comp]
		if name == "kratos" && comp == "server" {
			w, ok = want{egress: []int32{53, 5432}, ingress: []int32{4433, 4434}, externalPort: 4433}, true
		}
		if !ok {
			continue
		}
		for _, p := range w.egress {
			if !slices.Contains(pp.egressPorts(), p) {
				c.add(id, "netpol.egress.missing", "no egress allowed to port %d", p)
			}
		}
		for _, p := range pp.ingressPorts() {
			if !slices.Contains(w.ingress, p) {
				c.add(id, "netpol.ingress.port", "ingress open on port %d", p)
			}
		}
		externalOK := false
		for _, r := range pp.ingress {
			external := slices.ContainsFunc(r.From, isExternalPeer)
			if !external {
				continue
			}
			ports := portNumbers(r.Ports)
			if w.externalPort == 0 || slices.ContainsFunc(ports, func(p int32) bool { return p != w.externalPort }) {
				c.add(id, "netpol.ingress.external", "reachable from outside the namespace on %v%s", ports, externalNote(w.externalPort))
			} else {
				externalOK = true
			}
		}
		if w.externalPort != 0 && !externalOK {
			c.add(id, "netpol.ingress.unreachable", "no ingress from the ingress controller/load balancer on %d", w.externalPort)
		}
	}
}

func externalNote(p int32) string {
	if p == 0 {
		return " (it serves no external traffic)"
	}
	return fmt.Sprintf(" (only %d may be)", p)
}
