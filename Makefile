# ProManage. Quick start: `make run`, `make test` (see README.md).
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)

.PHONY: run build docs-assets test test-scale lint kratos plugins bench chaos deploy-check clean

## run: build everything and start Postgres (if needed), Kratos, the API and the worker
run: build kratos
	./bin/promanage dev

## build: the static promanage binary in bin/ (with the API reference's renderer embedded)
build: docs-assets
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/promanage ./cmd/promanage

## docs-assets: fetch the API reference renderer (Redoc, pinned and integrity-checked) into api/docs/assets
docs-assets:
	bash scripts/docs-assets.sh

## kratos: build the pinned Ory Kratos server into bin/kratos (cached)
kratos: bin/kratos
bin/kratos: tools/kratos/go.mod tools/kratos/go.sum
	cd tools/kratos && $(GO) build -mod=mod -o ../../bin/kratos github.com/ory/kratos

## test: the whole suite against real PostgreSQL, Redis, Kratos and blob servers
test: kratos
	bash scripts/test.sh

## test-scale: the long runs past one machine (docs/SCALING.md): API replicas, workers and
## migrations behind PgBouncer (20 server connections) beside the same load connected
## directly, the Redis Cluster tests, the isolation suite through PgBouncer, and a
## tenant's footprint over 500 tenants. Needs about 60 free PostgreSQL connections.
test-scale: kratos
	PROMANAGE_SCALE=long PKGS="./tenant/ ./rbac/ ./cmd/promanage/" \
	  RUN='TestBehindPgBouncer|TestRedisCluster|TestIsolationThroughPgBouncer|TestTenantFootprint|TestInvalidator' \
	  GOFLAGS=-v bash scripts/test.sh

## lint: vet, formatting, and govulncheck when available
lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	@if command -v govulncheck >/dev/null; then govulncheck ./...; else echo "govulncheck not installed: go install golang.org/x/vuln/cmd/govulncheck@latest"; fi

## plugins: rebuild the example plugins' .wasm files
plugins:
	bash examples/plugins/build.sh

## bench: Go benchmarks (ratios against baselines run in the same process)
bench: kratos
	BENCH=1 bash scripts/test.sh

## chaos: the long fault run: under load, Redis, Kratos, PostgreSQL (all private to the run)
## and the worker are stopped and started again, three times each (a short run is in `make test`)
chaos: kratos
	PROMANAGE_CHAOS=long $(GO) test -count=1 -v -timeout 20m -run '^TestChaos$$' ./cmd/promanage

## deploy-check: offline validation of Dockerfile, k8s, Terraform and CI workflow
deploy-check:
	cd deploy/validate && $(GO) test -count=1 ./...

clean:
	rm -rf bin .data
