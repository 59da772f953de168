# dotmesh-csi. Every target runs on a fresh Debian 12 machine as root; what
# the tests need (zfs-fuse, csi-sanity, staticcheck, Kubernetes) is installed
# on first use. What takes long to build is kept in a machine-wide cache
# outside the clone (hack/cache-dir.sh), so a fresh clone starts warm; logs
# and scratch go to .cache/ (ignored).
SHELL := /bin/bash
GO ?= go
CACHE := $(CURDIR)/.cache
MACHINE_CACHE := $(shell hack/cache-dir.sh)
TOOLS := $(MACHINE_CACHE)/tools/$(shell $(GO) env GOVERSION)
CSI_SANITY_VERSION := v5.6.0
STATICCHECK_VERSION := v0.8.2
CONTROLLER_GEN_VERSION := v0.23.0
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
VERSION ?= dev
# The name deploy/ uses; `make image IMAGE=...` for your own registry.
IMAGE ?= ghcr.io/dotmesh-io/dotmesh-csi:$(VERSION)
KUBE_BINS := etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl \
	csi-provisioner csi-snapshotter snapshot-controller csi-resizer csi-attacher
export PATH := $(TOOLS):$(PATH)

.PHONY: all build image e2e-images test test-unit test-trust test-zfs test-sanity test-upstream-sanity test-multinode test-openzfs e2e-k8s kube-bins demo bench lint tools generate verify-generate clean

all: build

build:
	$(GO) build -o bin/dotmesh-node ./cmd/node
	$(GO) build -o bin/dotmesh-controller ./cmd/controller

# The driver's image: both static binaries and nothing else (the node
# plugin runs the host's zfs; deploy/base/node.yaml says how), written as a
# docker-archive tarball without a Docker engine. Load it with
# `ctr -n k8s.io images import bin/images/dotmesh-csi.tar`, or push it with
# any registry client.
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/static/dotmesh-node ./cmd/node
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/static/dotmesh-controller ./cmd/controller
	$(GO) run ./hack/mkimage --tag $(IMAGE) --out bin/images/dotmesh-csi.tar \
		--file bin/static/dotmesh-node=/dotmesh-node --file bin/static/dotmesh-controller=/dotmesh-controller \
		--dir /tmp --entrypoint /dotmesh-node

# The sidecar, pause and busybox images the e2e cluster runs.
e2e-images: kube-bins
	@e2e/k8s/images.sh

$(TOOLS)/csi-sanity:
	GOBIN=$(TOOLS) $(GO) install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$(CSI_SANITY_VERSION)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools: $(TOOLS)/csi-sanity $(TOOLS)/staticcheck

# Regenerates what is derived from a source of truth: from the Go types in
# api/v1alpha1 and their markers, their deep copies and the CRDs in
# deploy/base/crds (controller-gen); from pkg/zfsd/api/zfsd.proto, its Go
# code (buf and the Go plugins). The output is committed, so a build never
# needs the generators; verify-generate fails when it is not current.
generate:
	GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	controller-gen object paths=./api/... crd output:crd:artifacts:config=deploy/base/crds
	cd pkg/zfsd/api && buf generate

# Runs generate and fails if that changed or added a file under the
# generated paths: the committed output must be what the sources give.
verify-generate:
	@hack/verify-generate.sh

# With the zfs tag, so the tests that need root or ZFS are checked too (no
# file is built only without it).
lint: $(TOOLS)/staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags zfs ./...
	staticcheck -tags zfs ./...

# `make test` is what CI runs (.ci/run), tier by tier (hack/test-tiers.sh):
# setup (build, tools, kube-bins); unit tests (the fast tier); lint; the
# generated files checked against their sources (verify-generate);
# integration tests on real zfs-fuse; csi-sanity (in process, against the
# split binaries, and against the controller of a 3-node harness cluster);
# the upstream csi-sanity binary against the standalone driver; the
# multi-node scenarios; the real-Kubernetes scenarios (deploy/ installed on
# a cluster built from source); and the OpenZFS tier (the same tests on the
# real OpenZFS module in an emulated guest). Kubernetes, etcd and the CSI
# sidecars are built once per machine through the Go module proxy, into the
# machine-wide cache (hack/cache-dir.sh). Each tier is timed, and the times
# are printed at the end, pass or fail. docs/testing.md lists the tiers,
# their times, and how long the cold builds take.
test:
	@hack/test-tiers.sh

# The fast tier: every test that needs neither root nor ZFS, nor a cluster
# (any user; seconds with a warm Go build cache, minutes from an empty one,
# see docs/testing.md), and the coverage of the CSI services against fakes
# of the store and the mount table, which must stay at 70% or more.
test-unit:
	@GO=$(GO) hack/test-unit.sh

# The package tests on real zfs-fuse (needs root; make test starts the
# daemon). Tests that need root or ZFS say so with the zfs build tag, which
# every target that runs them passes; without it they are not built.
# One package at a time (-p 1): zfs-fuse has wedged (a new mount's FUSE INIT
# never answered, every later call on it hanging) with two packages'
# mounts, unmounts and sends going at once; the tier is seconds longer.
test-zfs:
	$(GO) test -tags zfs -p 1 -count=1 -timeout 20m ./pkg/... ./internal/... ./e2e/loopdisk/...

kube-bins:
	@e2e/kube/build.sh $(KUBE_BINS)

