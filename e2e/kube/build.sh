#!/usr/bin/env bash
# Builds the Kubernetes, etcd and CSI sidecar binaries the e2e harnesses
# need, through the Go module proxy, and caches them in the machine-wide
# cache (hack/cache-dir.sh) as kube/<key>/bin/<name>-<version>, where <key>
# hashes this script and the Go version: a cached binary is never rebuilt,
# and a change to either builds afresh.
#   e2e/kube/build.sh --bin-dir    prints the folder the binaries are in
#   e2e/kube/build.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl \
#     csi-provisioner csi-snapshotter snapshot-controller csi-resizer csi-attacher
# `go install` refuses k8s.io/kubernetes, etcd's server module and the
# sidecars because of their replace directives, so each is built from a small
# wrapper module that repeats the replaces against published module versions.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
PROVISIONER_VERSION=v6.4.0
SNAPSHOTTER_VERSION=v8.7.0
RESIZER_VERSION=v2.3.0
ATTACHER_VERSION=v4.13.0
cache=$("$root/hack/cache-dir.sh")/kube
key=$( (cat "$0"; go env GOVERSION) | sha256sum | cut -c1-12)
bin=$cache/$key/bin
if [ "${1:-}" = --bin-dir ]; then
	echo "$bin"
	exit 0
fi
mkdir -p "$bin"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

build_etcd() {
	[ -x "$bin/etcd-$ETCD_VERSION" ] && return 0
	local w=$cache/src/etcd-$ETCD_VERSION
	mkdir -p "$w"
	cat >"$w/go.mod" <<EOT
module dotmeshcsi/e2e/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/server/v3 => go.etcd.io/etcd/server/v3 $ETCD_VERSION
)
EOT
	printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$w/tools.go"
	local s=$SECONDS
	(cd "$w" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$bin/etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3)
	echo "built etcd $ETCD_VERSION in $((SECONDS - s))s"
}

kube_module() {
	local w=$cache/src/kubernetes-$KUBE_VERSION
	[ -f "$w/go.sum" ] && { echo "$w"; return 0; }
	mkdir -p "$w"
	go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
	local mod sv
	mod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
	sv=v0.${KUBE_VERSION#v1.}
	{
		printf 'module dotmeshcsi/e2e/kubernetes\n\ngo 1.26.0\n\ngodebug default=go1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
		# ./staging/src/k8s.io/X becomes the published k8s.io/X v0.N.M; the
		# sample modules are not published and nothing we build needs them.
		sed -n '/^replace (/,/^)/p' "$mod" | grep 'staging/src' | grep -v -e sample-cli-plugin -e sample-controller |
			awk -v sv="$sv" '{printf "\t%s => %s %s\n", $1, $1, sv}'
		printf ')\n'
	} >"$w/go.mod"
	printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n\t_ "k8s.io/kubernetes/cmd/kubelet"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' >"$w/tools.go"
	(cd "$w" && go mod tidy >&2)
	echo "$w"
}

build_kube() {
	local c=$1
	[ -x "$bin/$c-$KUBE_VERSION" ] && return 0
	local w maj min ld s
	w=$(kube_module)
	maj=$(echo "$KUBE_VERSION" | cut -d. -f1 | tr -d v)
	min=$(echo "$KUBE_VERSION" | cut -d. -f2)
	ld="-s -w"
	for k in client-go/pkg/version component-base/version; do
		ld="$ld -X k8s.io/$k.gitVersion=$KUBE_VERSION -X k8s.io/$k.gitMajor=$maj -X k8s.io/$k.gitMinor=$min -X k8s.io/$k.gitTreeState=clean"
	done
	s=$SECONDS
	(cd "$w" && go build -trimpath -ldflags "$ld" -o "$bin/$c-$KUBE_VERSION" "k8s.io/kubernetes/cmd/$c")
	echo "built $c $KUBE_VERSION in $((SECONDS - s))s"
}

# build_sidecar MODULE VERSION "LOCAL=>PUBLISHED ..." "CMDS OF THE MODULE" CMD:
# one wrapper module per sidecar module, with the module's own replaces and
# its local-path replaces rewritten to published modules ('+' stands for the
# space between module and version).
build_sidecar() {
	local m=$1 v=$2 rw=$3 cmds=$4 c=$5 name gomod s line r t
	name=$(basename "$c")
	[ -x "$bin/$name-$v" ] && return 0
	local w=$cache/src/$(basename "${m%/v[0-9]*}")-$v
	mkdir -p "$w"
	if [ ! -f "$w/go.sum" ]; then
		gomod=$(go mod download -json "$m@$v" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
		{
			printf 'module dotmeshcsi/e2e/%s\n\ngo 1.26.0\n\nrequire %s %s\n\n' "$(basename "$w")" "$m" "$v"
			awk '/^replace \(/{b=1;next} b&&/^\)/{b=0;next} b{print "replace " $0; next} /^replace /{print}' "$gomod" |
				while read -r line; do
					for r in $rw; do line=$(echo "$line" | sed -E "s#=> *${r%%=>*}\$#=> ${r#*=>}#; s#\+# #g"); done
					echo "$line"
				done
		} >"$w/go.mod"
		{
			printf '//go:build tools\n\npackage tools\n\nimport (\n'
			for t in $cmds; do printf '\t_ "%s/%s"\n' "$m" "$t"; done
			printf ')\n'
		} >"$w/tools.go"
		(cd "$w" && go mod tidy >&2)
	fi
	s=$SECONDS
	(cd "$w" && go build -trimpath -ldflags "-s -w -X main.version=$v" -o "$bin/$name-$v" "$m/$c")
	echo "built $name $v in $((SECONDS - s))s"
}

for what in "$@"; do
	case $what in
	etcd) build_etcd ;;
	kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kubectl) build_kube "$what" ;;
	csi-provisioner) build_sidecar github.com/kubernetes-csi/external-provisioner/v6 $PROVISIONER_VERSION "" cmd/csi-provisioner cmd/csi-provisioner ;;
	csi-snapshotter | snapshot-controller)
		build_sidecar github.com/kubernetes-csi/external-snapshotter/v8 $SNAPSHOTTER_VERSION \
			"./client=>github.com/kubernetes-csi/external-snapshotter/client/v8+$SNAPSHOTTER_VERSION" \
			"cmd/csi-snapshotter cmd/snapshot-controller" "cmd/$what" ;;
	csi-resizer) build_sidecar github.com/kubernetes-csi/external-resizer/v2 $RESIZER_VERSION "" cmd/csi-resizer cmd/csi-resizer ;;
	csi-attacher) build_sidecar github.com/kubernetes-csi/external-attacher/v4 $ATTACHER_VERSION "" cmd/csi-attacher cmd/csi-attacher ;;
	*) echo "unknown binary $what" >&2; exit 2 ;;
	esac
done
