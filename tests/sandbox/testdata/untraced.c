/* clone(CLONE_UNTRACED): a child its parent's tracer (proot) would not trace. Prints
 * "untraced-clone=<pid or -1> errno=<errno>"; a child that was made sleeps 600 s (argv[1], a token
 * the test looks for, stays in its command line). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    long pid = syscall(SYS_clone, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
        setsid();
        struct timespec t = {600, 0};
        nanosleep(&t, 0);
        _exit(0);
    }
    printf("untraced-clone=%ld errno=%d\n", pid, pid < 0 ? errno : 0);
    fflush(stdout);
    return 0;
}
