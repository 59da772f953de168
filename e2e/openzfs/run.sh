#!/usr/bin/env bash
# The OpenZFS tier: runs the project's ZFS integration tests and in-process
# csi-sanity inside an emulated guest with the real OpenZFS kernel module.
# Test binaries are built here with `go test -c` and carried in on a second
# disk; results come back on the guest's second serial port. A guest that
# fails, times out or never starts fails this script.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
limit=${OPENZFS_TIMEOUT:-2400}
image=$("$root/e2e/openzfs/build-image.sh")
work=$root/.cache/openzfs/run
rm -rf "$work"
mkdir -p "$work/payload"

# The test runs, in order: a package's binary name, and ":block" for the
# csi-sanity run with the block access type. OPENZFS_RUNS picks some of
# them (say "zfsd mesh") while working on one part.
runs=${OPENZFS_RUNS:-zfs mountinfo zfsd driver mesh inprocess inprocess:block}
declare -A pkgof=([zfs]=./pkg/zfs [mountinfo]=./pkg/mountinfo [zfsd]=./pkg/zfsd [driver]=./pkg/driver
	[mesh]=./pkg/mesh [inprocess]=./e2e/sanity/inprocess)

# Static test binaries, each in a folder with its package's testdata (tests
# read fixtures relative to their package): the guest has no Go. The zfs
# tag builds in the tests that need root and ZFS, which are the point here.
for name in $(printf '%s\n' $runs | cut -d: -f1 | sort -u); do
	p=${pkgof[$name]:?unknown test run $name}
	mkdir -p "$work/payload/$name"
	(cd "$root" && CGO_ENABLED=0 go test -c -tags zfs -o "$work/payload/$name/$name.test" "$p")
	if [ -d "$root/$p/testdata" ]; then cp -r "$root/$p/testdata" "$work/payload/$name/"; fi
done
echo "$runs" >"$work/payload/runs"
cat >"$work/payload/run.sh" <<'RUN'
#!/bin/bash
# Inside the guest: each test binary in turn, with a pass/fail count.
rc=0
for run in $(cat runs); do
	t=${run%%:*}
	echo "=== PACKAGE $run"
	args=(-test.count=1 -test.v -test.timeout=30m)
	[ $t = inprocess ] && args+=(-ginkgo.no-color)
	# Of the mesh tests (5.6 minutes here, all passing when tried), those
	# whose ZFS work differs on OpenZFS: resumed streams, compression
	# features, and a handoff between legacy mounts.
	[ $t = mesh ] && args+=(-test.run '^(TestInterruptedReplicationResumes|TestInterruptedHandoffResumes|TestCompressionTheTargetCannotDoIsRefusedFirst|TestHandoffMovesOnlyTheDiff)$')
	access=""
	[ "$run" = inprocess:block ] && access=block
	start=$(date +%s)
	(cd $t && DOTMESH_SANITY_ACCESS_TYPE=$access TMPDIR=/var/tmp ./$t.test "${args[@]}") >/var/tmp/$t.log 2>&1
	r=$?
	grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|PASS$|FAIL$|ok |Ran [0-9]+ of|SUCCESS!|FAIL!|\s+[a-z_]+_test\.go:[0-9]+:)' /var/tmp/$t.log | grep -v '^=== RUN'
	echo "=== RESULT $run rc=$r passed=$(grep -c -- '--- PASS' /var/tmp/$t.log) failed=$(grep -c -- '--- FAIL' /var/tmp/$t.log) took=$(( $(date +%s) - start ))s"
	[ $r -eq 0 ] || { rc=1; grep -E -A3 '\[FAILED\]|rpc error' /var/tmp/$t.log | grep -vE '^\s*I[0-9]{4} ' | head -60; tail -20 /var/tmp/$t.log; }
done
exit $rc
RUN
chmod +x "$work/payload/run.sh"
mkfs.ext4 -q -F -d "$work/payload" "$work/payload.img" 1G >&2

serial=$work/serial.log
# shellcheck source=e2e/openzfs/lib.sh
. "$root/e2e/openzfs/lib.sh"
boot_guest "$image" "$work/payload.img" "$work" "$limit"
grep -E '^(GUEST-|zfs |=== RESULT|--- FAIL|Ran |SUCCESS!|FAIL!)' "$serial" || true
grep -q '^GUEST-END rc=0' "$serial" || { echo "openzfs tier: FAILED" >&2; exit 1; }
echo "openzfs tier: passed"
