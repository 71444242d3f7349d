# Portcullis Makefile. `make help` lists the targets.
#
# Every build that includes trivy needs GOEXPERIMENT=jsonv2; it is harmless elsewhere, so it is set
# for everything here.
export GOEXPERIMENT := jsonv2

# Built tools live outside the clone, keyed by version, so a fresh clone (CI) reuses them.
PORTCULLIS_CACHE ?= $(HOME)/.cache/portcullis
export PORTCULLIS_CACHE

CONTROLLER_TOOLS_VERSION ?= v0.21.0
KUSTOMIZE_VERSION ?= v5.8.1
DISTRIBUTION_VERSION ?= v3.1.2
COSIGN_VERSION ?= v2.6.5
COSIGN ?= $(PORTCULLIS_CACHE)/bin/cosign-$(COSIGN_VERSION)/cosign
COSIGN3_VERSION ?= v3.1.3
COSIGN3 ?= $(PORTCULLIS_CACHE)/bin/cosign-$(COSIGN3_VERSION)/cosign
NOTATION_VERSION := $(shell sed -n 's/^require github.com\/notaryproject\/notation \(v[0-9.]*\)$$/\1/p' hack/tools/notation/go.mod)
NOTATION ?= $(PORTCULLIS_CACHE)/bin/notation-$(NOTATION_VERSION)/notation
TRIVY_VERSION ?= v0.74.0
TRIVY ?= $(PORTCULLIS_CACHE)/bin/trivy-$(TRIVY_VERSION)/trivy
REGISTRY_BIN ?= $(PORTCULLIS_CACHE)/bin/registry-$(DISTRIBUTION_VERSION)/registry
CONTROLLER_GEN ?= $(PORTCULLIS_CACHE)/bin/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen
KUSTOMIZE ?= $(PORTCULLIS_CACHE)/bin/kustomize-$(KUSTOMIZE_VERSION)/kustomize

IMG ?= ghcr.io/portcullis-dev/portcullis:latest
# OLM packaging (`make bundle catalog`): the release the bundle describes and where its images go.
VERSION ?= 0.1.0
IMAGE_TAG_BASE ?= ghcr.io/portcullis-dev/portcullis
BUNDLE_IMG ?= $(IMAGE_TAG_BASE)-bundle:v$(VERSION)
CATALOG_IMG ?= $(IMAGE_TAG_BASE)-catalog:v$(VERSION)
CHANNEL ?= alpha
BUNDLE_FLAGS = -version $(VERSION) -image $(IMAGE_TAG_BASE):v$(VERSION) -channel $(CHANNEL)
# Extra flags for `go test`, e.g. TESTFLAGS='-run TestCEL -v'.
TESTFLAGS ?=
PKGS ?= ./...
# The Go vulnerability database shipped with the project (OSV records, CC-BY-4.0; third_party/go-vulndb).
OSV ?= third_party/go-vulndb/go-osv.tar.gz

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC into config/ from the API types and markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/...;./internal/controller/...;./internal/admission/...;./internal/reports/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the tree.
	gofmt -l -w $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')

.PHONY: vet
vet: ## Run go vet (also on the e2e build tag).
	go vet ./...
	go vet -tags e2e ./test/e2e

.PHONY: verify
verify: manifests generate ## Fail when generated files or formatting differ from what is committed.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@test -z "$$(git status --porcelain -- api config)" || { git status --porcelain -- api config; git diff -- api config; echo "make manifests generate changed files: commit them"; exit 1; }

.PHONY: check-deps
check-deps: ## Build the pinned libraries (trivy, cosign, ...) together; slow (10+ min cold), not part of test.
	go build -tags deps ./internal/deps

.PHONY: envtest-assets
envtest-assets: ## Build (once) kube-apiserver and etcd for envtest; prints their folder.
	@hack/envtest-assets.sh

.PHONY: test
test: manifests generate vet $(REGISTRY_BIN) ## Run all tests against a real kube-apiserver + etcd and a real registry (built once, cached).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" PORTCULLIS_REGISTRY_BIN="$(REGISTRY_BIN)" go test $(TESTFLAGS) $(PKGS)

