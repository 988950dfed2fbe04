/*
 * exit_keeper: runs one job's program and writes how it ended to a status file, so that the record survives the
 * service itself (a crash, kill -9, an upgrade). The service starts it through the fork server (below), or as
 *
 *     exit_keeper [--output-limit=BYTES] [--output-tail=BYTES] [--memory-limit=BYTES] [--cpu-limit=SECONDS]
 *                 [--open-files-limit=COUNT] [--run-as=UID:GID[:GROUPS]] [--lease-file=PATH] STATUS_PATH PROGRAM
 *                 [ARGUMENT...]
 *
 * It forks, execs PROGRAM with the arguments untouched (no shell), waits for it with wait4(), and atomically
 * writes one line of JSON to STATUS_PATH (write to STATUS_PATH.tmp, fsync, rename):
 *
 *     {"program_pid":N,"exit_code":N|null,"signal":N|null,"exec_errno":N|null,"duration_ns":N,
 *      "finished_at_ns":N,"user_cpu_us":N,"system_cpu_us":N,"max_rss_kb":N,"stdout_bytes":N,"stderr_bytes":N,
 *      "privilege_errno":N|null}
 *
 * With --run-as, the program runs as that user and its groups (JOB_USER), or not at all: privilege_errno says why
 * the switch failed (see exit_keeper_user.h).
 *
 * Before anything runs, the keeper waits for one byte on its standard input: the service sends it once the
 * attempt's pid is committed to the database. If the service dies first, the keeper reads end-of-file and exits
 * (124) without running the program, so a program never runs unrecorded; it writes first, in the same way,
 *
 *     {"abandoned":true,"keeper_pid":N,"duration_ns":0,"finished_at_ns":N}
 *
 * so that the service can withdraw the attempt rather than count it (keeper_pid tells a stale file of an earlier
 * keeper from this one's). The program's stdin is /dev/null.
 *
 * Output. The keeper's own stdout and stderr are the attempt's output files. The program writes into two pipes
 * instead, and the keeper copies them into the files: up to --output-limit bytes each (unlimited when absent),
 * then a truncation marker; from there on it keeps reading (the program never blocks and never gets SIGPIPE
 * because of the limit) but keeps only the last --output-tail bytes in memory, which it appends, after a second
 * marker saying how much was left out, when the stream ends. So a file is never much larger than limit + tail, and
 * its end is always the true end of the program's output. The pipes belong to the keeper, not to the service: the
 * program does not notice a crash of the service. When the program has exited, the keeper copies what it left in
 * the pipes, writes the status file and exits; if processes the program started still hold the pipes open, a
 * forked copy of the keeper (a "drainer", in the same process group) goes on copying for them until they close.
 *
 * Limits. The program (not the keeper) runs under the resource limits given: --memory-limit sets RLIMIT_DATA (heap
 * and private writable mappings: what the program allocates, unlike RLIMIT_AS, which also counts mapped files,
 * shared libraries and address space merely reserved), --cpu-limit sets RLIMIT_CPU (SIGXCPU at that many seconds of
 * CPU, SIGKILL one second later for a program that ignores it), --open-files-limit sets RLIMIT_NOFILE. A limit
 * that cannot be set fails the start as a failed exec would: a program never runs with less protection than asked.
 *
 * The keeper leads the attempt's process group (the service starts it in a new session); it ignores the polite
 * termination signals so that a SIGTERM sent to the group reaches the program while the keeper stays to record the
 * result. The program gets those signals back at their defaults before exec. Until the program exists they are
 * blocked, not ignored, so one sent in that moment is not lost: the keeper passes it on to the program. The keeper
 * exits with the program's exit code, or 128 + the signal number; 124 means it was abandoned before the start, 125
 * that it failed itself.
 *
 * Lease (--lease-file). Where nodes share a database, a node whose lease lapses is declared dead by another and
 * its jobs run again there; its programs must be gone by then. The service writes into PATH, each time it renews
 * its lease, the wall-clock time (milliseconds since the epoch) until which its programs may run. While the program
 * runs (and while a drainer copies for what it left behind) the keeper reads the file every LEASE_CHECK_MS; once
 * that time has passed it notes it in the attempt's stderr file and SIGKILLs its whole process group, itself
 * included, writing no status: a service that could not renew its lease (frozen, cut off from the database, or
 * killed) records nothing for the attempt, and the node that declares it dead records it `lost`. A file that cannot
 * be read keeps the last time read; before any was read, nothing is ended.
 *
 * Fork server (exit_keeper --serve; the protocol is in exit_keeper_serve.h). Started once per service, it forks
 * one keeper per attempt on request, without an exec: the child becomes the keeper described above (its own
 * session, the output files it opens, the limits, the go-ahead, the status file) exactly as if the service had
 * spawned it with these options. Why: a spawn from the service costs its event loop a vfork it must wait in, the
 * descriptors it opens and closes, a pidfd to watch each exit and a look-up of the start time, and every job
 * pays a second exec (the keeper's). Here one small process does all that, for many attempts per message, and
 * reports the keepers' exits in batches (it is their parent and reaps them), with their start times.
 *
 * Who outlives whom. Every keeper leads its own session and does not depend on the server: it holds nothing of
 * the server's but the read end of its go-ahead pipe, whose write end only the server holds.
 *   - The server dies (kill -9): keepers already given their go-ahead run on (now children of init) and write their
 *     status files; those still waiting read end-of-file and exit abandoned, without running the program, as with
 *     a service that dies before a go-ahead. The service sees the socket close, watches the keepers it knew of
 *     through pidfds (as it watches keepers it adopted) and starts a new server; a start whose keeper it never
 *     learned of did not happen, and is taken back.
 *   - The service dies: the server reads end-of-file on its socket, closes every go-ahead not yet written (those
 *     keepers exit abandoned) and exits; the released keepers run on, and the next start of the service adopts
 *     them by pid and start time like any keeper it left behind.
 *
 * Kept small and dependency-free on purpose: it runs once per attempt (see service/runner/exit_keeper.py for the
 * Python twin used where no C compiler exists; both speak the same format).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exit_keeper_output.h"
#include "exit_keeper_user.h"

#define KEEPER_ABANDONED 124
#define KEEPER_FAILED 125
#define LEASE_CHECK_MS 250 /* service/domain/lease.py KEEPER_LEASE_CHECK_SECONDS: the lease margin covers it */

