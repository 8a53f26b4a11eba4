# Shared by the ci/ scripts: install Debian packages and bale's virtualenv.
# The venv lives in /opt/bale/venv (world-readable) and uses Debian's python3,
# so the unprivileged test user can run bale too.
set -euo pipefail
VENV=${BALE_VENV:-/opt/bale/venv}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    local missing=()
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "ci: installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

make_venv() {  # make_venv [EXTRAS]
    local extras=${1:-}
    if [ ! -x "$VENV/bin/python" ]; then
        as_root mkdir -p "$(dirname "$VENV")"
        as_root /usr/bin/python3 -m venv "$VENV"
    fi
    as_root "$VENV/bin/pip" install -q --upgrade "$REPO${extras:+[$extras]}"
    as_root ln -sf "$VENV/bin/bale" /usr/local/bin/bale
}

# Runtime needs: newuidmap/newgidmap, fuse-overlayfs fallback, venv for Debian's python.
RUNTIME_PKGS=(python3 python3-venv uidmap fuse-overlayfs ca-certificates runc git proot)
# Test needs: procps (pgrep/ps in the sandbox tests), libcap2-bin (capsh: root without CAP_SYS_ADMIN), a real registry, independent readers, a static busybox for base images.
TEST_PKGS=(procps libcap2-bin docker-registry apache2-utils busybox-static skopeo podman umoci runc slirp4netns debootstrap git gcc libc6-dev buildah python3-yaml xz-utils zstd)
# ci/bench.py only (not the tests): the builder it compares with, and the reference tools.
BENCH_PKGS=(buildah zstd docker-registry hyperfine)
