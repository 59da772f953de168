#!/usr/bin/env bash
# make verify-generate: regenerates everything `make generate` makes and
# fails if the result differs from what is committed, or adds a file,
# under the generated paths. Run on a clean checkout (CI's is); on a
# working tree, uncommitted edits to those paths count as differences.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(api deploy/base/crds pkg/zfsd/api)
make --no-print-directory generate >/dev/null
rc=0
if ! git diff --exit-code --stat -- "${paths[@]}"; then
	echo "verify-generate: the files above differ from what make generate gives; run it and commit the result" >&2
	rc=1
fi
untracked=$(git ls-files --others --exclude-standard -- "${paths[@]}")
if [ -n "$untracked" ]; then
	echo "verify-generate: make generate made files that are not committed:" >&2
	echo "$untracked" >&2
	rc=1
fi
exit $rc
