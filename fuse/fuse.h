/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The read-only FUSE filesystem over the store (doc/mount.md), and the life cycle of its daemon.
 *
 * This header does not include libfuse's: callers (the CLI, later the runtime) see opaque types only.
 * Functions return >= 0 on success and -errno on failure; where there is more to say than an errno,
 * they fill the NanoError they are given. Nothing here prints, except the daemon itself, whose log
 * (stderr: the terminal with --foreground, else $NANO_HOME/mount.log) is its product. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "nano.h"

#define NANO_FUSE_CACHE_SIZE_DEFAULT (UINT64_C(64) << 20)
#define NANO_FUSE_THREADS_DEFAULT    16u
#define NANO_FUSE_THREADS_MAX        256u

typedef struct NanoFuseOptions {
        uint64_t cache_size; /* bytes of decompressed chunks kept in memory; 0 disables the cache */
        unsigned threads;    /* most worker threads; 0 means NANO_FUSE_THREADS_DEFAULT */
        bool debug;          /* log every request (libfuse's trace) at debug level */
} NanoFuseOptions;

/* ---- The filesystem: one server per store. */

typedef struct NanoFuse NanoFuse;

/* A server over s (which it references until freed). */
int nano_fuse_new(NanoStore *s, const NanoFuseOptions *o, NanoFuse **ret);
NanoFuse *nano_fuse_free(NanoFuse *f);

/* Mounts the filesystem on mountpoint (an existing directory): directly when the process may mount
 * (root, or "root" of a user namespace that owns its mount namespace), else through fusermount3.
 * Also installs the SIGINT/SIGTERM/SIGHUP handlers that end nano_fuse_loop() cleanly. */
int nano_fuse_mount(NanoFuse *f, const char *mountpoint);

/* Serves requests until the filesystem is unmounted or a signal ends the session. Once the mount
 * answers (a stat of its root, from another thread, saw this filesystem), ready(userdata) is called
 * once. Returns 0 once unmounted, the number of the signal that ended it, or -errno if the mount
 * never answered (or the loop failed). */
int nano_fuse_loop(NanoFuse *f, void (*ready)(void *userdata), void *userdata);

/* Unmounts (if still mounted) and removes the signal handlers. Idempotent. */
void nano_fuse_unmount(NanoFuse *f);

static inline void nano_fuse_freep(NanoFuse **f)
{
        if (*f)
                nano_fuse_free(*f);
}

/* ---- The daemon's life cycle: pid file, state, readiness, stale mounts, unmounting. */

typedef enum NanoMountState {
        NANO_MOUNT_NONE,    /* nothing of ours is mounted there */
        NANO_MOUNT_LIVE,    /* mounted, and its daemon answers */
        NANO_MOUNT_STALE,   /* a nano FUSE mount whose daemon is gone (or whose connection died) */
        NANO_MOUNT_FOREIGN, /* another FUSE filesystem is mounted there */
} NanoMountState;

typedef struct NanoMountStatus {
        NanoMountState state;
        char mountpoint[4096]; /* the absolute mountpoint examined */
        /* The store's daemon, from $NANO_HOME/mount.pid and mount.state (whatever it serves). */
        bool daemon_alive;            /* it holds the pid file's lock */
        pid_t pid;                    /* 0 if unknown */
        char daemon_mountpoint[4096]; /* where it serves, "" if unknown */
        uint64_t cache_size;
        unsigned threads;
} NanoMountStatus;

/* Where a store's daemon keeps its pid, state and log: $NANO_HOME/mount.{pid,state,log}. */
#define NANO_MOUNT_PID_FILE   "mount.pid"
#define NANO_MOUNT_STATE_FILE "mount.state"
#define NANO_MOUNT_LOG_FILE   "mount.log"

/* Makes mountpoint absolute without touching its last component (a dead FUSE mount cannot be
 * stat'ed); ret gets a malloc'ed string. */
int nano_mount_canonicalize(const char *mountpoint, char **ret);

/* Examines mountpoint (absolute) and the daemon of the store at home. Does not block on a live
 * mount other than for one statfs() of it (which a dead mount answers at once with ENOTCONN). */
int nano_mount_status(const char *home, const char *mountpoint, NanoMountStatus *ret);

/* Unmounts a dead mount lazily (umount2(MNT_DETACH), else `fusermount3 -u -z`), then waits (at most
 * 10 s) for the store's daemon to exit if it served there. */
int nano_mount_clean_stale(const char *home, const char *mountpoint, NanoError *err);

/* Runs the daemon in this process until the filesystem is unmounted: takes the store's pid file
 * (-EALREADY if another daemon holds it; *ret_pid then names it), mounts, calls ready(userdata) once
 * the mount answers, serves, then removes the pid and state files. */
int nano_mount_run(NanoStore *s, const char *mountpoint, const NanoFuseOptions *o,
                   void (*ready)(void *userdata), void *userdata, pid_t *ret_pid, NanoError *err);

/* Starts the daemon in the background (double fork, setsid, stdin and stdout on /dev/null, stderr
 * appended to $NANO_HOME/mount.log) and returns once its mount answers, with its pid. Bounded: fails
 * if the daemon is not ready within 30 s. -EALREADY if another daemon of this store runs (its pid in
 * *ret_pid). The daemon is forked, not exec'ed: call this from a single-threaded process. */
int nano_mount_start(NanoStore *s, const char *mountpoint, const NanoFuseOptions *o, pid_t *ret_pid,
                     NanoError *err);

/* Unmounts mountpoint: umount2() where this process may, else `fusermount3 -u` (`-z` when lazy).
 * -EBUSY if a process still uses files under it, -EINVAL if nothing is mounted there. Unless lazy,
 * waits (at most 10 s) for the store's daemon to exit if it served this mountpoint: returns 1 if it
 * did not. */
int nano_mount_stop(const char *home, const char *mountpoint, bool lazy, NanoError *err);
