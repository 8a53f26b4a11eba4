#!/usr/bin/env bash
# A real build, offline: make a busybox base image from Debian's busybox-static,
# build examples/hello with `bale bud`, and write it as an OCI layout.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/bale-example.XXXXXX)
trap 'rm -rf "$work"' EXIT
export BALE_ROOT=${BALE_ROOT:-$work/store}
python3 "$REPO/examples/make-busybox-image.py" "$work/busybox-layout"
bale tag "$(bale pull --quiet oci:"$work/busybox-layout":latest)" busybox
bale bud -f "$REPO/examples/hello/Dockerfile" -t hello "$REPO/examples/hello"
bale push hello oci:"$work/hello-layout":latest
bale inspect --type manifest oci:"$work/hello-layout":latest
echo "example: built hello, written to an OCI layout"
