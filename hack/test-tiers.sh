#!/usr/bin/env bash
# make test: every tier in order, stopping at the first that fails. zfs-fuse
# is started once for all of them (and stopped only if this run started it).
# Each tier's time is printed at the end, pass or fail, so a slow tier shows
# itself in CI's log.
set -uo pipefail
cd "$(dirname "$0")/.."
tiers=(
	"setup:build tools kube-bins"
	"unit:test-unit"
	"lint:lint"
	"generated:verify-generate"
	"zfs:test-zfs"
	"sanity:test-sanity"
	"upstream-sanity:test-upstream-sanity"
	"multinode:test-multinode"
	"trust:test-trust"
	"e2e-k8s:e2e-k8s"
	"openzfs:test-openzfs"
)
owned=$(hack/zfs-fuse.sh start) || exit 1
names=() times=() results=()
report() {
	hack/zfs-fuse.sh stop "$owned"
	echo
	echo "make test: time per tier"
	printf '  %-16s %8s  %s\n' tier seconds result
	local total=0
	for i in "${!names[@]}"; do
		printf '  %-16s %8d  %s\n' "${names[$i]}" "${times[$i]}" "${results[$i]}"
		total=$((total + times[i]))
	done
	printf '  %-16s %8d\n' total "$total"
}
trap report EXIT
for t in "${tiers[@]}"; do
	name=${t%%:*}
	start=$SECONDS
	# shellcheck disable=SC2086 # the targets are words
	make --no-print-directory ${t#*:}
	rc=$?
	names+=("$name") times+=($((SECONDS - start)))
	if [ $rc -ne 0 ]; then
		results+=(FAILED)
		exit $rc
	fi
	results+=(ok)
done