.PHONY: test-e2e
test-e2e: manifests generate $(REGISTRY_BIN) ## Run the e2e suite (build tag e2e): the demo loop with the real manager binary, registry and demo images, and `make demo` in a fresh clone.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" PORTCULLIS_REGISTRY_BIN="$(REGISTRY_BIN)" go test -tags e2e -run "TestDemoLoop|TestMakeDemoFromClone" -count=1 -timeout 40m -v ./test/e2e

.PHONY: vulndb
vulndb: ## Build a trivy vulnerability DB from the shipped Go vulnerability database ($(OSV)) into .local/vulndb (about 3 s).
	go run ./cmd/portcullis-vulndb -osv $(OSV) -out .local/vulndb

.local/vulndb/db/trivy.db: $(OSV)
	$(MAKE) vulndb

.PHONY: bench
bench: $(COSIGN) $(COSIGN3) $(NOTATION) $(TRIVY) $(REGISTRY_BIN) ## Benchmarks (not in CI): listing; verification and scanning in-process vs one CLI process per image.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" PORTCULLIS_REGISTRY_BIN="$(REGISTRY_BIN)" PORTCULLIS_COSIGN_BIN="$(COSIGN)" \
		go test -run NONE -bench Listing -benchtime 3x ./internal/controller
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" PORTCULLIS_REGISTRY_BIN="$(REGISTRY_BIN)" GOEXPERIMENT=jsonv2 \
		go test -run NONE -bench PushToVerdict -benchtime 5x ./internal/controller
	GOEXPERIMENT=jsonv2 PORTCULLIS_COSIGN_BIN="$(COSIGN)" go test -run NONE -bench Verify200 -benchtime 1x ./internal/verify
	GOEXPERIMENT=jsonv2 PORTCULLIS_COSIGN3_BIN="$(COSIGN3)" go test -run NONE -bench VerifyBundles200 -benchtime 1x ./internal/verify
	GOEXPERIMENT=jsonv2 PORTCULLIS_COSIGN3_BIN="$(COSIGN3)" PORTCULLIS_REGISTRY_BIN="$(REGISTRY_BIN)" go test -count=1 -run TestCosignV3CLI ./internal/verify
	GOEXPERIMENT=jsonv2 PORTCULLIS_NOTATION_BIN="$(NOTATION)" PORTCULLIS_REGISTRY_BIN="$(REGISTRY_BIN)" go test -count=1 -run TestNotationCLI ./internal/verify
	GOEXPERIMENT=jsonv2 PORTCULLIS_TRIVY_BIN="$(TRIVY)" go test -run NONE -bench Scan100 -benchtime 1x ./internal/scan/trivyscan
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" GOEXPERIMENT=jsonv2 go test -run NONE -bench Admission10k -benchtime 1x ./internal/admission

# `make bench-scale`: N images over REPOS repositories; BENCH_FLAGS are harness flags (e.g.
# '-interval 1m -steady 1 -tiny -timeout 3h'), BENCH_MANAGER_FLAGS go to the manager (e.g. '--scan-concurrency=4').
N ?= 5000
REPOS ?= 50
BENCH_FLAGS ?=
BENCH_MANAGER_FLAGS ?=

.PHONY: bench-scale
bench-scale: build $(REGISTRY_BIN) .local/vulndb/db/trivy.db ## Scale benchmark (not in CI): the real manager on N images over REPOS repositories; table in .local/bench-scale.md (docs/performance.md).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" go run ./hack/benchscale -n $(N) -repos $(REPOS) -registry $(REGISTRY_BIN) -manager bin/manager -vulndb .local/vulndb/db -out .local/bench-scale.md $(BENCH_FLAGS) -- $(BENCH_MANAGER_FLAGS)

##@ Build

.PHONY: build
build: manifests generate ## Build the manager (bin/manager) and its scan worker (bin/portcullis-scanner, the one binary that links trivy).
	go build -o bin/manager ./cmd
	go build -o bin/portcullis-scanner ./cmd/portcullis-scanner

.PHONY: cli
cli: ## Build the command-line tool: bin/portcullis and bin/kubectl-portcullis (a link: `kubectl portcullis` with bin/ on PATH); docs/cli.md.
	go build -o bin/portcullis ./cmd/portcullis
	ln -sf portcullis bin/kubectl-portcullis

