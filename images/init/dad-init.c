/*
 * dad-init: PID 1 of every dad-sandbox run container.
 *
 *   dad-init [--user UID:GID] [--deadline-fd] -- COMMAND [ARGS...]   deadline: env DAD_DEADLINE (epoch seconds)
 *
 * --deadline-fd (warm-pool containers, whose run is not known when they start): COMMAND gets the
 * write end of a pipe as fd 3 and may write ONE line "<epoch seconds>\n" there, which replaces the
 * deadline; the waiter does so when its run arrives and closes fd 3 before exec'ing the run, so the
 * run itself can never move its deadline (the pipe has no name, and dad-init's /proc entries are
 * closed to it). Anything after the first line, or a line that does not parse, is ignored.
 *
 * Why our own init instead of docker-init: the run's deadline must hold when no host process is
 * left to enforce it (supervisor SIGKILLed, host suspended and resumed). dad-init is the one
 * process in the container the run cannot stop:
 *   - as PID 1 of the container's pid namespace, the kernel drops every signal sent to it from
 *     inside the namespace unless it handles it, SIGKILL and SIGSTOP included; the signals it does
 *     handle only make it forward them to the run;
 *   - with --user, dad-init stays root (holding only the capabilities the container was given for
 *     it: SETUID, SETGID, SETPCAP, KILL) and runs COMMAND as UID:GID with an empty capability
 *     bounding set, so the run may not signal it at all (kill(2) needs a matching uid or CAP_KILL).
 *     Why this matters: gVisor does not give PID 1 the kernel's protection against SIGKILL and
 *     SIGSTOP from inside its namespace (measured: `kill -STOP 1` froze it), the uid check holds on
 *     both runtimes;
 *   - prctl(PR_SET_DUMPABLE, 0) keeps processes of the same uid from ptrace-attaching to it or
 *     reading /proc/1/mem (and the seccomp profile forbids ptrace anyway).
 * It starts COMMAND in its own process group, forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and
 * SIGUSR2 to that group, reaps every zombie, and exits with COMMAND's status (128+N if a signal N
 * killed it). It checks CLOCK_REALTIME at least every DAD_INIT_TICK_MS, so a machine that was
 * suspended past the deadline is caught at once on resume; at the deadline it SIGKILLs every
 * process in the container (kill(-1)) and exits with DEADLINE_EXIT (124, as timeout(1) does).
 *
 * Exit codes: COMMAND's own; 124 deadline passed; 125 bad usage or DAD_DEADLINE; 127 COMMAND
 * cannot be executed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_EXIT 124
#define USAGE_EXIT 125
#define EXEC_EXIT 127
#define DAD_INIT_TICK_MS 100

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

static void die(int code, const char *what) {
    fprintf(stderr, "dad-init: %s\n", what);
    exit(code);
}

static double now_realtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define DEADLINE_FD 3

/* Read what the pipe has; the first complete line sets the deadline, then the pipe is closed. */
static void poll_deadline_pipe(int *fd, double *deadline) {
    static char line[64];
    static size_t used = 0;
    for (;;) {
        char c;
        ssize_t n = read(*fd, &c, 1);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0 || used + 1 >= sizeof line) break; /* EOF, error or an over-long line: stop listening */
        if (c != '\n') {
            line[used++] = c;
            continue;
        }
        line[used] = '\0';
        char *end = NULL;
        errno = 0;
        double value = strtod(line, &end);
        if (errno == 0 && end != line && *end == '\0' && value > 0.0) *deadline = value;
        else fprintf(stderr, "dad-init: ignoring a deadline update that does not parse\n");
        break;
    }
    close(*fd);
    *fd = -1;
}

static double read_deadline(void) {
    const char *text = getenv("DAD_DEADLINE");
    if (text == NULL || *text == '\0') return 0.0; /* no deadline: only an init */
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || value <= 0.0) die(USAGE_EXIT, "DAD_DEADLINE must be epoch seconds");
    return value;
}

