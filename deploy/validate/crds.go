package validate

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The structs below cover the fields of the Prometheus Operator and Kong CRDs that
// ProManage uses (a subset of their OpenAPI schemas). Strict decoding into them
// turns a misspelt or misplaced field into a test failure; a field we start using
// must be added here on purpose.

// ServiceMonitor is monitoring.coreos.com/v1 ServiceMonitor.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

type ServiceMonitorSpec struct {
	Selector          metav1.LabelSelector `json:"selector"`
	NamespaceSelector *struct {
		Any        bool     `json:"any,omitempty"`
		MatchNames []string `json:"matchNames,omitempty"`
	} `json:"namespaceSelector,omitempty"`
	JobLabel  string     `json:"jobLabel,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
}

type Endpoint struct {
	Port          string `json:"port,omitempty"`
	Path          string `json:"path,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool   `json:"honorLabels,omitempty"`
}

// PrometheusRule is monitoring.coreos.com/v1 PrometheusRule.
type PrometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []RuleGroup `json:"groups"`
	} `json:"spec"`
}

type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// KongPlugin is configuration.konghq.com/v1 KongPlugin. Config is the plugin's own
// schema, checked per plugin by the policy tests.
type KongPlugin struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Plugin            string           `json:"plugin"`
	Config            map[string]any   `json:"config,omitempty"`
	Disabled          bool             `json:"disabled,omitempty"`
	Protocols         []string         `json:"protocols,omitempty"`
	InstanceName      string           `json:"instance_name,omitempty"`
	ConfigFrom        *json.RawMessage `json:"configFrom,omitempty"`
}

// ExternalSecret is external-secrets.io/v1 ExternalSecret: External Secrets
// Operator makes the Secret spec.target.name from a SecretStore.
type ExternalSecret struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ExternalSecretSpec `json:"spec"`
}

type ExternalSecretSpec struct {
	RefreshInterval string `json:"refreshInterval,omitempty"`
	SecretStoreRef  struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"secretStoreRef"`
	Target struct {
		Name           string `json:"name,omitempty"`
		CreationPolicy string `json:"creationPolicy,omitempty"`
		DeletionPolicy string `json:"deletionPolicy,omitempty"`
		Template       *struct {
			EngineVersion string            `json:"engineVersion,omitempty"`
			Type          string            `json:"type,omitempty"`
			MergePolicy   string            `json:"mergePolicy,omitempty"`
			Data          map[string]string `json:"data,omitempty"`
		} `json:"template,omitempty"`
	} `json:"target"`
	Data []struct {
		SecretKey string    `json:"secretKey"`
		RemoteRef RemoteRef `json:"remoteRef"`
	} `json:"data,omitempty"`
	DataFrom []struct {
		Extract *RemoteRef `json:"extract,omitempty"`
	} `json:"dataFrom,omitempty"`
}

type RemoteRef struct {
	Key      string `json:"key"`
	Property string `json:"property,omitempty"`
	Version  string `json:"version,omitempty"`
}

// SecretStore is external-secrets.io/v1 SecretStore (AWS Secrets Manager with
// IRSA is the only provider the overlays use).
type SecretStore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Provider struct {
			AWS *struct {
				Service string `json:"service"`
				Region  string `json:"region"`
				Auth    *struct {
					JWT *struct {
						ServiceAccountRef struct {
							Name string `json:"name"`
						} `json:"serviceAccountRef"`
					} `json:"jwt,omitempty"`
				} `json:"auth,omitempty"`
			} `json:"aws,omitempty"`
		} `json:"provider"`
	} `json:"spec"`
}
