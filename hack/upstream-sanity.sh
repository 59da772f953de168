#!/usr/bin/env bash
# Runs the upstream csi-sanity binary against `dotmesh-node --standalone`,
# with csi-sanity's default staging and mount folders (/tmp/csi-staging,
# /tmp/csi-mount), which --allowed-target-dirs=/tmp admits. The pool is 2 GiB
# because csi-sanity expands a volume to its test size plus 1 GiB.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/.cache/upstream-sanity
pool=dotmesh-upstream-$$
sock=$work/csi.sock
rm -rf "$work"; mkdir -p "$work"

"$root/bin/dotmesh-node" --standalone --endpoint="unix://$sock" --node-id=upstream-sanity \
	--data-dir="$work/data" --pool-name="$pool" --pool-size=2Gi --allowed-target-dirs=/tmp \
	--default-volume-size=64Mi >"$work/node.log" 2>&1 &
pid=$!
cleanup() {
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	if zpool list "$pool" >/dev/null 2>&1; then
		echo "pool $pool still imported after SIGTERM; destroying it" >&2
		zpool destroy -f "$pool" || true
	fi
}
trap cleanup EXIT
for _ in $(seq 1 300); do [ -S "$sock" ] && break; kill -0 "$pid" 2>/dev/null || { cat "$work/node.log"; exit 1; }; sleep 0.1; done

set -o pipefail
csi-sanity --csi.endpoint="unix://$sock" --csi.testvolumesize=67108864 --ginkgo.no-color 2>&1 | tee "$work/csi-sanity.log" |
	grep -E '^Ran [0-9]+ of|Passed \||^(FAIL|PASS|ok)' || { echo "upstream csi-sanity failed; log: $work/csi-sanity.log, driver log: $work/node.log"; exit 1; }
echo "upstream csi-sanity $(go version -m "$(command -v csi-sanity)" | awk '$1=="mod"{print $3}') passed; log $work/csi-sanity.log"
