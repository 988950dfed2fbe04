/*
 * exit_keeper_serve.h: the fork server, `exit_keeper --serve` (see "Fork server" in exit_keeper.c). Included by
 * exit_keeper.c only, after run_keeper().
 *
 * Descriptor 0 is a stream socket to the service. Requests, each a little-endian u32 body length and the body:
 *
 *     'S' u32 id, u32 options, u32 arguments, u32 environment, then NUL-terminated strings: the status path, the
 *         stdout path, the stderr path, the keeper's --options, the program's argv, its environment ("NAME=value")
 *     'G' u32 count, then count u32 ids of spawns answered 'P': give those keepers their go-ahead
 *     'A' u32 count, then count u32 ids: close their go-ahead unwritten (they exit, abandoned)
 *
 * (Ids, not pids: a pid is reused once its keeper is reaped, an id not for 2^32 spawns.)
 *
 * Replies, 24 bytes each (u8 kind, 3 bytes of padding, u32 id, i32 a, i32 b, u64 c):
 *
 *     'P' id, keeper pid, 0, the keeper's start time (clock ticks since boot, /proc/<pid>/stat field 22): started,
 *         in its own session, waiting for its go-ahead
 *     'F' id, errno, stage (1: the program cannot be started, 2: the output files cannot be), 0: nothing runs
 *     'X' 0, keeper pid, wait status, 0: a keeper the server started has exited and been reaped
 *
 * A 'P' always comes before the 'X' of the same keeper. Replies are gathered over one turn of the loop and sent in
 * one write, as requests that arrive together are read in one.
 */
#ifndef EXIT_KEEPER_SERVE_H
#define EXIT_KEEPER_SERVE_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define SERVE_SOCKET STDIN_FILENO
#define MAX_REQUEST_BYTES (64u * 1024u * 1024u)
#define REQUEST_HEAD_BYTES 17 /* kind and four u32 */
#define REPLY_BYTES 24
#define STAGE_PROGRAM 1
#define STAGE_OUTPUT 2
#define FOLDER_RACE_RETRIES 3

/* A keeper this server forked and has not reaped yet. */
struct served_keeper {
    pid_t pid;
    uint32_t id;
    int go_ahead_fd; /* write end of its go-ahead pipe; -1 once written or closed */
    int ready;       /* 1: it said it is set up, its 'P' went out; -1: it could not be, its 'F' went out */
};

static struct served_keeper *served;
static size_t served_count, served_capacity;
static char *replies;
static size_t reply_length, reply_capacity;
static int ready_pipe[2] = {-1, -1}; /* each new keeper reports here once set up, or why it could not be */
static int highest_fd = 2;

static void note_fd(int fd) {
    if (fd > highest_fd) highest_fd = fd;
}

static void *grown(void *memory, size_t *capacity, size_t needed, size_t item) {
    if (needed <= *capacity) return memory;
    size_t wanted = *capacity ? *capacity : 64;
    while (wanted < needed) wanted *= 2;
    void *larger = realloc(memory, wanted * item);
    if (larger == NULL) {
        perror("exit_keeper --serve: out of memory");
        _exit(KEEPER_FAILED); /* the service sees the server end, and starts another */
    }
    *capacity = wanted;
    return larger;
}

static void add_reply(char kind, uint32_t id, int32_t a, int32_t b, uint64_t c) {
    replies = grown(replies, &reply_capacity, reply_length + REPLY_BYTES, 1);
    char *reply = replies + reply_length;
    memset(reply, 0, REPLY_BYTES);
    reply[0] = kind;
    memcpy(reply + 4, &id, 4);
    memcpy(reply + 8, &a, 4);
    memcpy(reply + 12, &b, 4);
    memcpy(reply + 16, &c, 8);
    reply_length += REPLY_BYTES;
}

static void send_replies(void) {
    size_t sent = 0;
    while (sent < reply_length) {
        ssize_t written = send(SERVE_SOCKET, replies + sent, reply_length - sent, MSG_NOSIGNAL);
        if (written < 0 && errno == EINTR) continue;
        if (written < 0) break; /* the service is gone: reading the socket says so next */
        sent += (size_t)written;
    }
    reply_length = 0;
}

static struct served_keeper *find_served(pid_t pid) {
    for (size_t i = 0; i < served_count; i++) {
        if (served[i].pid == pid) return &served[i];
    }
    return NULL;
}

static struct served_keeper *find_served_by_id(uint32_t id) {
    for (size_t i = 0; i < served_count; i++) {
        if (served[i].id == id) return &served[i];
    }
    return NULL;
}

