/*
 * exit_keeper_output.h: how the exit keeper copies the program's output from its pipes into the attempt's files,
 * within the output limit (see "Output" in exit_keeper.c). Included by exit_keeper.c only.
 */
#ifndef EXIT_KEEPER_OUTPUT_H
#define EXIT_KEEPER_OUTPUT_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COPY_BUFFER_BYTES 65536
#define MARKER_BYTES 256

/* One of the program's two output streams on its way from a pipe into a file. */
struct stream {
    int pipe_fd;        /* read end; -1 once at end-of-file */
    int file_fd;        /* the attempt's output file (the keeper's own stdout or stderr) */
    long long received; /* bytes the program wrote, kept or not */
    long long kept;     /* bytes copied to the file before the limit */
    char *ring;         /* the last `tail` bytes received after the limit */
    long long ring_start, ring_length, left_out;
    int truncated;      /* the limit was passed and the marker written */
};


static long long output_limit = -1; /* -1: unlimited */
static long long output_tail = 0;

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

/* Errors writing the file (a full disk) lose output, never the program: the pipe is drained all the same. */
static void keep(struct stream *s, const char *data, size_t length) {
    (void)write_all(s->file_fd, data, length);
}

static void remember_in_ring(struct stream *s, const char *data, long long length) {
    /* Allocated only once a stream passes the limit: most never do, and each keeper stays small. */
    if (s->ring == NULL && output_tail > 0) s->ring = malloc((size_t)output_tail);
    if (s->ring == NULL) {
        s->left_out += length; /* no tail wanted, or no memory for it: the stream is still drained */
        return;
    }
    if (length >= output_tail) {
        s->left_out += s->ring_length + (length - output_tail);
        memcpy(s->ring, data + (length - output_tail), (size_t)output_tail);
        s->ring_start = 0;
        s->ring_length = output_tail;
        return;
    }
    for (long long i = 0; i < length; i++) {
        long long position = (s->ring_start + s->ring_length) % output_tail;
        s->ring[position] = data[i];
        if (s->ring_length < output_tail) {
            s->ring_length++;
        } else {
            s->ring_start = (s->ring_start + 1) % output_tail;
            s->left_out++;
        }
    }
}

static void take(struct stream *s, const char *data, long long length) {
    s->received += length;
    if (output_limit < 0) {
        keep(s, data, (size_t)length);
        return;
    }
    long long room = output_limit - s->kept;
    if (room > 0) {
        long long now = length < room ? length : room;
        keep(s, data, (size_t)now);
        s->kept += now;
        data += now;
        length -= now;
    }
    if (length == 0) return;
    if (!s->truncated) {
        char marker[MARKER_BYTES];
        int marker_length = snprintf(marker, sizeof marker,
                                     "\n[jobmanager: output truncated at %lld bytes; the rest is discarded but for "
                                     "its last %lld bytes]\n",
                                     output_limit, output_tail);
        keep(s, marker, (size_t)marker_length);
        s->truncated = 1;
    }
    remember_in_ring(s, data, length);
}

/* At the end of a stream (or of the program): what was left out, then the tail kept in memory. */
static void flush_tail(struct stream *s) {
    if (!s->truncated || (s->ring_length == 0 && s->left_out == 0)) return;
    char marker[MARKER_BYTES];
    int marker_length = snprintf(marker, sizeof marker,
                                 "\n[jobmanager: %lld bytes discarded; the last %lld bytes follow]\n", s->left_out,
                                 s->ring_length);
    keep(s, marker, (size_t)marker_length);
    long long first = output_tail - s->ring_start;
    if (first > s->ring_length) first = s->ring_length;
    keep(s, s->ring + s->ring_start, (size_t)first);
    keep(s, s->ring, (size_t)(s->ring_length - first));
    s->ring_start = s->ring_length = s->left_out = 0;
}

/* Read what the pipe holds now; returns 0 when it would block, 1 at end-of-file. */
static int copy_available(struct stream *s, char *buffer) {
    for (;;) {
        ssize_t got = read(s->pipe_fd, buffer, COPY_BUFFER_BYTES);
        if (got > 0) {
            take(s, buffer, got);
            continue;
        }
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && errno == EAGAIN) return 0;
        flush_tail(s);
        close(s->pipe_fd);
        s->pipe_fd = -1;
        return 1;
    }
}

#endif
