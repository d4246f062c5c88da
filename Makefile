# lastcall — run `make help` for the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
export LASTCALL_CACHE ?= $(CURDIR)/.cache

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOLANGCI_LINT_VERSION ?= v2.15.0
BIN := $(CURDIR)/bin
LDFLAGS := -s -w -X main.version=$(VERSION)
GO_TEST_FLAGS ?= -race -count=1

.PHONY: help
help: ## list targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build static binaries into bin/
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

.PHONY: tools
tools: ## build the real consul, etcd and kube-apiserver the tests use (cached by version)
	hack/build-consul.sh >/dev/null
	hack/envtest-assets.sh >/dev/null

.PHONY: test
test: tools ## unit and integration tests (real Consul agent, real kube-apiserver + etcd)
	LASTCALL_CONSUL_BIN=$$(hack/build-consul.sh) \
	KUBEBUILDER_ASSETS=$$(hack/envtest-assets.sh) \
	LASTCALL_REQUIRE_INTEGRATION=1 \
	go test $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: tools ## benchmarks behind docs/benchmarks.md
	LASTCALL_CONSUL_BIN=$$(hack/build-consul.sh) KUBEBUILDER_ASSETS=$$(hack/envtest-assets.sh) \
	go test -run '^$$' -bench . -benchmem ./...

.PHONY: lint
lint: ## gofmt, go vet and golangci-lint
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n $$out ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	$$(hack/build-golangci-lint.sh $(GOLANGCI_LINT_VERSION)) run ./...

.PHONY: verify
verify: lint ## lint, and fail if go.mod/go.sum are not tidy
	go mod tidy
	git diff --exit-code -- go.mod go.sum || { echo "go.mod/go.sum not tidy: run 'go mod tidy' and commit"; exit 1; }

.PHONY: clean
clean: ## remove bin/ (the tool cache in $(LASTCALL_CACHE) stays)
	rm -rf $(BIN)
