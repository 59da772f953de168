#!/usr/bin/env bash
# Prints the machine-wide cache folder for what the tests build once and
# reuse across clones (Kubernetes and sidecar binaries, the OpenZFS guest
# image, test tools): $DOTMESH_CACHE, else $XDG_CACHE_HOME/dotmesh-csi, else
# ~/.cache/dotmesh-csi. It lives outside the clone, so a fresh clone on a
# machine that built them before starts warm. Each entry is keyed by what
# built it (versions, a hash of its build script, the Go version), so a
# change to any of them builds afresh beside the old one.
set -euo pipefail
echo "${DOTMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dotmesh-csi}"
