/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* runtime/: instances of releases, their supervision and their state (doc/run.md).
 *
 * An instance is a directory $NANO_HOME/instances/<name>/:
 *
 *     spec.json    what was asked, and the plan nano made of it (written once, by `nano run`)
 *     state.json   what is: state, pids, restarts, exit status, isolation and limits applied
 *                  (rewritten atomically, tmp + rename, by whoever owns the instance)
 *     lock         flock()ed for its whole life by the instance's monitor: "lock free" = no monitor
 *     data/        the service's own writable directory (/nano/instance inside namespaces)
 *     logs/        service.log (+ .1): the service's stdout and stderr, size-capped; monitor.log
 *
 * Functions return >= 0 on success and -errno on failure, with what failed in the NanoError. The
 * runtime never prints; notices (what the host refused) go through a callback. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "nano.h"

#define NANO_INSTANCE_NAME_MAX 64
#define NANO_RUN_LOG_MAX_DEFAULT (UINT64_C(8) << 20)
#define NANO_STOP_TIMEOUT_DEFAULT 10

/* [A-Za-z0-9][A-Za-z0-9._+-]{0,63} */
bool nano_instance_name_is_valid(const char *s);

typedef enum NanoRestartPolicy {
        NANO_RESTART_NO,
        NANO_RESTART_ON_FAILURE,
        NANO_RESTART_ALWAYS,
        _NANO_RESTART_MAX,
        _NANO_RESTART_INVALID = -EINVAL,
} NanoRestartPolicy;
const char *nano_restart_policy_to_string(NanoRestartPolicy p);
NanoRestartPolicy nano_restart_policy_from_string(const char *s);

typedef enum NanoInstanceState {
        NANO_STATE_STARTING,
        NANO_STATE_RUNNING,
        NANO_STATE_EXITED,
        NANO_STATE_RESTARTING,
        NANO_STATE_STOPPED,
        NANO_STATE_FAILED,
        NANO_STATE_UNKNOWN, /* state.json says it runs, but its monitor is gone */
        _NANO_STATE_MAX,
        _NANO_STATE_INVALID = -EINVAL,
} NanoInstanceState;
const char *nano_instance_state_to_string(NanoInstanceState s);
NanoInstanceState nano_instance_state_from_string(const char *s);

/* --isolate */
enum {
        NANO_RUN_ISOLATE_AUTO = -1, /* ns where unprivileged user namespaces work, else bare */
        NANO_RUN_ISOLATE_BARE = 0,  /* the values of ns.h's NanoIsolation */
        NANO_RUN_ISOLATE_NS = 1,
        NANO_RUN_ISOLATE_ROOTFS = 2,
};

typedef struct NanoRunOptions {
        const char *home;         /* NULL: $NANO_HOME or the default */
        const char *release;      /* name@version or sha256:<id> */
        const char *name;         /* NULL: <release name>-<random> */
        char **argv;              /* NULL: the release's default command */
        char **env;               /* K=V, NULL-terminated; may be NULL */
        const char *workdir;      /* NULL: the data dir (bare) or /nano/instance */
        NanoRestartPolicy restart;
        int isolate;              /* NanoIsolation, or NANO_RUN_ISOLATE_AUTO */
        bool pid_ns;
        bool net_none;
        uint64_t memory;          /* bytes; 0: no limit */
        uint64_t cpus_milli;      /* thousandths of a CPU; 0: no limit */
        uint64_t pids;            /* 0: no limit */
        bool require_limits;
        const char *seccomp;      /* "default" (NULL), "none" or a profile file */
        bool detach;
        bool remove;              /* --rm: remove the instance when it ends */
        uint64_t log_max;         /* bytes of service.log before rotation; 0: the default */
        const char *self_exe;     /* the nano binary (restarts exec it); NULL: /proc/self/exe */
        /* One line each for what the host refused and what nano did instead. */
        void (*notice)(const char *message, void *userdata);
        void *userdata;
        /* The caller exits right after nano_run() returns (the `nano` command): a foreground --rm
         * run's files are then deleted by a child that shares this process's memory and waits for
         * its exit, rather than by a fork. */
        bool exits_after;
} NanoRunOptions;

typedef struct NanoRunResult {
        char name[NANO_INSTANCE_NAME_MAX + 1];
        /* Foreground: the service's exit code (128 + signal when killed). On failure: 125 (nano
         * failed), 126 (the command cannot be executed) or 127 (not found). */
        int exit_code;
} NanoRunResult;

/* Creates the instance and starts it. Detached: returns once the service has been exec'ed (or its
 * start failed), leaving it to its monitor. Foreground: supervises it from this process (signals
 * forwarded, restarts per policy) and returns when it is over. The process must be single-threaded.
 * On failure ret->exit_code says which of 125/126/127. */
int nano_run(const NanoRunOptions *o, NanoRunResult *ret, NanoError *err);

/* `nano __spawn NAME`: what the monitor execs to (re)start a service: reads the plan from spec.json,
 * reports on fd 3, becomes the service. Returns only on failure (the error was reported on fd 3). */
int nano_run_spawn_exec(const char *home, const char *name, NanoError *err);

/* ---- Existing instances. */

typedef struct NanoInstanceInfo {
        char name[NANO_INSTANCE_NAME_MAX + 1];
        char *state_json;        /* the contents of state.json (NULL if missing or unreadable) */
        NanoInstanceState state; /* from state.json, corrected: UNKNOWN when the monitor died */
        bool monitor_alive;      /* its lock is held */
        pid_t pid, monitor_pid;
        bool service_alive;      /* pid runs, and is the process started then */
} NanoInstanceInfo;

void nano_instance_info_done(NanoInstanceInfo *i);

/* The instances of home, sorted by name. */
int nano_instance_list(const char *home, NanoInstanceInfo **ret, size_t *ret_n, NanoError *err);
/* One instance; -ENOENT if there is none of that name. */
int nano_instance_get(const char *home, const char *name, NanoInstanceInfo *ret, NanoError *err);
/* Live counters of the instance's cgroup as a JSON object text (malloc'ed), or NULL in *ret. */
int nano_instance_cgroup_now(const char *home, const char *name, char **ret);

/* Stops the service (SIGTERM, SIGKILL after timeout seconds), with no restart; waits for it. Also
 * when the monitor is gone and the service orphaned. 0 if stopped, 1 if it was not running. */
int nano_instance_stop(const char *home, const char *name, unsigned timeout, NanoError *err);
/* Removes the instance (its directory, pin and cgroup). -EBUSY while it runs, unless force (then it
 * is stopped first, without grace). */
int nano_instance_remove(const char *home, const char *name, bool force, NanoError *err);
/* The log files, oldest first: logs/service.log.1, logs/service.log. */
int nano_instance_log_paths(const char *home, const char *name, char **ret_old, char **ret_cur, NanoError *err);

/* `nano exec`: runs argv in the instance's namespaces (user, mount, pid) with the same hardening.
 * Foreground, signals forwarded; returns the exit code as nano_run() does. */
int nano_instance_exec(const char *home, const char *name, char **argv, char **env, NanoRunResult *ret,
                       NanoError *err);
