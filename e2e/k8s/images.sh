#!/usr/bin/env bash
# Builds the images the e2e cluster runs besides the driver's own (make
# image): the CSI sidecars and snapshot-controller from the binaries
# e2e/kube/build.sh compiled, the pod sandbox (pause) and busybox for test
# pods. Each is a docker-archive tarball in bin/images/, written by
# hack/mkimage, tagged with the name deploy/ uses, so the manifests need no
# change; containerd imports them and nothing is pulled.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/bin/images
kbin=$("$root/e2e/kube/build.sh" --bin-dir)
mkdir -p "$out"
mkimage() { (cd "$root" && go run ./hack/mkimage "$@"); }

for s in csi-provisioner:v6.4.0 csi-snapshotter:v8.7.0 snapshot-controller:v8.7.0 csi-resizer:v2.3.0; do
	name=${s%%:*} ver=${s#*:}
	[ -x "$kbin/$name-$ver" ] || "$root/e2e/kube/build.sh" "$name"
	mkimage --tag "registry.k8s.io/sig-storage/$name:$ver" --out "$out/$name.tar" \
		--file "$kbin/$name-$ver=/$name" --dir /tmp --entrypoint "/$name"
done

(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/pause" ./e2e/k8s/pause)
mkimage --tag registry.k8s.io/pause:3.10 --out "$out/pause.tar" --file "$out/pause=/pause" --entrypoint /pause

# The static build: the image has no libc.
dpkg -s busybox-static >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2
bb=/bin/busybox
links=()
for a in $("$bb" --list); do [ "$a" = busybox ] || links+=(--link "/bin/$a=busybox"); done
mkimage --tag docker.io/library/busybox:e2e --out "$out/busybox.tar" --file "$bb=/bin/busybox" "${links[@]}" --dir /tmp
