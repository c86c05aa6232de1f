// Package validate checks ProManage's deployment material offline: the container
// image recipe (Dockerfile), the kustomize overlays in deploy/k8s, the Terraform
// module in deploy/terraform and the CI workflow. No cluster, cloud account or
// Docker engine is needed; everything is parsed and built in-process.
//
// It is a separate Go module so that kustomize, the Kubernetes API types, HCL and
// actionlint never enter the application's go.mod. The rules it enforces are the
// operational promises of deploy/README.md; each rule has a test that shows it can
// fail (a mutated input that must be rejected).
//
// It must never reach the cluster or a cloud: it reads files, and builds and
// runs the promanage binary (`go run ./cmd/promanage metrics-catalog`) to read
// the metric names it exports, which needs the module cache (the Go module
// proxy the first time).
package validate