/* In the child, before exec: become UID:GID with no capability left to regain. Never returns on failure. */
static void drop_to(uid_t uid, gid_t gid) {
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
            fprintf(stderr, "dad-init: cannot drop capability %d: %s\n", cap, strerror(errno));
            _exit(USAGE_EXIT);
        }
    }
    if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        fprintf(stderr, "dad-init: cannot become %u:%u: %s\n", (unsigned)uid, (unsigned)gid, strerror(errno));
        _exit(USAGE_EXIT);
    }
    if (setuid(0) == 0) { /* must be impossible now */
        fprintf(stderr, "dad-init: still able to become root; refusing to run the command\n");
        _exit(USAGE_EXIT);
    }
}

int main(int argc, char **argv) {
    const int is_pid1 = getpid() == 1;
    if (!is_pid1) fprintf(stderr, "dad-init: warning: not PID 1; at the deadline only COMMAND's process group is killed\n");
    int first = 1, drop = 0, want_pipe = 0;
    unsigned long run_uid = 0, run_gid = 0;
    if (argc > 2 && strcmp(argv[1], "--user") == 0) {
        char *end = NULL;
        run_uid = strtoul(argv[2], &end, 10);
        if (end == argv[2] || *end != ':') die(USAGE_EXIT, "--user takes UID:GID");
        char *gid_text = end + 1;
        run_gid = strtoul(gid_text, &end, 10);
        if (end == gid_text || *end != '\0') die(USAGE_EXIT, "--user takes UID:GID");
        drop = 1;
        first = 3;
    }
    if (argc > first && strcmp(argv[first], "--deadline-fd") == 0) {
        want_pipe = 1;
        first++;
    }
    if (argc > first && strcmp(argv[first], "--") == 0) first++;
    if (first >= argc) die(USAGE_EXIT, "usage: dad-init -- COMMAND [ARGS...]");
    double deadline = read_deadline();
    unsetenv("DAD_DEADLINE");

    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die(USAGE_EXIT, "prctl(PR_SET_DUMPABLE) failed");

    /* Every signal blocked: they are taken synchronously with sigtimedwait below. */
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &all, NULL);

    int pipe_fds[2] = {-1, -1};
    if (want_pipe && pipe2(pipe_fds, O_CLOEXEC) != 0) die(USAGE_EXIT, "pipe2 failed");

    pid_t child = fork();
    if (child < 0) die(USAGE_EXIT, "fork failed");
    if (child == 0) {
        setpgid(0, 0);
        if (want_pipe) { /* the write end as fd 3, without O_CLOEXEC; the read end stays ours */
            if (dup2(pipe_fds[1], DEADLINE_FD) != DEADLINE_FD) _exit(USAGE_EXIT);
        }
        if (drop) drop_to((uid_t)run_uid, (gid_t)run_gid);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(argv[first], &argv[first]);
        fprintf(stderr, "dad-init: cannot run %s: %s\n", argv[first], strerror(errno));
        _exit(EXEC_EXIT);
    }
    setpgid(child, child); /* also here: no race with a signal forwarded before the child ran */
    int deadline_fd = -1;
    if (want_pipe) {
        close(pipe_fds[1]);
        deadline_fd = pipe_fds[0];
        fcntl(deadline_fd, F_SETFL, O_NONBLOCK);
    }

    struct timespec tick = {0, DAD_INIT_TICK_MS * 1000000L};
    for (;;) {
        if (deadline_fd >= 0) poll_deadline_pipe(&deadline_fd, &deadline);
        if (deadline > 0.0 && now_realtime() >= deadline) {
            fprintf(stderr, "dad-init: the run's deadline passed; killing every process of the run\n");
            /* kill(-1) means "every process of this pid namespace" only when we are its PID 1;
             * anywhere else it would reach every process the user may signal on the machine. */
            if (is_pid1) kill(-1, SIGKILL);
            else kill(-child, SIGKILL);
            exit(DEADLINE_EXIT);
        }
        siginfo_t info;
        int sig = sigtimedwait(&all, &info, &tick);
        if (sig < 0) continue; /* EAGAIN (tick) or EINTR: check the clock again */
        if (sig == SIGCHLD) {
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (pid != child) continue; /* an orphan re-parented to us: reaped, nothing else */
                if (WIFEXITED(status)) exit(WEXITSTATUS(status));
                if (WIFSIGNALED(status)) exit(128 + WTERMSIG(status));
            }
            continue;
        }
        for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
            if (sig == forwarded[i]) {
                kill(-child, sig);
                break;
            }
        }
    }
}
