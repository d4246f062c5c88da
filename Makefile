# lastcall — run `make help` for the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
export LASTCALL_CACHE ?= $(CURDIR)/.cache

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Every pinned version is in hack/versions.env; hack/tool.sh builds each tool once at its version
# (override one for a run: make lint GOLANGCI_LINT_VERSION=...).
GOLANGCI_LINT = $$(hack/tool.sh golangci-lint)
CONTROLLER_GEN = $$(hack/tool.sh controller-gen)
HELM = $$(hack/tool.sh helm)
BIN := $(CURDIR)/bin
LDFLAGS := -s -w -X main.version=$(VERSION)
# The Go modules: the root, and those services import without the controller's dependencies.
# The root's ./... stops at a nested go.mod, so test, bench, lint and verify run in each.
GO_MODULES := . graceful graceful/consulpick graceful/grpcgraceful registry/consulwatch
# $(call in_each_module,cmd) runs cmd in every module, all of them even after a failure, and
# fails if any failed.
in_each_module = rc=0; for m in $(GO_MODULES); do echo "== module $$m"; (cd "$$m" && $(1)) || rc=1; done; exit $$rc
GO_TEST_FLAGS ?= -race -count=1

.PHONY: help
help: ## list targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build static binaries into bin/
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

.PHONY: tools
tools: ## build the real consul, etcd and kube-apiserver the tests use (cached by version)
	hack/build-consul.sh >/dev/null
	hack/envtest-assets.sh >/dev/null

.PHONY: test
test: tools ## unit and integration tests (real Consul agent, real kube-apiserver + etcd)
	LASTCALL_CONSUL_BIN=$$(hack/build-consul.sh); \
	KUBEBUILDER_ASSETS=$$(hack/envtest-assets.sh); \
	export LASTCALL_CONSUL_BIN KUBEBUILDER_ASSETS LASTCALL_REQUIRE_INTEGRATION=1; \
	$(call in_each_module,go test $(GO_TEST_FLAGS) ./...)

.PHONY: bench
bench: tools ## benchmarks behind docs/benchmarks.md
	LASTCALL_CONSUL_BIN=$$(hack/build-consul.sh); KUBEBUILDER_ASSETS=$$(hack/envtest-assets.sh); \
	export LASTCALL_CONSUL_BIN KUBEBUILDER_ASSETS; \
	$(call in_each_module,go test -run '^$$' -bench . -benchmem ./...)

.PHONY: bench-dataplane
bench-dataplane: ## lastcall-node's real nft, netlink and iptables-nft reads at 50,000 endpoints, in a network namespace (root; ~10 min)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/lastcall-node ./cmd/lastcall-node
	LASTCALL_DATAPLANE_BENCH=1 LASTCALL_NODE_BIN=$(BIN)/lastcall-node \
	  go test -count=1 -timeout 60m -run '^TestDumpCommands$$' -v ./registry/endpoints/dataplane/dumpbench/

.PHONY: lint
lint: ## gofmt, go vet and golangci-lint
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n $$out ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(call in_each_module,go vet -tags e2e ./...)
	golangci_lint=$(GOLANGCI_LINT); $(call in_each_module,"$$golangci_lint" run --build-tags e2e ./...)

.PHONY: generate
generate: ## regenerate RBAC in config/rbac from the +kubebuilder markers
	$(CONTROLLER_GEN) rbac:roleName=lastcall-controller paths=./controllers/... output:rbac:artifacts:config=config/rbac

.PHONY: verify
verify: lint generate ## lint, regenerate, and fail on any diff (go.mod/go.sum tidy, config/ up to date)
	@tracked=$$(git ls-files '*go.mod' | xargs -n1 dirname | sort); listed=$$(printf '%s\n' $(GO_MODULES) | sort); \
	[[ $$tracked == "$$listed" ]] || { echo "GO_MODULES in the Makefile ($$(echo $$listed)) differs from the modules in git ($$(echo $$tracked))"; exit 1; }
	$(call in_each_module,go mod tidy)
	git diff --exit-code -- $(foreach m,$(GO_MODULES),$(m)/go.mod $(m)/go.sum) config || { echo "generated files or a module's go.mod/go.sum differ: run 'make generate' and 'go mod tidy' in that module, then commit"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard config); if [[ -n $$untracked ]]; then echo "untracked generated files: $$untracked"; exit 1; fi

.PHONY: chart-lint
chart-lint: ## helm lint the chart with the helm CLI (Debian has none: built from its Go module)
	$(HELM) lint charts/lastcall

