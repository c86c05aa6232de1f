// Command render prints the manifests of a kustomize overlay, like
// `kustomize build DIR`, with the kustomize version this module pins (as a
// library: no kustomize binary, whatever Go the CI runs), after checking that
// every object decodes strictly into its typed struct.
//
//	go run ./cmd/render ../k8s/overlays/production > production.yaml
//	go run ./cmd/render -image REPO@sha256:DIGEST -skip-kind Namespace ../k8s/overlays/production
//
// -image replaces the image of every promanage container (CI deploys the one
// digest it built and scanned); -skip-kind leaves out objects of a kind (CI's
// role may not change the cluster-scoped Namespace).
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/promanage/promanage/deploy/validate"
)

func main() {
	image := flag.String("image", "", "image reference for every promanage container (name@sha256:digest)")
	skip := flag.String("skip-kind", "", "comma-separated kinds to leave out")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: render [-image REF] [-skip-kind KIND,...] OVERLAY_DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *image, *skip); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(dir, image, skip string) error {
	docs, err := validate.BuildOverlay(dir)
	if err != nil {
		return err
	}
	if image != "" {
		if docs, err = validate.SetPromanageImage(docs, image); err != nil {
			return err
		}
	}
	m, err := validate.DecodeAll(docs)
	if err != nil {
		return err
	}
	skipKinds := strings.Split(skip, ",")
	for i, d := range docs {
		if slices.Contains(skipKinds, m[i].GVK.Kind) {
			continue
		}
		y, err := yaml.JSONToYAML(d)
		if err != nil {
			return err
		}
		fmt.Printf("---\n%s", y)
	}
	return nil
}
