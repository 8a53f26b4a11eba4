"""Write containerd's RuntimeDefault seccomp profile for amd64 as the JSON podman reads, from
containerd's own generator (contrib/seccomp/seccomp_default.go, DefaultProfile).

Usage: python -m tests.sandbox.gen_containerd_seccomp GIT_DIR OUT.json
(GIT_DIR: a clone of github.com/containerd/containerd; its HEAD commit goes in the header).

DefaultProfile builds the rules in Go, some of them conditional: on the kernel (>= 4.8: ptrace,
process_vm_*), on GOARCH (amd64 taken here, other arches dropped), on each capability in the
container's bounding set (``case "CAP_...":``) and on CAP_SYS_ADMIN being absent (``if !admin``:
clone without namespace flags, clone3 -> ENOSYS). Podman's profile format (Docker's) expresses
those as ``includes``/``excludes`` with ``caps`` and ``minKernel``, so one file behaves as
containerd's profile for whatever capabilities the container is given, as CRI's RuntimeDefault does
(containerd generates the profile from the spec after the capabilities are set)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

SOURCE = "contrib/seccomp/seccomp_default.go"
CONST = {
    "unix.AF_ALG": 38, "unix.AF_VSOCK": 40,
    "unix.CLONE_NEWNS": 0x20000, "unix.CLONE_NEWUTS": 0x4000000, "unix.CLONE_NEWIPC": 0x8000000,
    "unix.CLONE_NEWUSER": 0x10000000, "unix.CLONE_NEWPID": 0x20000000, "unix.CLONE_NEWNET": 0x40000000,
    "unix.CLONE_NEWCGROUP": 0x2000000,
}
OPS = {"OpLessThan": "SCMP_CMP_LT", "OpEqualTo": "SCMP_CMP_EQ", "OpGreaterThan": "SCMP_CMP_GT",
       "OpMaskedEqual": "SCMP_CMP_MASKED_EQ", "OpNotEqual": "SCMP_CMP_NE", "OpGreaterEqual": "SCMP_CMP_GE",
       "OpLessEqual": "SCMP_CMP_LE"}
ACTIONS = {"ActAllow": "SCMP_ACT_ALLOW", "ActErrno": "SCMP_ACT_ERRNO"}
ARCHES = {"ArchX86_64": "SCMP_ARCH_X86_64", "ArchX86": "SCMP_ARCH_X86", "ArchX32": "SCMP_ARCH_X32"}


def _value(expr: str) -> int:
    total = 0
    for alt in expr.split("|"):
        part = 0
        for term in alt.split("+"):
            t = term.strip()
            part += CONST[t] if t in CONST else int(t, 0)
        total |= part
    return total


def _strip_comments(src: str) -> str:
    return re.sub(r"//[^\n]*", "", src)


def _rules(body: str) -> list[tuple[int, dict[str, Any]]]:
    """(offset, rule) for every LinuxSyscall literal: from one 'Names:' to the next."""
    starts = [m.start() for m in re.finditer(r"\bNames:", body)]
    out = []
    for i, at in enumerate(starts):
        chunk = body[at:starts[i + 1] if i + 1 < len(starts) else len(body)]
        names = re.findall(r'"([a-z0-9_]+)"', re.match(r"Names:\s*\[\]string\{([^}]*)\}", chunk).group(1))  # type: ignore[union-attr]
        action = ACTIONS[re.search(r"Action:\s*specs\.(\w+)", chunk).group(1)]  # type: ignore[union-attr]
        rule: dict[str, Any] = {"names": names, "action": action, "args": []}
        for a in re.finditer(r"\{\s*Index:\s*(\d+),\s*Value:\s*([^,]+),\s*(?:ValueTwo:\s*([^,]+),\s*)?"
                             r"Op:\s*specs\.(\w+),?\s*\}", chunk):
            rule["args"].append({"index": int(a.group(1)), "value": _value(a.group(2)),
                                 "valueTwo": _value(a.group(3)) if a.group(3) else 0, "op": OPS[a.group(4)]})
        if re.search(r"ErrnoRet:\s*&nosys", chunk):
            rule["errnoRet"] = 38  # ENOSYS
        out.append((at, rule))
    return out


def profile(src: str) -> dict[str, Any]:
    """The amd64 profile (Docker/podman JSON) DefaultProfile describes."""
    body = _strip_comments(src[src.index("func DefaultProfile"):])
    arch_fn = _strip_comments(src[src.index("func arches"):src.index("func DefaultProfile")])
    amd64 = re.search(r'case "amd64":\s*return \[\]specs\.Arch\{([^}]*)\}', arch_fn).group(1)  # type: ignore[union-attr]
    kernel = body.index("kernelversion.GreaterEqualThan")
    minkernel = re.search(r"Kernel:\s*(\d+),\s*Major:\s*(\d+)", body[kernel:]).group(0)  # type: ignore[union-attr]
    kmaj, kmin = re.findall(r"\d+", minkernel)
    arch_switch = body.index("switch runtime.GOARCH", kernel)
    caps_loop = body.index("for _, c := range sp.Process.Capabilities.Bounding")
    not_admin = body.index("if !admin")
    cases = [(m.start(), m.group(1)) for m in re.finditer(r'case ([^:]+):|default:', body)]

    def case_at(pos: int) -> str:
        last = "default"
        for at, label in cases:
            if at < pos:
                last = label or "default"
        return last

    rules = []
    for at, rule in _rules(body):
        if at < kernel:
            pass
        elif at < arch_switch:
            rule["includes"] = {"minKernel": f"{kmaj}.{kmin}"}
        elif at < caps_loop:
            if '"amd64"' not in case_at(at).split(", "):
                continue
        elif at < not_admin:
            rule["includes"] = {"caps": [case_at(at).strip('"')]}
        else:
            if "s390" in case_at(at):  # the s390 clone rule (its flags are argument 1)
                continue
            rule["excludes"] = {"caps": ["CAP_SYS_ADMIN"]}
        if not rule["args"]:
            del rule["args"]
        rules.append(rule)
    return {
        "defaultAction": ACTIONS[re.search(r"DefaultAction:\s*specs\.(\w+)", body).group(1)],  # type: ignore[union-attr]
        "defaultErrnoRet": 1,  # runc's errno for SCMP_ACT_ERRNO without one: EPERM
        "architectures": [ARCHES[a.strip().removeprefix("specs.")] for a in amd64.split(",") if a.strip()],
        "syscalls": rules,
    }


def main(git_dir: str, out: str) -> None:
    commit = subprocess.run(["git", "-C", git_dir, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    src = subprocess.run(["git", "-C", git_dir, "show", f"HEAD:{SOURCE}"], check=True, capture_output=True,
                         text=True).stdout
    prof = {"comment": f"containerd's RuntimeDefault seccomp profile for amd64, generated by "
                       f"tests/sandbox/gen_containerd_seccomp.py from github.com/containerd/containerd {SOURCE} "
                       f"at commit {commit} (DefaultProfile; Apache-2.0). Capability-conditional rules are "
                       f"'includes'/'excludes' caps, the kernel >= 4.8 rule 'minKernel', as podman evaluates them.",
            **profile(src)}
    with open(out, "w") as fh:
        json.dump(prof, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