static const int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define FORWARDED_SIGNAL_COUNT (sizeof forwarded_signals / sizeof forwarded_signals[0])

/* -1: not limited. */
static long long memory_limit = -1, cpu_limit = -1, open_files_limit = -1;
/* Past the soft CPU limit the program gets SIGXCPU; this much later, SIGKILL. */
#define CPU_LIMIT_KILL_AFTER_SECONDS 1
static int child_exited_pipe[2] = {-1, -1};
static const char *lease_path = NULL;
static long long lease_deadline_ms = -1; /* the last deadline read from lease_path; -1: none yet */
static long long next_lease_check_ms = 0;

static long long nanoseconds(const struct timespec *t) {
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static long long microseconds(const struct timeval *t) {
    return (long long)t->tv_sec * 1000000LL + t->tv_usec;
}

static int write_synced(const char *path, const char *line) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    if (write_all(fd, line, strlen(line)) != 0 || fsync(fd) != 0) {
        close(fd);
        return -1;
    }
    return close(fd);
}

static int write_status_atomically(const char *status_path, const char *line) {
    char temporary_path[4096];
    if (snprintf(temporary_path, sizeof temporary_path, "%s.tmp", status_path) >= (int)sizeof temporary_path) {
        return -1;
    }
    if (write_synced(temporary_path, line) != 0) return -1;
    return rename(temporary_path, status_path);
}

