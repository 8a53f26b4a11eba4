"""Run a command as root that may create neither user namespaces nor mounts,
like root in a pod under a RuntimeDefault seccomp profile:

    python3 no_namespaces.py CMD...

The command runs in a user namespace mapping ids 0..65535 onto themselves,
in which max_user_namespaces is 0 (unshare(CLONE_NEWUSER) gives ENOSPC) and
CAP_SYS_ADMIN is dropped from the bounding set before exec (mount and
unshare(CLONE_NEWNS) give EPERM). chroot(2) and chown still work.
"""
import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000
PR_CAPBSET_DROP = 24
CAP_SYS_ADMIN = 21


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        if libc.unshare(CLONE_NEWUSER) != 0:
            os._exit(90)
        os.write(w, b"u")
        os.read(r2, 1)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        with open("/proc/sys/user/max_user_namespaces", "w") as fh:
            fh.write("0")
        if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) != 0:
            os._exit(91)
        os.execvp(argv[0], argv)
    os.read(r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as fh:
            fh.write("0 0 65536\n")
    os.write(w2, b"m")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
