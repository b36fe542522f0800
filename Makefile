# omero-adi — make help lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN := bin/omero-adi
CONFIG ?= examples/quickstart.toml
TEST_TIMEOUT ?= 25m
SOAK ?= 10m
ARTIFACTS ?= test-artifacts

.PHONY: help build test test-deps deploy-test lint bench soak run demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/omero-adi with the version stamped in
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/omero-adi

test-deps: ## install what the tests need (PostgreSQL server, podman, runc, bindfs, debootstrap, python3-aiosmtpd, chromium, node, playwright-core) when missing
	@scripts/test-deps.sh

test: test-deps lint ## lint, then every test with the race detector (real PostgreSQL, podman, bindfs, chromium); files tests keep (screenshots) go to $(ARTIFACTS)/_artifacts
	@mkdir -p $(ARTIFACTS)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -artifacts -outputdir $(CURDIR)/$(ARTIFACTS) ./...

deploy-test: test-deps ## only the deploy tests: install.sh + the unit under systemd, the Containerfile's image (root, podman, debootstrap)
	$(GO) test -count=1 -timeout 15m -v ./deploy

lint: ## go.mod/go.sum tidy, gofmt, go vet and staticcheck (pinned as a tool in go.mod)
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod or go.sum is not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

bench: test-deps build ## benchmarks and the harness that prints ratios against references
	scripts/bench.sh

soak: test-deps ## the fault suite for $(SOAK) (default 10m): two agents, outages, kill -9, hostile orders; prints a summary (full log: soak.log)
	set -o pipefail; ADI_SOAK=$(SOAK) $(GO) test -count=1 -run '^TestFaultSuite$$' -v -timeout 60m ./cmd/omero-adi 2>&1 \
		| tee soak.log | grep -E 'fault_test.go|^(--- |ok|FAIL|PASS)'

run: build demo ## run the agent on examples/quickstart.toml (SQLite, dry run, demo/)
	$(BIN) --config $(CONFIG) run

demo: ## create the demo drop folders used by the quick start
	@mkdir -p demo/data/demo/alice/dropbox demo/data/demo/bob/dropbox var/log var/omero/ManagedRepository var/omero/inplace

clean: ## remove build output and local state of the quick start
	rm -rf bin var