# A real Kubernetes (etcd, kube-apiserver, controller-manager, scheduler,
# and per node containerd and a kubelet) in namespaces of its own, with
# deploy/ installed through its e2e overlay; the driver runs as pods. One
# node for the scenarios, three for a dot following its pod.
e2e-k8s: image e2e-images
	@hack/need-packages.sh zfs-fuse containerd runc containernetworking-plugins
	@set -o pipefail; $(GO) test -tags zfs -count=1 -timeout 40m -v ./e2e/k8s/ 2>&1 | tee $(CACHE)/e2e-k8s.log | \
		grep -E '^(=== RUN|--- |ok |FAIL|PASS$$)|(k8s|pvpernode)_test.go:[0-9]+: '; rc=$$?; \
	echo "full log: $(CACHE)/e2e-k8s.log"; exit $$rc

# The OpenZFS tier: the ZFS integration tests and in-process csi-sanity in an
# emulated guest with the real OpenZFS 2.1 kernel module. The guest image is
# built once per machine and kept in the machine-wide cache
# (hack/cache-dir.sh); docs/testing.md says how long that takes.
test-openzfs:
	@e2e/openzfs/run.sh

# The multi-node scenarios: each node its own mount and network namespace,
# zfs-fuse daemon and loop-mounted disk, beside a real etcd and API server.
# The trust tests on the same harness run in test-trust.
test-multinode: build kube-bins
	@set -o pipefail; $(GO) test -tags zfs -count=1 -timeout 40m -v -skip '$(TRUST_TESTS)' ./e2e/multinode/ 2>&1 | tee $(CACHE)/multinode.log | \
		grep -E '^(=== RUN|--- |ok |FAIL|PASS$$)|scenarios_test.go:[0-9]+: (migration|first refusal|event)'; rc=$$?; \
	echo "full log: $(CACHE)/multinode.log"; exit $$rc

# Trust and robustness: zfsd's authorization matrix (in process, then over
# real pools and mutual TLS), node certificates through the CSR API and the
# RBAC of deploy/'s roles on a real API server, the standalone driver killed
# at random moments (e2e/crash), and every parser of outside input fuzzed
# for FUZZTIME each (hack/fuzz.sh).
TRUST_TESTS := TestTrust|TestRBAC
test-trust: build kube-bins
	@mkdir -p $(CACHE)
	$(GO) test -count=1 ./pkg/zfsd/authz/
	$(GO) test -tags zfs -count=1 -run 'TestANodeCannot' ./pkg/mesh/
	@set -o pipefail; $(GO) test -tags zfs -count=1 -timeout 20m -v -run '$(TRUST_TESTS)' ./e2e/multinode/ 2>&1 | tee $(CACHE)/trust.log | \
		grep -E '^(=== RUN|--- |ok |FAIL|PASS$$)'; rc=$$?; echo "full log: $(CACHE)/trust.log"; exit $$rc
	@set -o pipefail; $(GO) test -tags zfs -count=1 -timeout 20m -v -run TestCrashInjection ./e2e/crash/ 2>&1 | tee $(CACHE)/crash.log | \
		grep -E '^(=== RUN|--- |ok |FAIL|PASS$$)|^crash injection'; rc=$$?; echo "full log: $(CACHE)/crash.log"; exit $$rc
	@FUZZTIME=$${FUZZTIME:-5s} hack/fuzz.sh

test-sanity:
	@mkdir -p $(CACHE)
	@set -o pipefail; $(GO) test -tags zfs -count=1 -timeout 30m -v ./e2e/sanity/... -args -ginkgo.no-color 2>&1 | tee $(CACHE)/sanity.log | \
		grep -E '^(--- |ok |FAIL|PASS$$)|^Ran [0-9]+ of|Passed \|'; rc=$$?; \
	echo "full csi-sanity log: $(CACHE)/sanity.log"; exit $$rc

test-upstream-sanity: build $(TOOLS)/csi-sanity
	@hack/upstream-sanity.sh

demo: build
	@owned=$$(hack/zfs-fuse.sh start) && trap 'hack/zfs-fuse.sh stop "$$owned"' EXIT; $(GO) run ./hack/demo --node-bin=bin/dotmesh-node --work=$(CURDIR)/.demo

# One run: the standalone driver against the bare zfs commands, then the
# mesh (replication, migration, first byte after a handoff) on a 2-node
# harness against the bare send | recv pipe between the same nodes, then
# claims on a real Kubernetes against pods without storage.
bench: build kube-bins
	@owned=$$(hack/zfs-fuse.sh start) && trap 'hack/zfs-fuse.sh stop "$$owned"' EXIT; set -o pipefail; \
	$(GO) run ./hack/bench --node-bin=bin/dotmesh-node --work=$(CACHE)/bench && \
	$(GO) test -tags zfs -count=1 -run '^$$' -bench BenchmarkMesh -benchtime=1x ./e2e/multinode/ 2>&1 | grep -vE '^ *[IE][0-9]{4} |nsenter exited' && \
	$(MAKE) --no-print-directory image e2e-images >/dev/null && \
	$(GO) test -tags zfs -count=1 -run '^$$' -bench BenchmarkKube -benchtime=1x -timeout 30m ./e2e/k8s/ 2>&1 | grep -vE '^ *[IEW][0-9]{4} |nsenter exited'

clean:
	rm -rf bin
