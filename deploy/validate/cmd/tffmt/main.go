// Command tffmt formats Terraform files the way `terraform fmt` / `tofu fmt` do
// (hclwrite.Format), for machines without either binary.
//
//	go run ./cmd/tffmt -w ../terraform   # rewrite files in place
//	go run ./cmd/tffmt ../terraform      # list files that need formatting, exit 1 if any
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2/hclwrite"

	"github.com/promanage/promanage/deploy/validate"
)

func main() {
	write := flag.Bool("w", false, "write the formatted files back")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: tffmt [-w] DIR")
		os.Exit(2)
	}
	files, err := validate.TerraformFiles(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	unformatted := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out := hclwrite.Format(src)
		if bytes.Equal(out, src) {
			continue
		}
		unformatted++
		fmt.Println(f)
		if *write {
			if err := os.WriteFile(f, out, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	}
	if unformatted > 0 && !*write {
		os.Exit(1)
	}
}
