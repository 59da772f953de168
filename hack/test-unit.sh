#!/usr/bin/env bash
# make test-unit: every test that needs neither root nor ZFS, then the
# statement coverage of the CSI controller and node services, which the
# fakes of the store and the mount table reach (pkg/driver/*_fake_test.go).
# Tests that need root or ZFS carry the zfs build tag and run in
# `make test-zfs`. Nothing is written in the clone, so any user can run
# this on a read-only checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
floor=70 # percent, for each file below
files=(pkg/driver/controller.go pkg/driver/node.go)
module=$($go list -m)
profile=$(mktemp)
trap 'rm -f "$profile"' EXIT
$go test -count=1 -timeout 5m ./...
# Coverage is measured on pkg/driver alone, in a second run of its tests
# (under a second): the run above then builds as go build and go vet do,
# sharing their cache, and reports no package that has no tests.
$go test -count=1 -timeout 5m -coverprofile="$profile" ./pkg/driver
echo
# A block listed more than once counts once, as covered if any run
# covered it.
awk -v module="$module/" -v floor="$floor" -v files="${files[*]}" '
	NR == 1 { next }
	{ stmts[$1] = $2; if ($3 > 0) hit[$1] = 1 }
	END {
		n = split(files, want, " ")
		for (b in stmts) {
			f = b; sub(/:.*/, "", f); sub("^" module, "", f)
			total[f] += stmts[b]; if (b in hit) covered[f] += stmts[b]
		}
		bad = 0
		for (i = 1; i <= n; i++) {
			f = want[i]; pct = total[f] ? 100 * covered[f] / total[f] : 0
			printf "coverage of %s: %.1f%% of statements (floor %d%%)\n", f, pct, floor
			if (pct < floor) bad = 1
		}
		exit bad
	}' "$profile" || { echo "test-unit: coverage below the floor" >&2; exit 1; }
