/* A RUN's first process making its parent its tracer (PTRACE_TRACEME), then raising a signal it
 * handles: with a parent that does not hand the stop back, the RUN stays stopped or its parent
 * sees a stopped child. Prints "traceme=<ptrace's answer>" and, once the signal is handled,
 * "handled". */
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <unistd.h>

static volatile sig_atomic_t got;

static void on_usr1(int sig) { got = sig; }

int main(void) {
    signal(SIGUSR1, on_usr1);
    long r = ptrace(PTRACE_TRACEME, 0, 0, 0);
    printf("traceme=%ld\n", r);
    fflush(stdout);
    raise(SIGUSR1);
    raise(SIGUSR1);
    if (got)
        printf("handled\n");
    return 0;
}