static void close_go_ahead(struct served_keeper *keeper) {
    if (keeper->go_ahead_fd >= 0) close(keeper->go_ahead_fd);
    keeper->go_ahead_fd = -1;
}

static uint64_t start_ticks(pid_t pid) {
    char path[32], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0; /* 0: unknown, the service looks it up itself */
    ssize_t length = read(fd, text, sizeof text - 1);
    close(fd);
    if (length <= 0) return 0;
    text[length] = '\0';
    char *field = strrchr(text, ')'); /* the name (field 2) may hold anything; field 3 follows its ')' */
    for (int number = 3; field != NULL && number <= 22; number++) field = strchr(field + 1, ' ');
    return field == NULL ? 0 : strtoull(field + 1, NULL, 10);
}

/* The folder `path[:length]` and, only where it is missing, its parents: one mkdir() when the parent exists. */
static int make_directories(const char *path, size_t length) {
    char directory[4096];
    if (length == 0) return 0;
    if (length >= sizeof directory) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(directory, path, length);
    directory[length] = '\0';
    if (mkdir(directory, 0755) == 0 || errno == EEXIST) return 0;
    if (errno != ENOENT) return -1;
    const char *slash = strrchr(directory, '/');
    if (slash == NULL || slash == directory) return -1; /* errno: ENOENT, from mkdir() */
    if (make_directories(directory, (size_t)(slash - directory)) != 0) return -1;
    return mkdir(directory, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

static size_t directory_length(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash == NULL ? 0 : (size_t)(slash - path);
}

static int same_directory(const char *one, const char *other) {
    size_t length = directory_length(one);
    return length == directory_length(other) && strncmp(one, other, length) == 0;
}

/* An output file opened for appending, its folder made first (each attempt has a new one: made, not found). The
 * job's folder may vanish between the two mkdir()s: the service removes an earlier attempt's empty folders as this
 * keeper makes its own, so a vanished parent is made again. */
static int open_output(const char *path, const char *previous) {
    for (int tries = 0;; tries++) {
        int known = previous != NULL && same_directory(path, previous);
        int made = known ? 0 : make_directories(path, directory_length(path));
        int fd = made == 0 ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
        if (fd >= 0) {
            note_fd(fd);
            return fd;
        }
        if (errno != ENOENT || tries == FOLDER_RACE_RETRIES) return -1;
    }
}

static void close_from(int lowest) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lowest, ~0u, 0u) == 0) return;
#endif
    for (int fd = lowest; fd <= highest_fd; fd++) close(fd);
}

/* What a new keeper tells the server through the ready pipe, in one write (atomic: less than PIPE_BUF). */
struct ready_report {
    int32_t pid;
    int32_t error; /* 0: started; else why nothing runs */
    int32_t stage;
    int32_t padding;
    uint64_t start_ticks;
};

static void report_ready(int32_t error, int32_t stage, uint64_t start_ticks) {
    struct ready_report report = {(int32_t)getpid(), error, stage, 0, start_ticks};
    (void)write_all(ready_pipe[1], (const char *)&report, sizeof report); /* lost with the server: abandoned */
}

/* The checks and preparations a spawning service makes itself, in the same order, made here by the keeper (in
 * parallel with the server's next forks). 0, or the stage that failed with errno set. */
static int prepare_attempt(char **strings, char **argv, int *out, int *err) {
    struct stat program;
    if (stat(argv[0], &program) != 0 || !S_ISREG(program.st_mode)) return errno = ENOENT, STAGE_PROGRAM;
    if (access(argv[0], X_OK) != 0) return errno = EACCES, STAGE_PROGRAM;
    if (unlink(strings[0]) != 0 && errno != ENOENT) return STAGE_OUTPUT;
    if ((*out = open_output(strings[1], NULL)) < 0 || (*err = open_output(strings[2], strings[1])) < 0) {
        return STAGE_OUTPUT;
    }
    if (!same_directory(strings[0], strings[1]) && !same_directory(strings[0], strings[2]) &&
        make_directories(strings[0], directory_length(strings[0])) != 0) {
        return STAGE_OUTPUT;
    }
    return 0;
}

