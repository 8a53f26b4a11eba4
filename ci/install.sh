#!/usr/bin/env bash
# Install bale and what it needs at run time, then build examples/hello offline.
source "$(dirname "$0")/lib.sh"
apt_install "${RUNTIME_PKGS[@]}" busybox-static
make_venv
bash "$REPO/ci/example.sh"
