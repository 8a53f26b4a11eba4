"""Running programs of another architecture: the kernel's binfmt_misc with a QEMU user-mode
emulator (qemu-user-static registers ``qemu-ARCH`` handlers with the F flag, so the
interpreter is opened at registration and works inside a container's root).

``check_can_run(arch, variant)`` is called before a RUN (bud or ``bale run``) starts a
process in a root whose image architecture is not the host's; it raises BuildError in one
line naming the platform and the emulator that is missing. The handler names and the
OCI-architecture-to-QEMU mapping follow tonistiigi/binfmt (the emulators BuildKit installs)."""
from __future__ import annotations

import os
from pathlib import Path

from builder.errors import BuildError
from builder.image.oci import Platform

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

#: OCI architecture -> QEMU's name (tonistiigi/binfmt cmd/binfmt/config.go)
QEMU_ARCH = {"amd64": "x86_64", "386": "i386", "arm64": "aarch64", "arm": "arm", "ppc64le": "ppc64le",
             "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el", "mips64": "mips64",
             "mipsle": "mipsel", "mips": "mips", "loong64": "loongarch64"}

#: what a host runs natively besides its own architecture (32-bit compat modes)
NATIVE_COMPAT = {"amd64": {"386"}, "arm64": {"arm"}, "ppc64le": set(), "s390x": set()}


def runs_natively(arch: str, host: str | None = None) -> bool:
    """Whether ``arch`` (OCI name) executes on this host without an emulator."""
    host = host or Platform.host().architecture
    return not arch or arch == host or arch in NATIVE_COMPAT.get(host, set())


def registered_emulator(arch: str, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """The interpreter of an enabled binfmt_misc handler for ``arch``, or None."""
    qemu = QEMU_ARCH.get(arch, arch)
    try:
        entries = sorted(os.listdir(binfmt_dir))
    except OSError:
        return None
    for name in entries:
        if name in ("register", "status"):
            continue
        try:
            text = (binfmt_dir / name).read_text()
        except OSError:
            continue
        lines = text.splitlines()
        if not lines or lines[0].strip() != "enabled":
            continue
        interp = next((l.split(None, 1)[1] for l in lines if l.startswith("interpreter ")), "")
        base = os.path.basename(interp)
        if name == f"qemu-{qemu}" or base in (f"qemu-{qemu}", f"qemu-{qemu}-static", f"qemu-{qemu}-binfmt"):
            return interp or name
    return None


def check_can_run(arch: str, variant: str = "", binfmt_dir: Path = BINFMT_DIR) -> None:
    """Raise BuildError (one line) unless a process of ``arch`` can run here."""
    if runs_natively(arch) or registered_emulator(arch, binfmt_dir):
        return
    qemu = QEMU_ARCH.get(arch, arch)
    where = "binfmt_misc is not mounted" if not (binfmt_dir / "status").exists() else \
        f"no qemu-{qemu} handler is registered in {binfmt_dir}"
    plat = "linux/" + arch + (f"/{variant}" if variant else "")
    raise BuildError(f"RUN for {plat} on a {Platform.host().architecture} host needs the qemu-{qemu} emulator: "
                     f"{where} (install qemu-user-static, or run tonistiigi/binfmt --install {arch})")