/* In the forked child: become the attempt's keeper, as if started by the service with posix_spawn. */
static void become_keeper(int go_ahead, char **strings, uint32_t options, char **argv, char **environment) {
    sigset_t forwarded, original_mask;
    fill_forwarded_set(&forwarded);
    sigprocmask(SIG_BLOCK, &forwarded, &original_mask); /* from the start, as a spawned keeper's main does */
    signal(SIGCHLD, SIG_DFL);
    setsid(); /* cannot fail: a child just forked leads no group */
    int out = -1, err = -1;
    int stage = prepare_attempt(strings, argv, &out, &err);
    if (stage != 0) {
        report_ready(errno, stage, 0);
        _exit(KEEPER_FAILED);
    }
    if (dup2(go_ahead, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0) {
        report_ready(errno, STAGE_PROGRAM, 0);
        _exit(KEEPER_FAILED);
    }
    report_ready(0, 0, start_ticks(getpid()));
    /* Nothing of the server's stays open here: above all no other keeper's go-ahead, or a crash of the server
     * would not reach that keeper as end-of-file. */
    close_from(3);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    for (uint32_t i = 0; i < options; i++) {
        if (parse_keeper_option(strings[3 + i]) != 0) {
            fprintf(stderr, "exit_keeper: unknown or bad option %s\n", strings[3 + i]);
            _exit(KEEPER_FAILED);
        }
    }
    environ = environment;
    _exit(run_keeper(strings[0], argv, &original_mask));
}

static int fail_spawn(uint32_t id, int error_number, int stage) {
    add_reply('F', id, error_number, stage, 0);
    return 0;
}

/* One 'S' request: -1 if it is malformed (the service and this server disagree: the server ends). */
static int spawn_keeper(const char *body, size_t length) {
    if (length < REQUEST_HEAD_BYTES) return -1;
    uint32_t id, options, arguments, environment_count;
    memcpy(&id, body + 1, 4);
    memcpy(&options, body + 5, 4);
    memcpy(&arguments, body + 9, 4);
    memcpy(&environment_count, body + 13, 4);
    size_t total = 3 + (size_t)options + arguments + environment_count;
    if (arguments == 0 || total > length) return -1;
    /* [status, stdout, stderr, options..., argv..., NULL, environment..., NULL] */
    char **strings = malloc((total + 2) * sizeof *strings);
    if (strings == NULL) return fail_spawn(id, ENOMEM, STAGE_PROGRAM);
    const char *next = body + REQUEST_HEAD_BYTES, *end = body + length;
    for (size_t i = 0, slot = 0; i < total; i++, slot++) {
        const char *terminator = memchr(next, '\0', (size_t)(end - next));
        if (terminator == NULL) {
            free(strings);
            return -1;
        }
        if (i == 3 + (size_t)options + arguments) strings[slot++] = NULL; /* ends argv */
        strings[slot] = (char *)next;
        next = terminator + 1;
    }
    char **argv = strings + 3 + options, **environment = argv + arguments + 1;
    environment[environment_count] = NULL;
    if (environment_count == 0) argv[arguments] = NULL;

    int go_ahead[2];
    if (pipe2(go_ahead, O_CLOEXEC) != 0) {
        fail_spawn(id, errno, STAGE_PROGRAM);
    } else {
        note_fd(go_ahead[0]);
        note_fd(go_ahead[1]);
        pid_t pid = fork();
        if (pid == 0) become_keeper(go_ahead[0], strings, options, argv, environment);
        if (pid < 0) {
            fail_spawn(id, errno, STAGE_PROGRAM);
            close(go_ahead[1]);
        } else {
            served = grown(served, &served_capacity, served_count + 1, sizeof *served);
            served[served_count++] = (struct served_keeper){pid, id, go_ahead[1], 0};
        }
        close(go_ahead[0]);
    }
    free(strings);
    return 0;
}

/* 'G' and 'A': the go-ahead written (or not), then closed either way. */
static int settle_go_aheads(const char *body, size_t length, int run) {
    uint32_t count;
    if (length < 5) return -1;
    memcpy(&count, body + 1, 4);
    if ((size_t)count * 4 > length - 5) return -1;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t id;
        memcpy(&id, body + 5 + 4 * (size_t)i, 4);
        struct served_keeper *keeper = find_served_by_id(id);
        if (keeper == NULL || keeper->ready <= 0 || keeper->go_ahead_fd < 0) continue;
        if (run) (void)write_all(keeper->go_ahead_fd, "g", 1); /* a keeper killed meanwhile: EPIPE, ignored */
        close_go_ahead(keeper);
    }
    return 0;
}

