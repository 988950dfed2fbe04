/*
 * exit_keeper: runs one job's program and writes how it ended to a status file, so that the record survives the
 * service itself (a crash, kill -9, an upgrade). The service starts it as
 *
 *     exit_keeper STATUS_PATH PROGRAM [ARGUMENT...]
 *
 * It forks, execs PROGRAM with the arguments untouched (no shell), waits for it with wait4(), and atomically
 * writes one line of JSON to STATUS_PATH (write to STATUS_PATH.tmp, fsync, rename):
 *
 *     {"program_pid":N,"exit_code":N|null,"signal":N|null,"exec_errno":N|null,"duration_ns":N,
 *      "finished_at_ns":N,"user_cpu_us":N,"system_cpu_us":N,"max_rss_kb":N}
 *
 * Before anything runs, the keeper waits for one byte on its standard input: the service sends it once the
 * attempt's pid is committed to the database. If the service dies first, the keeper reads end-of-file and exits
 * (124) without running the program, so a program never runs unrecorded. The program's stdin is /dev/null.
 *
 * The keeper leads the attempt's process group (the service starts it in a new session); it ignores the polite
 * termination signals so that a SIGTERM sent to the group reaches the program while the keeper stays to record the
 * result. The program gets those signals back at their defaults before exec. Until the program exists they are
 * blocked, not ignored, so one sent in that moment is not lost: the keeper passes it on to the program. The keeper exits with the program's
 * exit code, or 128 + the signal number; 124 means it was abandoned before the start, 125 that it failed itself.
 *
 * Kept small and dependency-free on purpose: it runs once per attempt (see service/runner/exit_keeper.py for the
 * Python twin used where no C compiler exists; both speak the same format).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEEPER_ABANDONED 124
#define KEEPER_FAILED 125

static const int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define FORWARDED_SIGNAL_COUNT (sizeof forwarded_signals / sizeof forwarded_signals[0])

static long long nanoseconds(const struct timespec *t) {
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static long long microseconds(const struct timeval *t) {
    return (long long)t->tv_sec * 1000000LL + t->tv_usec;
}

static int write_all(int fd, const char *buffer, size_t length) {
    while (length > 0) {
        ssize_t written = write(fd, buffer, length);
        if (written < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buffer += written;
        length -= (size_t)written;
    }
    return 0;
}

static int write_status_atomically(const char *status_path, const char *line) {
    char temporary_path[4096];
    if (snprintf(temporary_path, sizeof temporary_path, "%s.tmp", status_path) >= (int)sizeof temporary_path) {
        return -1;
    }
    int fd = open(temporary_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    if (write_all(fd, line, strlen(line)) != 0 || fsync(fd) != 0) {
        close(fd);
        return -1;
    }
    if (close(fd) != 0) return -1;
    return rename(temporary_path, status_path);
}

static void fill_forwarded_set(sigset_t *set) {
    sigemptyset(set);
    for (size_t i = 0; i < FORWARDED_SIGNAL_COUNT; i++) sigaddset(set, forwarded_signals[i]);
}

static void set_disposition(void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < FORWARDED_SIGNAL_COUNT; i++) sigaction(forwarded_signals[i], &action, NULL);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: exit_keeper STATUS_PATH PROGRAM [ARGUMENT...]\n");
        return KEEPER_FAILED;
    }
    const char *status_path = argv[1];

    sigset_t forwarded, original_mask;
    fill_forwarded_set(&forwarded);
    sigprocmask(SIG_BLOCK, &forwarded, &original_mask);

    char go_ahead;
    ssize_t go_length;
    do {
        go_length = read(STDIN_FILENO, &go_ahead, 1);
    } while (go_length < 0 && errno == EINTR);
    if (go_length != 1) return KEEPER_ABANDONED;
    int null_input = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_input < 0 || dup2(null_input, STDIN_FILENO) < 0) {
        perror("exit_keeper: /dev/null");
        return KEEPER_FAILED;
    }
    close(null_input);

    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);

    /* The child reports a failed exec through this pipe; a successful exec closes it (O_CLOEXEC) unwritten. */
    int exec_report[2];
    if (pipe2(exec_report, O_CLOEXEC) != 0) {
        perror("exit_keeper: pipe2");
        return KEEPER_FAILED;
    }

    pid_t child = fork();
    if (child < 0) {
        perror("exit_keeper: fork");
        return KEEPER_FAILED;
    }
    if (child == 0) {
        set_disposition(SIG_DFL);
        sigprocmask(SIG_SETMASK, &original_mask, NULL);
        close(exec_report[0]);
        execv(argv[2], &argv[2]);
        int exec_errno = errno;
        (void)write_all(exec_report[1], (const char *)&exec_errno, sizeof exec_errno);
        _exit(127);
    }
    close(exec_report[1]);

    /* A signal for the group that came before the program existed is pending here: pass it on, then ignore. */
    sigset_t pending;
    sigpending(&pending);
    for (size_t i = 0; i < FORWARDED_SIGNAL_COUNT; i++) {
        if (sigismember(&pending, forwarded_signals[i])) kill(child, forwarded_signals[i]);
    }
    set_disposition(SIG_IGN); /* discards what was pending for the keeper itself */
    sigprocmask(SIG_SETMASK, &original_mask, NULL);

    int exec_errno = 0;
    ssize_t report_length;
    do {
        report_length = read(exec_report[0], &exec_errno, sizeof exec_errno);
    } while (report_length < 0 && errno == EINTR);
    close(exec_report[0]);
    int exec_failed = report_length == (ssize_t)sizeof exec_errno;

    int status = 0;
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    pid_t reaped;
    do {
        reaped = wait4(child, &status, 0, &usage);
    } while (reaped < 0 && errno == EINTR);
    if (reaped < 0) {
        perror("exit_keeper: wait4");
        return KEEPER_FAILED;
    }

    struct timespec finished, finished_wall;
    clock_gettime(CLOCK_MONOTONIC, &finished);
    clock_gettime(CLOCK_REALTIME, &finished_wall);

    char exit_code[16] = "null", signal_number[16] = "null", errno_text[16] = "null";
    int keeper_exit;
    if (exec_failed) {
        snprintf(errno_text, sizeof errno_text, "%d", exec_errno);
        keeper_exit = 127;
    } else if (WIFEXITED(status)) {
        snprintf(exit_code, sizeof exit_code, "%d", WEXITSTATUS(status));
        keeper_exit = WEXITSTATUS(status);
    } else {
        snprintf(signal_number, sizeof signal_number, "%d", WTERMSIG(status));
        keeper_exit = 128 + WTERMSIG(status);
    }

    char line[512];
    snprintf(line, sizeof line,
             "{\"program_pid\":%d,\"exit_code\":%s,\"signal\":%s,\"exec_errno\":%s,\"duration_ns\":%lld,"
             "\"finished_at_ns\":%lld,\"user_cpu_us\":%lld,\"system_cpu_us\":%lld,\"max_rss_kb\":%ld}\n",
             (int)child, exit_code, signal_number, errno_text, nanoseconds(&finished) - nanoseconds(&started),
             nanoseconds(&finished_wall), microseconds(&usage.ru_utime), microseconds(&usage.ru_stime),
             usage.ru_maxrss);
    if (write_status_atomically(status_path, line) != 0) {
        perror("exit_keeper: writing the status file");
        return KEEPER_FAILED;
    }
    return keeper_exit;
}
