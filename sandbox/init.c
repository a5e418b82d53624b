/*
 * studyhall sandbox init: process 1 of every sandbox (bwrap --as-pid-1), built once per machine.
 *
 * bubblewrap starts it inside the fresh namespaces, already unprivileged and under seccomp, before a
 * run is asked for (the "warm" sandbox). It then talks to the server over one SOCK_SEQPACKET socket
 * whose number is its only argument:
 *
 *   init -> server  "R"                       ready: namespaces, mounts and seccomp are in place
 *   server -> init  go message, with the run's stdin as an SCM_RIGHTS file descriptor:
 *                   NUL-terminated fields  "L<resource> <soft> <hard>"  (setrlimit, repeatable)
 *                                          "E<NAME=value>"              (environment, repeatable)
 *                                          "C<directory>"               (working directory)
 *                                          "A<argument>"                (argv, at least one)
 *   init -> server  "X <wait status> <wall us> <user us> <system us> <max rss KiB>"  when the program ends
 *              or   "F <errno> <step>"         when the program could not be started
 *
 * Started as `init launch UID GID [--cgroup FILE]... PROGRAM ARGS...` (by root, outside any sandbox) it
 * is instead the launcher of bubblewrap: it moves itself into the cgroups whose `cgroup.procs` FILEs are
 * named (the slot's: bubblewrap then creates the sandbox's cgroup namespace there, so that inside,
 * /proc/self/cgroup shows "/" and names nothing of the host), drops every group and switches to the
 * sandbox user for good, then execs PROGRAM. The server starts it with vfork (no copy of its own page
 * tables, which a fork that switched user itself would need), so preparing a sandbox costs the server
 * almost nothing.
 *
 * It forks the program, reaps every process that gets re-parented to it, and exits as soon as the
 * program itself has ended: being process 1, its exit makes the kernel kill whatever the program
 * left behind in the PID namespace. Unlike bwrap's own reaper it reports the exact wait status, so
 * a program that calls exit(137) is not mistaken for one killed by SIGKILL. Signals sent from inside
 * the namespace do not reach it (process 1 has no handlers), and it makes itself non-dumpable so
 * the program cannot read or write its memory through /proc/1/mem.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGE 65536
#define MAX_FIELDS 1024

static int ctrl = -1;

static void say(const char *text) {
    if (send(ctrl, text, strlen(text), MSG_NOSIGNAL) < 0) _exit(3);
}

static long long micros(const struct timespec *t) { return (long long)t->tv_sec * 1000000 + t->tv_nsec / 1000; }

static long long tv_micros(const struct timeval *t) { return (long long)t->tv_sec * 1000000 + t->tv_usec; }

static int resource_of(const char *name) {
    static const struct { const char *name; int resource; } table[] = {
        {"CPU", RLIMIT_CPU},       {"FSIZE", RLIMIT_FSIZE}, {"NOFILE", RLIMIT_NOFILE},
        {"NPROC", RLIMIT_NPROC},   {"AS", RLIMIT_AS},       {"STACK", RLIMIT_STACK},
        {"CORE", RLIMIT_CORE},     {"MEMLOCK", RLIMIT_MEMLOCK}, {"MSGQUEUE", RLIMIT_MSGQUEUE},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0) return table[i].resource;
    return -1;
}

/* Runs in the forked child: apply the go message, then exec. Failures go to `report` as "errno step". */
static void start_program(char **fields, int count, int stdin_fd, int report) {
    char *argv[MAX_FIELDS + 1];
    char *envp[MAX_FIELDS + 1];
    int argc = 0, envc = 0;
    const char *dir = "/";
    const char *step = "message";
    for (int i = 0; i < count; i++) {
        char *f = fields[i];
        if (f[0] == 'L') {
            char name[16];
            unsigned long long soft, hard;
            step = "setrlimit";
            if (sscanf(f + 1, "%15s %llu %llu", name, &soft, &hard) != 3 || resource_of(name) < 0) goto fail;
            struct rlimit limit = {(rlim_t)soft, (rlim_t)hard}; /* 2^64-1 is RLIM_INFINITY */
            if (setrlimit(resource_of(name), &limit) != 0) goto fail;
        } else if (f[0] == 'E') {
            envp[envc++] = f + 1;
        } else if (f[0] == 'C') {
            dir = f + 1;
        } else if (f[0] == 'A') {
            argv[argc++] = f + 1;
        }
    }
    argv[argc] = NULL;
    envp[envc] = NULL;
    step = "message";
    if (argc == 0) { errno = EINVAL; goto fail; }
    step = "stdin";
    if (stdin_fd >= 0) {
        if (dup2(stdin_fd, 0) < 0) goto fail;
        close(stdin_fd);
    }
    step = "chdir";
    if (chdir(dir) != 0) goto fail;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    step = "exec";
    execve(argv[0], argv, envp);
fail:;
    char line[64];
    int n = snprintf(line, sizeof line, "%d %s", errno, step);
    if (write(report, line, (size_t)n) < 0) _exit(126);
    _exit(127);
}