static void collect_ready(void) {
    struct ready_report report;
    while (read(ready_pipe[0], &report, sizeof report) == (ssize_t)sizeof report) {
        struct served_keeper *keeper = find_served(report.pid);
        if (keeper == NULL || keeper->ready) continue;
        keeper->ready = report.error == 0 ? 1 : -1;
        if (report.error != 0) {
            fail_spawn(keeper->id, report.error, report.stage); /* it exits without running anything */
            close_go_ahead(keeper);
        } else {
            add_reply('P', keeper->id, report.pid, 0, report.start_ticks);
        }
    }
}

static void reap_keepers(void) {
    char drained[64];
    while (read(child_exited_pipe[0], drained, sizeof drained) > 0) {
    }
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        /* A keeper that said it was ready before it ended has its word in the pipe by now. */
        collect_ready();
        struct served_keeper *keeper = find_served(pid);
        if (keeper == NULL) continue;
        if (keeper->ready > 0) {
            add_reply('X', 0, pid, status, 0);
        } else if (keeper->ready == 0) {
            fail_spawn(keeper->id, EIO, STAGE_PROGRAM); /* it ended before it was set up: nothing ran */
        }
        close_go_ahead(keeper);
        *keeper = served[--served_count];
    }
}

static int handle_request(const char *body, size_t length) {
    switch (body[0]) {
    case 'S':
        return spawn_keeper(body, length);
    case 'G':
        return settle_go_aheads(body, length, 1);
    case 'A':
        return settle_go_aheads(body, length, 0);
    default:
        return -1;
    }
}

/* The service closed its end (it stopped, or died): the keepers still waiting for a go-ahead get end-of-file and
 * exit abandoned; those released run on, children of init (or of a subreaper) from now on. */
static int stop_serving(int code) {
    for (size_t i = 0; i < served_count; i++) close_go_ahead(&served[i]);
    return code;
}

static int serve(void) {
    signal(SIGPIPE, SIG_IGN); /* a keeper gone before its go-ahead, or the service gone: EPIPE, not death */
    if (pipe2(child_exited_pipe, O_CLOEXEC | O_NONBLOCK) != 0 || pipe2(ready_pipe, O_CLOEXEC) != 0) {
        perror("exit_keeper --serve: pipe2");
        return KEEPER_FAILED;
    }
    fcntl(ready_pipe[0], F_SETFL, fcntl(ready_pipe[0], F_GETFL) | O_NONBLOCK); /* the keepers' end blocks */
    for (int i = 0; i < 2; i++) {
        note_fd(child_exited_pipe[i]);
        note_fd(ready_pipe[i]);
    }
    struct sigaction on_child;
    memset(&on_child, 0, sizeof on_child);
    on_child.sa_handler = on_child_exited;
    on_child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigemptyset(&on_child.sa_mask);
    sigaction(SIGCHLD, &on_child, NULL);

    char *requests = NULL;
    size_t request_length = 0, request_capacity = 0;
    requests = grown(requests, &request_capacity, 65536, 1);
    for (;;) {
        struct pollfd watched[3] = {
            {SERVE_SOCKET, POLLIN, 0}, {child_exited_pipe[0], POLLIN, 0}, {ready_pipe[0], POLLIN, 0}};
        if (poll(watched, 3, -1) < 0) {
            if (errno == EINTR) continue;
            perror("exit_keeper --serve: poll");
            return stop_serving(KEEPER_FAILED);
        }
        if (watched[2].revents) collect_ready();
        if (watched[1].revents) reap_keepers();
        if (watched[0].revents) {
            ssize_t got = read(SERVE_SOCKET, requests + request_length, request_capacity - request_length);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) return stop_serving(0);
            if (got > 0) request_length += (size_t)got;
            size_t offset = 0;
            while (request_length - offset >= 4) {
                uint32_t body_length;
                memcpy(&body_length, requests + offset, 4);
                if (body_length == 0 || body_length > MAX_REQUEST_BYTES) {
                    fprintf(stderr, "exit_keeper --serve: a request of %u bytes\n", body_length);
                    return stop_serving(KEEPER_FAILED);
                }
                if (request_length - offset - 4 < body_length) {
                    requests = grown(requests, &request_capacity, (size_t)body_length + 4, 1);
                    break;
                }
                if (handle_request(requests + offset + 4, body_length) != 0) {
                    fprintf(stderr, "exit_keeper --serve: a malformed request\n");
                    return stop_serving(KEEPER_FAILED);
                }
                offset += 4 + (size_t)body_length;
            }
            memmove(requests, requests + offset, request_length - offset);
            request_length -= offset;
        }
        send_replies();
    }
}

#endif