static int holds_abandoned_record(const char *status_path) {
    char existing[256];
    int fd = open(status_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t length = read(fd, existing, sizeof existing - 1);
    close(fd);
    if (length <= 0) return 0;
    existing[length] = '\0';
    return strstr(existing, "\"abandoned\":true") != NULL;
}

/* Best effort: without the file the attempt is recorded lost, as before this keeper could say more. Never over a
 * real status: a keeper forked for an earlier start of the same attempt, whose go-ahead went with a fork server
 * that died before it answered, may get here after the keeper of the start made instead has recorded its
 * program's end. Its own temporary name, as the two may write at once. */
static void write_abandoned_status(const char *status_path) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char line[160];
    snprintf(line, sizeof line, "{\"abandoned\":true,\"keeper_pid\":%d,\"duration_ns\":0,\"finished_at_ns\":%lld}\n",
             (int)getpid(), nanoseconds(&now));
    char temporary_path[4096];
    if (snprintf(temporary_path, sizeof temporary_path, "%s.abandoned-%d", status_path, (int)getpid()) >=
            (int)sizeof temporary_path ||
        write_synced(temporary_path, line) != 0) {
        perror("exit_keeper: writing the status file");
        return;
    }
    if (link(temporary_path, status_path) == 0) {
        unlink(temporary_path);
    } else if (errno == EEXIST && holds_abandoned_record(status_path)) {
        if (rename(temporary_path, status_path) != 0) perror("exit_keeper: writing the status file");
    } else {
        if (errno != EEXIST) perror("exit_keeper: writing the status file");
        unlink(temporary_path);
    }
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

/* SIGCHLD wakes the copy loop's poll() through a pipe: the self-pipe trick. */
static void on_child_exited(int signal_number) {
    (void)signal_number;
    int saved_errno = errno;
    (void)write(child_exited_pipe[1], "c", 1);
    errno = saved_errno;
}

static long long clock_ms(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return (long long)now.tv_sec * 1000LL + now.tv_nsec / 1000000LL;
}

/* The program may run while the node's lease holds; past the deadline in the lease file, the whole group ends. */
static void end_group_if_lease_lapsed(void) {
    if (lease_path == NULL) return;
    long long now = clock_ms(CLOCK_MONOTONIC);
    if (now < next_lease_check_ms) return;
    next_lease_check_ms = now + LEASE_CHECK_MS;
    int fd = open(lease_path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char text[32];
        ssize_t length = read(fd, text, sizeof text - 1);
        close(fd);
        if (length > 0) {
            text[length] = '\0';
            char *end;
            errno = 0;
            long long deadline = strtoll(text, &end, 10);
            if (errno == 0 && end != text && deadline > 0) lease_deadline_ms = deadline;
        }
    }
    if (lease_deadline_ms < 0 || clock_ms(CLOCK_REALTIME) <= lease_deadline_ms) return;
    static const char notice[] = "\n[jobmanager: this node's lease lapsed; the exit keeper ended the program]\n";
    (void)write_all(STDERR_FILENO, notice, sizeof notice - 1);
    kill(0, SIGKILL);
}

static int parse_size(const char *text, long long *value) {
    char *end;
    errno = 0;
    long long parsed = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || parsed < 0) return -1;
    *value = parsed;
    return 0;
}

/* Lowers one limit; one already lower (the keeper's own hard limit, say) stays as it is. */
static int limit_resource(int resource, long long soft, long long hard) {
    if (soft < 0) return 0;
    struct rlimit limit;
    if (getrlimit(resource, &limit) != 0) return -1;
    if (limit.rlim_max == RLIM_INFINITY || (rlim_t)hard < limit.rlim_max) limit.rlim_max = (rlim_t)hard;
    limit.rlim_cur = (rlim_t)soft < limit.rlim_max ? (rlim_t)soft : limit.rlim_max;
    return setrlimit(resource, &limit);
}

/* In the child, just before exec: the job's limits. A limit that cannot be set is reported as a failed exec. */
static void apply_job_limits(int exec_report_fd) {
    if (limit_resource(RLIMIT_DATA, memory_limit, memory_limit) == 0 &&
        limit_resource(RLIMIT_CPU, cpu_limit, cpu_limit + CPU_LIMIT_KILL_AFTER_SECONDS) == 0 &&
        limit_resource(RLIMIT_NOFILE, open_files_limit, open_files_limit) == 0) {
        return;
    }
    int limit_errno = errno;
    (void)write_all(exec_report_fd, (const char *)&limit_errno, sizeof limit_errno);
    _exit(127);
}


/* Copy both streams until each reaches end-of-file (the drainer, child 0), or until the program exits (the
 * keeper). Returns 1 once the program is reaped, 0 when the streams are done, -1 if poll() itself failed. */
