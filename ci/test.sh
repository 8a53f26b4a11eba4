#!/usr/bin/env bash
# Install everything the test suite needs, then run the whole suite.
source "$(dirname "$0")/lib.sh"
apt_install "${RUNTIME_PKGS[@]}" "${TEST_PKGS[@]}"
make_venv test
cd "$REPO"
"$VENV/bin/python" -m mypy  # --strict over builder/, frontend/, snapshotter/, bale/ (pyproject [tool.mypy])
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider -n "${BALE_TEST_JOBS:-2}" --timeout 900 "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "ci: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
