"""Run a command under a seccomp filter, as a pod's runtime would: ``seccomp_wrap.py MODE CMD...``
(as root, so that the filter needs no no_new_privs; CMD is usually runuser to the test user).

MODE ``restricted``: no_new_privs and bale's own RUN filter (no unshare, no mount: what containerd's
RuntimeDefault leaves a process without CAP_SYS_ADMIN). MODE ``restricted-no-landlock``: the same on a
node whose kernel lacks Landlock (landlock_* give ENOSYS). MODE ``no-sethostname``: only sethostname
refused (EPERM), as some runtimes' default profiles do."""
import os
import sys

from builder.sandbox import kernel, seccomp


def main() -> None:
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "restricted":
        kernel.set_no_new_privs()
        seccomp.install()
    elif mode in ("no-sethostname", "restricted-no-landlock"):
        import ctypes
        import errno
        import struct
        if mode == "restricted-no-landlock":
            kernel.set_no_new_privs()
            seccomp.install()
            refused = [(444, errno.ENOSYS), (445, errno.ENOSYS), (446, errno.ENOSYS)]
        else:
            refused = [({"x86_64": 170, "aarch64": 161}[os.uname().machine], errno.EPERM)]
        prog = [seccomp._stmt(seccomp.LD_W_ABS, 0)]
        for nr, err in refused:
            prog += [seccomp._jump(seccomp.JEQ_K, nr, 0, 1), seccomp._stmt(seccomp.RET_K, seccomp.RET_ERRNO | err)]
        prog.append(seccomp._stmt(seccomp.RET_K, seccomp.RET_ALLOW))
        raw = b"".join(struct.pack("=HBBI", *i) for i in prog)
        buf = ctypes.create_string_buffer(raw, len(raw))

        class Fprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        fp = Fprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
        kernel._prctl(seccomp.PR_SET_SECCOMP, seccomp.SECCOMP_MODE_FILTER, "seccomp", ctypes.addressof(fp))
    else:
        raise SystemExit(f"unknown mode {mode}")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
