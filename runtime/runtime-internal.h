/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Shared by the runtime's files. Two halves:
 *
 *  - the supervisor (supervise.c) depends on libc only: it is compiled into libnano (the foreground
 *    `nano run` supervises its own service) and into the small static `nano-monitor` that owns a
 *    detached instance (doc/run.md: why a separate binary);
 *  - the rest (plan, spawn, run, instance) is libnano: json-c, ns/, store/, fuse/. */

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include "nano.h"
#include "ns.h"
#include "runtime.h"

#ifndef SYS_close_range /* Linux 5.9; headers older than the kernel */
#define SYS_close_range 436
#endif

#define NANO_EXIT_RUN_FAILED_CODE 125

/* AddressSanitizer cannot follow a child that runs in our memory on another stack (clone(CLONE_VM),
 * vfork()): it warns about the stack at the child's first noreturn call. Sanitized builds fork
 * instead; the others are the ones that run fast. */
#if defined(__SANITIZE_ADDRESS__)
#define NANO_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NANO_SANITIZED 1
#endif
#endif
#ifndef NANO_SANITIZED
#define NANO_SANITIZED 0
#endif

/* ---- Reports from a starting child, over a CLOEXEC pipe: EOF with no error = the exec succeeded. */

enum {
        REPORT_PID = 1, /* the service's pid, when it is not the child (pid namespace: a grandchild) */
        REPORT_ERROR,   /* the start failed; the record says where */
};
enum {
        STAGE_SETUP, /* before exec: 125 */
        STAGE_EXEC,  /* execve() itself: 126, or 127 for ENOENT */
};

typedef struct Report {
        int type;
        int stage;
        int pid;
        NanoError error;
} Report;

/* Writes one record (atomic: smaller than PIPE_BUF). Async-signal-safe. */
void report_send(int fd, int type, int stage, int pid, const NanoError *e);
/* 125, 126 or 127 for an error record. */
int report_exit_code(const Report *r);

/* ---- The supervisor (libc only). */

typedef struct Supervisor Supervisor;

struct Supervisor {
        /* Set by the owner. */
        int instance_fd;           /* instances/<name> */
        const char *name;
        const char *home;
        const char *static_json;   /* JSON members that never change (rendered by `nano run`) */
        NanoRestartPolicy restart;
        bool foreground;           /* the terminal's signals reach the service directly */
        bool detached;
        bool transient;            /* removed when over (foreground --rm): no monitor.log, no final state */
        uint64_t log_max;
        int sync_fd;               /* detached: the first start's result goes to `nano run` here */
        const char *nano_exe;      /* to exec `nano __spawn` (monitor) */
        /* Starts the service; returns its pid, or -errno with err filled and *ret_code 125..127. */
        int (*spawn)(Supervisor *s, NanoError *err, int *ret_code);
        void *userdata;
        /* The instance's cgroup, one directory per hierarchy (none without limits; not closed here):
         * emptied whenever the service is over, of what left its process group too (a daemon). */
        int cgroup_fd[_NANO_CGROUP_CONTROLLER_MAX];
        unsigned n_cgroup_fd;

        /* Owned by the supervisor. */
        int signal_fd;
        int log_rfd, log_wfd;      /* the service's stdout+stderr (detached), else -1 */
        int service_log_fd, monitor_log_fd;
        uint64_t service_log_size;
        NanoInstanceState state;
        pid_t pid;                 /* the service, 0 when none */
        int pidfd;
        uint64_t pid_starttime;
        pid_t monitor_pid;
        unsigned restarts;
        int exit_code, exit_status, exit_signal; /* -1 when none */
        int64_t started_ns, finished_ns;         /* CLOCK_REALTIME */
        uint64_t running_since;                  /* CLOCK_MONOTONIC ns */
        char error[1024];
        bool stop_requested;
        uint64_t kill_deadline;                  /* monotonic ns; 0: none */
        uint64_t state_due;                      /* transient: when the first state.json is due; 0: none */
        unsigned backoff_ms;
};

/* The signals the supervisor handles through its signalfd. */
void supervisor_sigset(sigset_t *ret);

/* Prepares signals (blocked, signalfd, SIGPIPE ignored), the log pipe (detached) and the log files. */
int supervisor_init(Supervisor *s);
/* The first start: returns 0, or the error (err filled, *ret_code set); state.json written either way,
 * and, detached, the result sent on sync_fd. */