KIND_CLUSTER_NAME ?= lastcall
export KIND_CLUSTER_NAME

.PHONY: docker-up
docker-up: ## make sure a Docker engine runs that can start kind's --privileged nodes (says what it changes first; preview: hack/docker-up.sh --dry-run)
	hack/docker-up.sh

.PHONY: kind-up
kind-up: ## kind cluster (1 control-plane + 2 workers); offline node image when kindest/node is unavailable (first build ~30 min, announced)
	hack/kind-up.sh

.PHONY: kind-down
kind-down: ## delete the kind cluster (cached images stay)
	hack/kind-down.sh

.PHONY: images
images: ## build lastcall's images from their Dockerfiles and load them into the kind cluster
	hack/images.sh

.PHONY: e2e-smoke
e2e-smoke: kind-up ## smoke-test the kind cluster (nodes, cross-node Service, DNS, logs, preStop hooks); E2E_DOWN=1 deletes it after
	@rc=0; go test -tags e2e -count=1 -timeout 20m ./e2e/smoke/ -ginkgo.v || rc=$$?; \
	if [[ $(E2E_DOWN) == 1 ]]; then hack/kind-down.sh; fi; exit $$rc

E2E_FLAGS ?= -v -tags e2e -count=1 -timeout 150m
E2E_DOWN ?= 0

.PHONY: demo
demo: kind-up ## the main job: kind cluster, images, helm install lastcall, Consul + sample app, one rolling update under load (with lastcall, then without), report
	@rc=0; E2E_ITERATIONS=1 go test $(E2E_FLAGS) ./e2e/rollout/ -args -ginkgo.v -ginkgo.label-filter='rolling-update && (lastcall || control) && !callers' || rc=$$?; \
	if [[ $(E2E_DOWN) == 1 ]]; then hack/kind-down.sh; fi; exit $$rc

.PHONY: e2e
e2e: kind-up ## the full e2e: every scenario on both paths, 3 runs each, controls, preStop sleep baseline, and the slow-dataplane, faults, callers and keep-alive-race suites; report in out/e2e/
	@rc=0; go test $(E2E_FLAGS) ./e2e/rollout/ -args -ginkgo.v || rc=$$?; \
	if [[ $(E2E_DOWN) == 1 ]]; then hack/kind-down.sh; fi; exit $$rc

.PHONY: e2e-dataplane
e2e-dataplane: kind-up ## the slow-dataplane e2e (kube-proxy minSyncPeriod 10s, a new-connection caller): lastcall with lastcall-node fails nothing, --settle only and preStop sleep 5 must fail
	@rc=0; go test $(E2E_FLAGS) ./e2e/rollout/ -args -ginkgo.v -ginkgo.label-filter=slow-dataplane || rc=$$?; \
	if [[ $(E2E_DOWN) == 1 ]]; then hack/kind-down.sh; fi; exit $$rc

.PHONY: e2e-callers
e2e-callers: kind-up ## every scenario under callers with their clients' defaults (HTTP/1.1 Go defaults, h2c, gRPC) on both paths, with lastcall and the control
	@rc=0; go test $(E2E_FLAGS) ./e2e/rollout/ -args -ginkgo.v -ginkgo.label-filter=callers || rc=$$?; \
	if [[ $(E2E_DOWN) == 1 ]]; then hack/kind-down.sh; fi; exit $$rc

.PHONY: e2e-keepalive-race
e2e-keepalive-race: kind-up ## plain HTTP/1.1 POSTs from Go's default client (E2E_RACE_RATE per path, default 200/s) through rolling updates, with and without lastcall: the keep-alive race's rate
	@rc=0; go test $(E2E_FLAGS) ./e2e/rollout/ -args -ginkgo.v -ginkgo.label-filter=keepalive-race || rc=$$?; \
	if [[ $(E2E_DOWN) == 1 ]]; then hack/kind-down.sh; fi; exit $$rc

.PHONY: e2e-faults
e2e-faults: kind-up ## faults under load (Consul restarted, frozen, refusing; leader killed; API outage; node lost; force delete; grace squeeze; bad input; 50 at once): report in out/e2e/…/faults.md
	@rc=0; go test $(E2E_FLAGS) ./e2e/rollout/ -args -ginkgo.v -ginkgo.label-filter=faults || rc=$$?; \
	if [[ $(E2E_DOWN) == 1 ]]; then hack/kind-down.sh; fi; exit $$rc

.PHONY: clean
clean: ## remove bin/ (the tool cache in $(LASTCALL_CACHE) stays)
	rm -rf $(BIN)
