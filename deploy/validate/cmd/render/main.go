// Command render prints the manifests of a kustomize overlay, like
// `kustomize build DIR`, with the kustomize version this module pins, after
// checking that every object decodes strictly into its typed struct.
//
//	go run ./cmd/render ../k8s/overlays/production > production.yaml
package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/promanage/promanage/deploy/validate"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: render OVERLAY_DIR")
		os.Exit(2)
	}
	docs, err := validate.BuildOverlay(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := validate.DecodeAll(docs); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	for _, d := range docs {
		y, err := yaml.JSONToYAML(d)
		if err != nil {
			fmt.Fprintln(os.Stderr, "render:", err)
			os.Exit(1)
		}
		fmt.Printf("---\n%s", y)
	}
}