int supervisor_first_start(Supervisor *s, NanoError *err, int *ret_code);
/* Supervises until the service is over for good; returns the exit code of the last run. */
int supervisor_loop(Supervisor *s);
void supervisor_done(Supervisor *s);
/* Writes state.json (tmp + rename). */
int supervisor_write_state(Supervisor *s);
/* A line in logs/monitor.log. */
void supervisor_note(Supervisor *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The spawn of the monitor: fork, exec `nano --home HOME __spawn NAME` with the report pipe on fd 3,
 * the log pipe on stdout and stderr. */
int supervisor_spawn_exec(Supervisor *s, NanoError *err, int *ret_code);
/* After forking a child that reports on the read end rfd (closed here): waits for EOF; returns the
 * service's pid (child's, or the one reported), or -errno. Reaps the child when it failed. */
int supervisor_collect(pid_t child, int rfd, NanoError *err, int *ret_code);

/* Forks a child that runs child(userdata, report_fd), which never returns (it execs or reports an
 * error and exits), then collects its report with supervisor_collect(): the shape of every start
 * done in this process. */
int spawn_reporting_child(void (*child)(void *userdata, int report_fd), void *userdata, NanoError *err,
                          int *ret_code);
/* The same without a copy of this process: clone(CLONE_VM | CLONE_VFORK | clone_flags), so the child
 * runs in our memory while we wait for its execve() or exit. With CLONE_NEW* flags it is born in
 * those namespaces. So child must not allocate, nor write anything we use after (ns/'s [child]
 * functions and run_child() do neither), nor fork into a pid namespace (it would never exec). */
int spawn_reporting_child_vm(void (*child)(void *userdata, int report_fd), void *userdata, int clone_flags,
                             NanoError *err, int *ret_code);

/* Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); 0 when unknown. */
uint64_t proc_starttime(pid_t pid);
/* JSON string escaping into a fixed buffer. Returns buf. */
const char *json_escape(const char *s, char *buf, size_t size);
/* "2025-11-25T16:18:03.123Z" from CLOCK_REALTIME ns. */
const char *format_iso_time(int64_t ns, char buf[40]);

/* ---- The plan: what the child applies, decided by `nano run`, kept in spec.json for restarts. */

#include "ns.h"

typedef enum {
        PLAN_SECCOMP_NONE,
        PLAN_SECCOMP_DEFAULT,
        PLAN_SECCOMP_PROFILE,
} PlanSeccomp;

typedef struct RunPlan {
        char name[NANO_INSTANCE_NAME_MAX + 1];
        char home[PATH_MAX];
        char instance_dir[PATH_MAX];
        char data_dir[PATH_MAX];
        char release[2 * NANO_RELEASE_NAME_MAX + 2];
        char release_id[NANO_ID_STRING_SIZE];
        char mount_root[PATH_MAX];
        char release_dir[PATH_MAX];  /* host path of the release in the mount */
        char **argv;                 /* malloc'ed, NULL-terminated */
        char **env;
        char workdir[PATH_MAX];
        NanoIsolation mode;
        unsigned ns_flags;           /* NanoNsFlags */
        bool landlock;               /* bare: everything read-only but data/ and /tmp */
        bool caps;                   /* drop every capability (libcap) */
        PlanSeccomp seccomp;
        char seccomp_profile[PATH_MAX]; /* the instance's copy of the profile */
        bool cgroup;
        NanoCgroupPlace place;
        char cgroup_name[NANO_RELEASE_NAME_MAX + 1];
        bool new_session;            /* detached: setsid(), so that a stop reaches its process group */
        NanoRestartPolicy restart;
        uint64_t log_max;
        /* Not in spec.json: found again by every start (prepare_root()). */
        char root_skeleton[PATH_MAX]; /* ns mode: the root skeleton; empty: a tmpfs root */
} RunPlan;

void run_plan_done(RunPlan *p);

/* What nano_harden() applies to a start of the plan: Landlock with the instance's data and /tmp
 * writable (if the plan has it), the seccomp program unless the plan says none, capabilities dropped
 * unless kept. Points into itself: filled in place by run_plan_harden(), not copied. */
typedef struct PlanHarden {
        const char *writable[3];
        NanoLandlockConfig landlock;
        NanoHardenConfig config;
} PlanHarden;
void run_plan_harden(const RunPlan *p, const NanoSeccompProgram *prog, PlanHarden *ret);
/* The "plan" object of spec.json. */
struct json_object;
struct json_object *run_plan_to_json(const RunPlan *p);
int run_plan_from_json(struct json_object *j, RunPlan *ret, NanoError *err);

/* A child born in the plan's namespaces (spawn_reporting_child_vm() with nano_ns_clone_flags()): it
 * only writes the maps, with the ids its parent had. */
typedef struct ChildBorn {
        uid_t uid;
        gid_t gid;
} ChildBorn;

/* [child] Applies the plan and execs the service; reports on report_fd. Never returns. born: the
 * namespaces are entered already, else it unshares them. With a pid namespace (and born NULL) it
 * forks: the service is the grandchild, whose pid is reported; the caller must be a child subreaper's
 * child (or the subreaper itself must wait for the reported pid). keep_sock (or -1): a datagram
 * socket to send the seccomp filter's listener on (nano_seccomp_install_kept()). */
_Noreturn void run_child(const RunPlan *p, const NanoSeccompProgram *prog, const NanoCgroup *cg,
                         const ChildBorn *born, int report_fd, int keep_sock);

/* [child] execve() of argv[0], searched in env's PATH when it has no '/'. Returns -errno: -ENOENT
 * when found nowhere (127), anything else when found but not executable (126). */
int exec_search(char **argv, char **env);

/* Instance paths and files. */
int instance_dir_path(const char *home, const char *name, char **ret);
/* Reads a whole small file into a malloc'ed NUL-terminated string. */
int read_text_file(const char *path, size_t max, char **ret);
/* Writes a file atomically (tmp + rename) in dirfd. */
int write_file_atomic(int dirfd, const char *name, const char *data, size_t len);
/* 1 when the lock of the instance is held by someone (a monitor), 0 when free. */
int instance_lock_held(int instance_fd);
/* Removes the instance whose lock the caller holds and whose service is over (foreground --rm).
 * keep_fds: what holds the instance's mount namespace and its seccomp filter (-1 each where none),
 * which the child deleting the files lets go of first. until_exit: the caller exits right after
 * (NanoRunOptions.exits_after), and the child waits for that, sharing its memory (no fork). */
int instance_remove_owned(const char *home, const char *name, NanoStore *store, NanoCgroup *cg,
                          const int keep_fds[static 2], bool until_exit);
/* Makes sure the store is mounted at home/mnt, running `nano mount` if not. */
int ensure_mount(const char *home, const char *self_exe, NanoError *err);

static inline void nano_store_unrefp_rt(NanoStore **s)
{
        if (*s)
                nano_store_unref(*s);
}