static int copy_streams(struct stream *streams, char *buffer, pid_t child, int *status, struct rusage *usage) {
    while (child > 0 || streams[0].pipe_fd >= 0 || streams[1].pipe_fd >= 0) {
        struct pollfd watched[3];
        for (int i = 0; i < 2; i++) {
            watched[i].fd = streams[i].pipe_fd;
            watched[i].events = POLLIN;
            watched[i].revents = 0;
        }
        watched[2].fd = child > 0 ? child_exited_pipe[0] : -1;
        watched[2].events = POLLIN;
        watched[2].revents = 0;
        int ready = poll(watched, 3, lease_path != NULL ? LEASE_CHECK_MS : -1);
        end_group_if_lease_lapsed();
        if (ready < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        for (int i = 0; i < 2; i++) {
            if (streams[i].pipe_fd >= 0 && watched[i].revents) copy_available(&streams[i], buffer);
        }
        if (child > 0 && watched[2].revents) {
            char drained[64];
            while (read(child_exited_pipe[0], drained, sizeof drained) > 0) {
            }
            pid_t reaped;
            do {
                reaped = wait4(child, status, WNOHANG, usage);
            } while (reaped < 0 && errno == EINTR);
            if (reaped == child) return 1; /* the caller takes what the program left in the pipes */
        }
    }
    return 0;
}

/* One --option of the keeper's command line (or of a fork-server request); -1 if unknown or malformed. */
static int parse_keeper_option(const char *option) {
    if (strncmp(option, "--output-limit=", 15) == 0) return parse_size(option + 15, &output_limit);
    if (strncmp(option, "--output-tail=", 14) == 0) return parse_size(option + 14, &output_tail);
    if (strncmp(option, "--memory-limit=", 15) == 0) return parse_size(option + 15, &memory_limit);
    if (strncmp(option, "--cpu-limit=", 12) == 0) return parse_size(option + 12, &cpu_limit);
    if (strncmp(option, "--open-files-limit=", 19) == 0) return parse_size(option + 19, &open_files_limit);
    if (strncmp(option, "--run-as=", 9) == 0) return parse_run_as(option + 9);
    if (strncmp(option, "--lease-file=", 13) == 0 && option[13] != '\0') {
        lease_path = option + 13;
        return 0;
    }
    return -1;
}

/* The keeper itself, from the go-ahead to the status file; returns the keeper's exit code. Descriptors 0, 1 and 2
 * are the go-ahead pipe and the output files; the forwarded signals are blocked, `original_mask` is the mask the
 * program gets back. */
static int run_keeper(const char *status_path, char **program_argv, const sigset_t *original_mask_pointer) {
    sigset_t original_mask = *original_mask_pointer;
    char go_ahead;
    ssize_t go_length;
    do {
        go_length = read(STDIN_FILENO, &go_ahead, 1);
    } while (go_length < 0 && errno == EINTR);
    if (go_length != 1) {
        write_abandoned_status(status_path); /* never ran: the service withdraws the attempt */
        return KEEPER_ABANDONED;
    }
    int null_input = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_input < 0 || dup2(null_input, STDIN_FILENO) < 0) {
        perror("exit_keeper: /dev/null");
        return KEEPER_FAILED;
    }
    close(null_input);

    static char buffer[COPY_BUFFER_BYTES];
    struct stream streams[2];
    memset(streams, 0, sizeof streams);
    int output_pipes[2][2];
    for (int i = 0; i < 2; i++) {
        if (pipe2(output_pipes[i], O_CLOEXEC) != 0) {
            perror("exit_keeper: pipe2");
            return KEEPER_FAILED;
        }
        streams[i].pipe_fd = output_pipes[i][0];
        streams[i].file_fd = STDOUT_FILENO + i;
    }
    if (pipe2(child_exited_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        perror("exit_keeper: pipe2");
        return KEEPER_FAILED;
    }
    struct sigaction on_child;
    memset(&on_child, 0, sizeof on_child);
    on_child.sa_handler = on_child_exited;
    on_child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigemptyset(&on_child.sa_mask);
    sigaction(SIGCHLD, &on_child, NULL);

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
        /* dup2 clears O_CLOEXEC on the copies: only descriptors 0, 1 and 2 reach the program. */
        if (dup2(output_pipes[0][1], STDOUT_FILENO) < 0 || dup2(output_pipes[1][1], STDERR_FILENO) < 0) {
            int dup_errno = errno;
            (void)write_all(exec_report[1], (const char *)&dup_errno, sizeof dup_errno);
            _exit(127);
        }
        apply_job_limits(exec_report[1]);
        become_job_user_or_exit(exec_report[1]); /* JOB_USER: see exit_keeper_user.h */
        execv(program_argv[0], program_argv);
        int exec_errno = errno;
        (void)write_all(exec_report[1], (const char *)&exec_errno, sizeof exec_errno);
        _exit(127);
    }
    close(exec_report[1]);
    for (int i = 0; i < 2; i++) {
        close(output_pipes[i][1]);
        fcntl(streams[i].pipe_fd, F_SETFL, fcntl(streams[i].pipe_fd, F_GETFL) | O_NONBLOCK);
    }

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
    if (copy_streams(streams, buffer, child, &status, &usage) != 1) {
        /* poll() itself failed: stop copying (the program may block on a full pipe) and wait the plain way. */
        pid_t reaped;
        do {
            reaped = wait4(child, &status, 0, &usage);
        } while (reaped < 0 && errno == EINTR);
        if (reaped < 0) {
            perror("exit_keeper: wait4");
            return KEEPER_FAILED;
        }
    }

    /* Everything the program wrote before it exited is in the pipes now. */
    int still_open = 0;
    for (int i = 0; i < 2; i++) {
        if (streams[i].pipe_fd >= 0 && copy_available(&streams[i], buffer) == 0) {
            flush_tail(&streams[i]);
            still_open = 1;
        }
    }

    struct timespec finished, finished_wall;
    clock_gettime(CLOCK_MONOTONIC, &finished);
    clock_gettime(CLOCK_REALTIME, &finished_wall);

    char exit_code[16] = "null", signal_number[16] = "null", errno_text[16] = "null", privilege_text[16] = "null";
    int keeper_exit;
    if (exec_failed && WIFEXITED(status) && WEXITSTATUS(status) == CHILD_SWITCH_USER_FAILED) {
        snprintf(privilege_text, sizeof privilege_text, "%d", exec_errno);
        keeper_exit = CHILD_SWITCH_USER_FAILED;
    } else if (exec_failed) {
        snprintf(errno_text, sizeof errno_text, "%d", exec_errno);
        keeper_exit = 127;
    } else if (WIFEXITED(status)) {
        snprintf(exit_code, sizeof exit_code, "%d", WEXITSTATUS(status));
        keeper_exit = WEXITSTATUS(status);
    } else {
        snprintf(signal_number, sizeof signal_number, "%d", WTERMSIG(status));
        keeper_exit = 128 + WTERMSIG(status);
    }

    if (still_open) {
        /* Processes the program left behind still hold the pipes: a drainer copies for them until they close. */
        pid_t drainer = fork();
        if (drainer == 0) {
            signal(SIGCHLD, SIG_DFL);
            copy_streams(streams, buffer, 0, &status, &usage);
            _exit(0);
        }
        for (int i = 0; i < 2; i++) {
            if (streams[i].pipe_fd >= 0) close(streams[i].pipe_fd);
        }
    }

    char line[640];
    snprintf(line, sizeof line,
             "{\"program_pid\":%d,\"exit_code\":%s,\"signal\":%s,\"exec_errno\":%s,\"duration_ns\":%lld,"
             "\"finished_at_ns\":%lld,\"user_cpu_us\":%lld,\"system_cpu_us\":%lld,\"max_rss_kb\":%ld,"
             "\"stdout_bytes\":%lld,\"stderr_bytes\":%lld,\"privilege_errno\":%s}\n",
             (int)child, exit_code, signal_number, errno_text, nanoseconds(&finished) - nanoseconds(&started),
             nanoseconds(&finished_wall), microseconds(&usage.ru_utime), microseconds(&usage.ru_stime),
             usage.ru_maxrss, streams[0].received, streams[1].received, privilege_text);
    if (write_status_atomically(status_path, line) != 0) {
        perror("exit_keeper: writing the status file");
        return KEEPER_FAILED;
    }
    return keeper_exit;
}

#include "exit_keeper_serve.h" /* the fork server: forks keepers that run run_keeper() */

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--serve") == 0) return serve();
    int first = 1;
    for (; first < argc && strncmp(argv[first], "--", 2) == 0; first++) {
        if (parse_keeper_option(argv[first]) != 0) {
            fprintf(stderr, "exit_keeper: unknown or bad option %s\n", argv[first]);
            return KEEPER_FAILED;
        }
    }
    if (argc - first < 2) {
        fprintf(stderr, "usage: exit_keeper [--output-limit=BYTES] [--output-tail=BYTES] [--memory-limit=BYTES] "
                        "[--cpu-limit=SECONDS] [--open-files-limit=COUNT] [--run-as=UID:GID[:GROUPS]] "
                        "[--lease-file=PATH] STATUS_PATH PROGRAM [ARGUMENT...]\n"
                        "       exit_keeper --serve\n");
        return KEEPER_FAILED;
    }
    sigset_t forwarded, original_mask;
    fill_forwarded_set(&forwarded);
    sigprocmask(SIG_BLOCK, &forwarded, &original_mask);
    return run_keeper(argv[first], &argv[first + 1], &original_mask);
}
