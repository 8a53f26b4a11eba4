/* Break-out attempts for the hostile RUN suite (tests/sandbox/test_hostile_run.py), built static.
 * Each prints "ESCAPED <what>" when it got through, "held <what>: <why>" when it did not, and
 * exits 0 either way: the test reads the lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void held(const char *what) { printf("held %s: %s\n", what, strerror(errno)); }

static void try_read(const char *what, const char *path, const char *needle) {
    char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0) { held(what); return; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) { held(what); return; }
    buf[n] = 0;
    if (!needle || strstr(buf, needle)) printf("ESCAPED %s: %s\n", what, path);
    else printf("held %s: read something else\n", what);
}

/* openat2(2): a call proot 5.1 does not translate, so under the ptrace isolation it names the
 * pod's own file system; only the filter (ENOSYS) and Landlock stand in the way */
static void try_openat2(const char *planted, const char *needle) {
    unsigned long long how[3] = {O_RDONLY, 0, 0};  /* struct open_how: flags, mode, resolve */
    char buf[4096];
    long fd = syscall(437, AT_FDCWD, planted, how, sizeof how);
    if (fd < 0) { held("openat2"); return; }
    ssize_t n = read((int)fd, buf, sizeof buf - 1);
    close((int)fd);
    if (n < 0) { held("openat2"); return; }
    buf[n] = 0;
    if (!needle || strstr(buf, needle)) printf("ESCAPED openat2: %s\n", planted);
    else printf("held openat2: read something else\n");
}

/* mkdir x; chroot x; chdir .. x64; chroot . : the classic escape from a chroot (not from pivot_root) */
static void chroot_twice(const char *planted, const char *needle) {
    mkdir("/.hostile-x", 0755);
    if (chroot("/.hostile-x") != 0) { held("chroot"); return; }
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0) { held("chroot ."); return; }
    try_read("chroot twice", planted, needle);
}

int main(int argc, char **argv) {
    const char *planted = argc > 1 ? argv[1] : "/nonexistent";
    const char *needle = argc > 2 ? argv[2] : NULL;
    setvbuf(stdout, NULL, _IONBF, 0);
    try_read("planted file", planted, needle);
    char p[4200];
    snprintf(p, sizeof p, "/proc/1/root%s", planted);
    try_read("/proc/1/root", p, needle);
    pid_t parent = getppid();
    if (parent > 1) {
        snprintf(p, sizeof p, "/proc/%d/root%s", (int)parent, planted);
        try_read("/proc/PPID/root", p, needle);
    }
    if (mount("none", "/mnt", "tmpfs", 0, NULL) == 0) puts("ESCAPED mount"); else held("mount");
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0) {
        if (mount("none", "/mnt", "tmpfs", 0, NULL) == 0) puts("ESCAPED unshare+mount (in its own namespace)");
        else held("mount after unshare");
    } else held("unshare");
    if (syscall(SYS_setns, 0, 0) == 0) puts("ESCAPED setns"); else held("setns");
    if (syscall(SYS_pivot_root, ".", ".") == 0) puts("ESCAPED pivot_root"); else held("pivot_root");
    if (parent > 1) {
        if (ptrace(PTRACE_ATTACH, parent, 0, 0) == 0) { puts("ESCAPED ptrace parent"); ptrace(PTRACE_DETACH, parent, 0, 0); }
        else held("ptrace parent");
    }
    pid_t child = fork();
    if (child == 0) { pause(); _exit(0); }
    if (child > 0) {  /* ptrace of a process of its own: refused in chroot isolation, allowed elsewhere */
        if (ptrace(PTRACE_ATTACH, child, 0, 0) == 0) { puts("note ptrace own child allowed"); ptrace(PTRACE_DETACH, child, 0, 0); }
        else held("ptrace own child");
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    try_openat2(planted, needle);
    chroot_twice(planted, needle);
    return 0;
}
