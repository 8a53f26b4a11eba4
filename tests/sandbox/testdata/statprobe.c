/* Stat calls a RUN makes, each way the x86_64 kernel offers (tests/sandbox/test_ptrace_stat.py): stat, lstat,
 * fstat and newfstatat as raw system calls (path, AT_SYMLINK_NOFOLLOW, a directory fd, AT_EMPTY_PATH with ""
 * and with NULL), on files with recorded owners, a symlink, a fifo, a pipe and /dev/null; paths naming the
 * host outside the rootfs; and hostile pointers (an unmapped stat buffer, an unmapped path). Prints one line
 * per call, "NAME UID:GID MODE" or "NAME error ERRNO-NAME"; argv[1]: a host path outside the rootfs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *name(int e) {
    switch (e) {
    case ENOENT: return "ENOENT";
    case EFAULT: return "EFAULT";
    case ENOTDIR: return "ENOTDIR";
    case ELOOP: return "ELOOP";
    case EACCES: return "EACCES";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    default: return "other";
    }
}

static void show(const char *what, long rc, const struct stat *st) {
    if (rc < 0) printf("%s error %s\n", what, name(errno));
    else printf("%s %u:%u %o\n", what, st->st_uid, st->st_gid, st->st_mode);
}

int main(int argc, char **argv) {
    struct stat st;
    setvbuf(stdout, NULL, _IONBF, 0);
    show("stat", syscall(SYS_stat, "/c", &st), &st);
    show("lstat-link", syscall(SYS_lstat, "/lnk", &st), &st);
    show("stat-link", syscall(SYS_stat, "/lnk", &st), &st);
    show("lstat-fifo", syscall(SYS_lstat, "/fifo", &st), &st);
    int fd = open("/c", O_RDONLY);
    show("fstat", syscall(SYS_fstat, fd, &st), &st);
    show("fstatat-empty", syscall(SYS_newfstatat, fd, "", &st, AT_EMPTY_PATH), &st);
    show("fstatat-null", syscall(SYS_newfstatat, fd, NULL, &st, AT_EMPTY_PATH), &st);
    close(fd);
    int dir = open("/d", O_RDONLY | O_DIRECTORY);
    show("fstatat-dirfd", syscall(SYS_newfstatat, dir, "e", &st, 0), &st);
    close(dir);
    fd = open("/fifo", O_PATH);
    show("fstat-opath-fifo", syscall(SYS_fstat, fd, &st), &st);
    close(fd);
    int p[2];
    if (pipe(p) == 0) show("fstat-pipe", syscall(SYS_fstat, p[0], &st), &st);
    fd = open("/dev/null", O_RDONLY);
    show("fstat-devnull", syscall(SYS_fstat, fd, &st), &st);
    show("fstat-badfd", syscall(SYS_fstat, 999, &st), &st);
    show("stat-missing", syscall(SYS_stat, "/nonexistent", &st), &st);
    show("stat-notdir", syscall(SYS_stat, "/c/x", &st), &st);
    show("stat-dotdot", syscall(SYS_stat, "/tmp/../../../etc/passwd", &st), &st);
    if (argc > 1) show("stat-host", syscall(SYS_stat, argv[1], &st), &st);
    char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(page, 4096);
    show("efault-buffer", syscall(SYS_stat, "/c", (struct stat *)page), &st);
    show("efault-path", syscall(SYS_stat, page, &st), &st);
    show("efault-fstat", syscall(SYS_fstat, 0, (struct stat *)page), &st);
    show("after", syscall(SYS_stat, "/c", &st), &st);
    return 0;
}