# Flags for the manager under `make run`.
# trivy's DB the demo uses when its registry answers (empty: always the DB built from the shipped OSV data).
DEMO_VULNDB_REPOSITORY ?= mirror.gcr.io/aquasec/trivy-db:2
RUN_ARGS ?= --health-probe-bind-address=127.0.0.1:8081 --metrics-bind-address=127.0.0.1:8080 --metrics-secure=false --cache-dir=$(CURDIR)/.local/cache --vulndb-dir=$(CURDIR)/.local/vulndb/db --egress-allow=127.0.0.0/8 --receiver-bind-address=127.0.0.1:8082

.PHONY: demo
demo: build $(REGISTRY_BIN) .local/vulndb/db/trivy.db ## The whole product on real images: local control plane, registry, demo images, samples, manager; prints the verdicts, runs until Ctrl-C.
	go build -o bin/localenv ./hack/localenv
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" exec bin/localenv -vulndb-repository "$(DEMO_VULNDB_REPOSITORY)" -registry $(REGISTRY_BIN) -samples config/samples -cache $(PORTCULLIS_CACHE)/demo -webhook config/webhook/manifests.yaml -- bin/manager $(RUN_ARGS)

.PHONY: run
run: demo ## Same as demo.

.PHONY: docker-build
docker-build: ## Build the manager image (needs a Docker engine; none on our dev machines).
	docker build -t $(IMG) .

##@ Deployment

.PHONY: install
install: manifests $(KUSTOMIZE) ## Install the CRDs into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: manifests $(KUSTOMIZE) ## Remove the CRDs from the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests $(KUSTOMIZE) ## Deploy the manager to the cluster of the current kubeconfig.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | kubectl apply --server-side -f -

.PHONY: build-installer
build-installer: manifests $(KUSTOMIZE) ## Write dist/install.yaml (CRDs, RBAC, Deployment).
	mkdir -p dist
	$(KUSTOMIZE) build config/default > dist/install.yaml

##@ OLM (OperatorHub)

.PHONY: bundle
bundle: manifests ## Generate the OLM bundle (bundle/, bundle.Dockerfile) from config/ (internal/olm); checked by `make test`.
	go run ./hack/bundle $(BUNDLE_FLAGS)

.PHONY: catalog
catalog: bundle ## Generate the file-based catalog (catalog/) that offers the bundle at $(BUNDLE_IMG).
	go run ./hack/bundle -catalog -bundle-image $(BUNDLE_IMG) $(BUNDLE_FLAGS)

.PHONY: bundle-build
bundle-build: ## Build the bundle image (needs a Docker engine).
	docker build -f bundle.Dockerfile -t $(BUNDLE_IMG) .

.PHONY: catalog-build
catalog-build: ## Build the catalog image (needs a Docker engine); catalog.Dockerfile is `opm generate dockerfile catalog`.
	docker build -f catalog.Dockerfile -t $(CATALOG_IMG) .

##@ Tools

.PHONY: tools
tools: $(CONTROLLER_GEN) $(KUSTOMIZE) $(REGISTRY_BIN) ## Install controller-gen, kustomize and the CNCF Distribution registry into the cache.

$(CONTROLLER_GEN):
	GOBIN=$(dir $@) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

# The CNCF Distribution registry (tests and `make run`): built from Go modules, a few minutes cold.
$(REGISTRY_BIN):
	GOBIN=$(dir $@) go install github.com/distribution/distribution/v3/cmd/registry@$(DISTRIBUTION_VERSION)

# The cosign CLI, only for `make bench` (about 10 minutes cold; never built by CI).
$(COSIGN):
	GOEXPERIMENT= GOBIN=$(dir $@) go install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)

# cosign v3 (sigstore bundles by default), only for `make bench` (never built by CI).
$(COSIGN3):
	GOEXPERIMENT= GOBIN=$(dir $@) go install github.com/sigstore/cosign/v3/cmd/cosign@$(COSIGN3_VERSION)

# The notation CLI (Notary Project signatures), only for `make bench` (never built by CI).
$(NOTATION):
	cd hack/tools/notation && GOEXPERIMENT= go build -o $@ github.com/notaryproject/notation/cmd/notation

# The trivy CLI, only for `make bench` (slow to build, 250+ MB; never built by CI).
$(TRIVY):
	GOEXPERIMENT=jsonv2 GOBIN=$(dir $@) go install github.com/aquasecurity/trivy/cmd/trivy@$(TRIVY_VERSION)

$(KUSTOMIZE):
	GOBIN=$(dir $@) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
