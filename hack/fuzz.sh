#!/usr/bin/env bash
# Fuzzes every Fuzz target under pkg/ and api/ for a bounded time each.
#
#   FUZZTIME      how long each target runs (go test -fuzztime; default 10s)
#   FUZZPARALLEL  fuzzing workers per target (go test -parallel; default
#                 GOMAXPROCS)
#   FUZZPKGS      packages to look in (default ./pkg/... ./api/...)
#
# `go test -fuzz` takes one package and one target at a time, so the
# targets are listed first (go test -list) and run one after another. A
# target that fails leaves its input in the package's testdata/fuzz/, where
# it becomes part of the seed corpus that `go test` runs from then on:
# commit it with the fix. The seed corpora also run in the unit tier as
# ordinary tests; this only adds the search for new inputs.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-10s}
read -r -a pkgs <<<"${FUZZPKGS:-./pkg/... ./api/...}"
parallel=()
if [[ -n ${FUZZPARALLEL:-} ]]; then
	parallel=(-parallel "$FUZZPARALLEL")
fi

# go test -list prints a package's matching names, then "ok <package>".
list=$(go test -run '^$' -list '^Fuzz' "${pkgs[@]}") || {
	echo "$list"
	echo "fuzz: listing the targets failed" >&2
	exit 1
}
targets=()
names=()
while read -r first second _; do
	case $first in
	Fuzz*) names+=("$first") ;;
	ok)
		for n in "${names[@]}"; do targets+=("$second $n"); done
		names=()
		;;
	esac
done <<<"$list"
if [[ ${#targets[@]} -eq 0 ]]; then
	echo "fuzz: no Fuzz targets in ${pkgs[*]}" >&2
	exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
failed=0
start=$(now)
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	t0=$(now)
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "${parallel[@]}" "$pkg" >"$log" 2>&1; then
		result=ok
	else
		result=FAIL
		failed=$((failed + 1))
	fi
	printf '%-4s %-50s %-28s %6ss\n' "$result" "$pkg" "$name" "$(since "$t0")"
	if [[ $result == FAIL ]]; then
		sed 's/^/     | /' "$log" | tail -n 40
	fi
done
printf 'fuzz: %d targets, %d failed, %ss in all (FUZZTIME=%s each)\n' \
	"${#targets[@]}" "$failed" "$(since "$start")" "$FUZZTIME"
[[ $failed -eq 0 ]]