/* Moves the calling process into the cgroup whose cgroup.procs file is `path`. */
static int join_cgroup(const char *path) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
    ssize_t written = write(fd, pid, (size_t)n);
    close(fd);
    return written == n ? 0 : -1;
}

static int launch(int argc, char **argv) {
    if (argc < 5) return 2;
    uid_t uid = (uid_t)strtoul(argv[2], NULL, 10);
    gid_t gid = (gid_t)strtoul(argv[3], NULL, 10);
    if (uid == 0 || gid == 0) return 2;
    int program = 4;
    while (program + 1 < argc && strcmp(argv[program], "--cgroup") == 0) {
        if (join_cgroup(argv[program + 1]) != 0) {
            perror("init launch: cannot join the slot's cgroup");
            return 2;
        }
        program += 2;
    }
    if (program >= argc) return 2;
    if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) {
        perror("init launch: cannot switch to the sandbox user");
        return 2;
    }
    if (getuid() != uid || geteuid() != uid || getgid() != gid || setuid(0) == 0) return 2;
    execv(argv[program], argv + program);
    perror("init launch: cannot start bubblewrap");
    return 2;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "launch") == 0) return launch(argc, argv);
    if (argc != 2) return 2;
    ctrl = atoi(argv[1]);
    if (fcntl(ctrl, F_SETFD, FD_CLOEXEC) != 0) return 2;
    prctl(PR_SET_DUMPABLE, 0);
    say("R");

    static char message[MAX_MESSAGE + 1];
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {message, MAX_MESSAGE};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t size = recvmsg(ctrl, &msg, MSG_CMSG_CLOEXEC);
    if (size <= 0) return 0; /* the server went away before asking for a run */
    message[size] = '\0';
    int stdin_fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&stdin_fd, CMSG_DATA(c), sizeof(int));

    char *fields[MAX_FIELDS];
    int count = 0;
    for (char *p = message; p < message + size && count < MAX_FIELDS; p += strlen(p) + 1) fields[count++] = p;

    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return 4;
    struct timespec started, ended;
    clock_gettime(CLOCK_MONOTONIC, &started);
    pid_t child = fork();
    if (child < 0) {
        char line[64];
        snprintf(line, sizeof line, "F %d fork", errno);
        say(line);
        return 0;
    }
    if (child == 0) {
        close(report[0]);
        start_program(fields, count, stdin_fd, report[1]);
    }
    close(report[1]);
    if (stdin_fd >= 0) close(stdin_fd);
    char failure[64] = {0};
    ssize_t got = read(report[0], failure, sizeof failure - 1);
    close(report[0]);

    int status = 0;
    struct rusage usage = {0};
    for (;;) {
        int st;
        struct rusage ru;
        pid_t pid = wait4(-1, &st, 0, &ru);
        if (pid == child) {
            status = st;
            usage = ru;
            break;
        }
        if (pid < 0 && errno != EINTR) break;
    }
    clock_gettime(CLOCK_MONOTONIC, &ended);
    char line[160];
    if (got > 0) {
        snprintf(line, sizeof line, "F %s", failure);
    } else {
        snprintf(line, sizeof line, "X %d %lld %lld %lld %ld", status, micros(&ended) - micros(&started),
                 tv_micros(&usage.ru_utime), tv_micros(&usage.ru_stime), usage.ru_maxrss);
    }
    say(line);
    return 0;
}
