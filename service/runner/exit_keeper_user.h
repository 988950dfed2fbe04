/*
 * exit_keeper_user.h: the exit keeper's switch to JOB_USER (--run-as=UID:GID[:GROUP,GROUP...]), included by
 * exit_keeper.c only.
 *
 * When the service runs as root, its jobs must not: a root job can read every secret of the service (its
 * /proc/<pid>/environ, DATA_DIR, the .env file). The keeper itself stays the service's user, because it writes the
 * exit-status file into DATA_DIR; only the forked child becomes JOB_USER, just before exec. The output needs no
 * access: the child writes into pipes the keeper holds.
 */
#ifndef EXIT_KEEPER_USER_H
#define EXIT_KEEPER_USER_H

#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

/* The child's exit code when it could not become JOB_USER (it never execs): the keeper reports privilege_errno. */
#define CHILD_SWITCH_USER_FAILED 126
#define MAX_RUN_AS_GROUPS 1024

static struct {
    int requested;
    uid_t uid;
    gid_t gid;
    size_t group_count;
    gid_t groups[MAX_RUN_AS_GROUPS];
} run_as;

static int parse_id(const char *text, char **end, unsigned long *value) {
    errno = 0;
    *value = strtoul(text, end, 10);
    return (errno != 0 || *end == text || *value > (unsigned long)(id_t)-1 - 1) ? -1 : 0;
}

/* "UID:GID" or "UID:GID:G1,G2,...": numbers only, resolved by the service (a static binary has no NSS). */
static int parse_run_as(const char *text) {
    char *end;
    unsigned long uid, gid, group;
    if (parse_id(text, &end, &uid) != 0 || *end != ':') return -1;
    if (parse_id(end + 1, &end, &gid) != 0 || (*end != ':' && *end != '\0')) return -1;
    run_as.uid = (uid_t)uid;
    run_as.gid = (gid_t)gid;
    run_as.group_count = 0;
    while (*end == ':' || *end == ',') {
        if (run_as.group_count == MAX_RUN_AS_GROUPS || parse_id(end + 1, &end, &group) != 0) return -1;
        run_as.groups[run_as.group_count++] = (gid_t)group;
    }
    if (*end != '\0') return -1;
    run_as.requested = 1;
    return 0;
}

/* In the forked child, before exec: supplementary groups, then the group, then the user (each step needs the
 * privilege the next one gives up). A child that cannot switch, or that could become root again, never runs the
 * program: it sends errno through the exec report and exits CHILD_SWITCH_USER_FAILED. */
static void become_job_user_or_exit(int report_fd) {
    if (!run_as.requested) return;
    if (setgroups(run_as.group_count, run_as.groups) == 0 && setgid(run_as.gid) == 0 && setuid(run_as.uid) == 0) {
        if (run_as.uid == 0 || (setuid(0) != 0 && getuid() == run_as.uid && geteuid() == run_as.uid)) return;
        errno = EPERM;
    }
    int switch_errno = errno;
    ssize_t ignored = write(report_fd, &switch_errno, sizeof switch_errno);
    (void)ignored;
    _exit(CHILD_SWITCH_USER_FAILED);
}

#endif
