/* Owner-changing calls a RUN makes, each way the kernel offers (tests/sandbox/test_ptrace.py):
 * fchown on an fd, fchownat with AT_EMPTY_PATH, fchownat relative to a directory fd, lchown on a
 * symlink, chown through a symlink, chown of a set-uid file; then setting bale's record xattr
 * (must be refused) and another user xattr (must work). Prints one line per call; exit 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static void say(const char *what, int rc) { printf("%s %s\n", what, rc == 0 ? "ok" : strerror(errno)); }

static int make(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) { if (write(fd, "x\n", 2) != 2) perror(path); }
    return fd;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int fd = make("/o-fchown");
    say("fchown", fchown(fd, 21, 22));
    close(fd);
    fd = make("/o-empty");
    say("fchownat-empty", fchownat(fd, "", 23, 24, AT_EMPTY_PATH));
    close(fd);
    mkdir("/o-dir", 0755);
    close(make("/o-dir/rel"));
    int dfd = open("/o-dir", O_RDONLY | O_DIRECTORY);
    say("fchownat-dirfd", fchownat(dfd, "rel", 25, 26, 0));
    close(dfd);
    close(make("/o-target"));
    symlink("o-target", "/o-link");
    say("lchown", lchown("/o-link", 27, 28));
    say("chown-through-link", chown("/o-link", 29, 30));
    close(make("/o-suid"));
    chmod("/o-suid", 04755);
    say("chown-suid", chown("/o-suid", 31, -1));
    close(make("/o-xattr"));
    setxattr("/o-xattr", "user.bale.owner", "5:5", 3, 0);  /* refused (or faked by proot): no record */
    say("setxattr-user", setxattr("/o-xattr", "user.note", "hi", 2, 0));
    return 0;
}
