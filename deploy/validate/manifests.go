package validate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Object is one built manifest, decoded into its typed Go struct.
type Object struct {
	GVK       schema.GroupVersionKind
	Name      string
	Namespace string
	// Typed is a pointer to the typed struct: *appsv1.Deployment, *ServiceMonitor, ...
	Typed any
	// JSON is the object as kustomize emitted it.
	JSON []byte
}

// ID names the object in messages: "Deployment/promanage-api".
func (o Object) ID() string { return o.GVK.Kind + "/" + o.Name }

// Manifests is the output of one overlay, in kustomize's order.
type Manifests []Object

// Each returns the typed objects of type T, e.g. Each[*appsv1.Deployment](m).
func Each[T any](m Manifests) []T {
	var out []T
	for _, o := range m {
		if t, ok := o.Typed.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// Find returns the object of the given kind and name, or nil.
func (m Manifests) Find(kind, name string) *Object {
	for i := range m {
		if m[i].GVK.Kind == kind && m[i].Name == name {
			return &m[i]
		}
	}
	return nil
}

// BuildOverlay runs kustomize (the krusty Go API, as `kustomize build` does) on
// dir and returns every resource as JSON.
func BuildOverlay(dir string) ([][]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out [][]byte
	for _, r := range rm.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: marshal %s: %w", dir, r.CurId(), err)
		}
		out = append(out, b)
	}
	return out, nil
}

// LoadOverlay builds dir and decodes every object strictly.
func LoadOverlay(dir string) (Manifests, error) {
	docs, err := BuildOverlay(dir)
	if err != nil {
		return nil, err
	}
	return DecodeAll(docs)
}

// DecodeAll decodes each JSON document strictly; it reports every failure, not
// only the first.
func DecodeAll(docs [][]byte) (Manifests, error) {
	var (
		out  Manifests
		errs []error
	)
	for _, d := range docs {
		o, err := DecodeStrict(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, o)
	}
	if len(errs) > 0 {
		return out, joinErrors(errs)
	}
	return out, nil
}

var (
	scheme     = runtime.NewScheme()
	strictJSON *kjson.Serializer
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		autoscalingv2.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	strictJSON = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Strict: true})
}

// crdTypes are the custom resources the overlays use, for which k8s.io/api has no
// type: a local struct, decoded with unknown and duplicate fields as errors.
var crdTypes = map[schema.GroupVersionKind]func() any{
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}: func() any { return new(ServiceMonitor) },
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}: func() any { return new(PrometheusRule) },
	{Group: "configuration.konghq.com", Version: "v1", Kind: "KongPlugin"}:  func() any { return new(KongPlugin) },
	{Group: "external-secrets.io", Version: "v1", Kind: "ExternalSecret"}:   func() any { return new(ExternalSecret) },
	{Group: "external-secrets.io", Version: "v1", Kind: "SecretStore"}:      func() any { return new(SecretStore) },
}

// DecodeStrict decodes one object into its typed struct. Unknown fields,
// duplicate fields and kinds without a known type are errors: a typo such as
// "livenessprobe" or "readOnlyRootFileSystem" would otherwise be dropped by the
// API server without a word.
func DecodeStrict(doc []byte) (Object, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(doc, &meta); err != nil {
		return Object{}, fmt.Errorf("decode: %w", err)
	}
	gvk := schema.FromAPIVersionAndKind(meta.APIVersion, meta.Kind)
	o := Object{GVK: gvk, Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, JSON: doc}

	if newT, ok := crdTypes[gvk]; ok {
		t := newT()
		strictErrs, err := sigsjson.UnmarshalStrict(doc, t)
		if err != nil {
			return o, fmt.Errorf("%s: %w", o.ID(), err)
		}
		if len(strictErrs) > 0 {
			return o, fmt.Errorf("%s: strict decoding: %w", o.ID(), joinErrors(strictErrs))
		}
		o.Typed = t
		return o, nil
	}
	if !scheme.Recognizes(gvk) {
		return o, fmt.Errorf("%s: no typed struct for %s (add it to the scheme or crdTypes)", o.ID(), gvk)
	}
	obj, _, err := strictJSON.Decode(doc, nil, nil)
	if err != nil {
		return o, fmt.Errorf("%s: %w", o.ID(), err)
	}
	o.Typed = obj
	return o, nil
}

type multiError []error

func (m multiError) Error() string {
	var b bytes.Buffer
	msgs := make([]string, len(m))
	for i, e := range m {
		msgs[i] = e.Error()
	}
	sort.Strings(msgs)
	for i, s := range msgs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(s)
	}
	return b.String()
}

func (m multiError) Unwrap() []error { return m }

func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return multiError(errs)
}

// SetPromanageImage returns docs with the image of every promanage container
// (containers and init containers of pod templates) replaced by ref, which
// must be pinned by digest. It fails if no container was replaced.
func SetPromanageImage(docs [][]byte, ref string) ([][]byte, error) {
	if !strings.Contains(ref, "@sha256:") || !imageRef.MatchString(ref) {
		return nil, fmt.Errorf("set image: %q is not a reference pinned by digest (name@sha256:...)", ref)
	}
	out := make([][]byte, len(docs))
	n := 0
	for i, d := range docs {
		var obj map[string]any
		if err := json.Unmarshal(d, &obj); err != nil {
			return nil, fmt.Errorf("set image: %w", err)
		}
		spec, _ := obj["spec"].(map[string]any)
		tpl, _ := spec["template"].(map[string]any)
		podSpec, _ := tpl["spec"].(map[string]any)
		for _, key := range []string{"initContainers", "containers"} {
			list, _ := podSpec[key].([]any)
			for _, c := range list {
				ctr, _ := c.(map[string]any)
				if img, _ := ctr["image"].(string); isPromanage(img) {
					ctr["image"] = ref
					n++
				}
			}
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("set image: %w", err)
		}
		out[i] = b
	}
	if n == 0 {
		return nil, fmt.Errorf("set image: no promanage container in the manifests")
	}
	return out, nil
}
