/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* ns/: the isolation layer of `nano run`. Pure functions over explicit config structs; the runtime
 * decides what to call and in which process.
 *
 * Errors: every fallible function returns >= 0 on success and -errno on failure, and records what
 * failed in the NanoError it is given ("mount '/nano/store': Permission denied"). Nothing here logs or
 * exits: the functions that run in the child between fork and exec leave the NanoError to be sent
 * to the parent over the sync socket (it is a flat struct: write() it as it is).
 *
 * Processes: functions marked [child] are meant for the child between fork/clone and exec. They do
 * not allocate (fixed buffers, raw getdents64), so they are safe after fork() from a multi-threaded
 * parent, and in a child that shares its parent's memory (clone(CLONE_VM | CLONE_VFORK), the
 * runtime's start without a copy of the parent). Functions marked [parent] may allocate and fork.
 *
 * Typical order in the child, for the "ns" and "rootfs" modes:
 *
 *     nano_ns_unshare()           user ns + single-id map, mount ns, optional pid/net/ipc/uts/cgroup ns
 *     fork() if NANO_NS_PID       the child is pid 1 of the new pid namespace: only it can mount /proc
 *     nano_ns_setup_root()        tmpfs root, read-only host, /nano/{store,release,instance}, pivot_root
 *     nano_harden()               rlimits, no_new_privs, Landlock, capabilities, seccomp (last)
 *     execve()
 *
 * and for "bare": nano_harden() with Landlock, then execve(). */

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "error.h"

/* ---- Cgroups: where instance cgroups go. */

typedef enum NanoCgroupController {
        NANO_CGROUP_MEMORY,
        NANO_CGROUP_PIDS,
        NANO_CGROUP_CPU,
        _NANO_CGROUP_CONTROLLER_MAX,
} NanoCgroupController;
#define NANO_CGROUP_MASK(c)  (1u << (c))
#define NANO_CGROUP_MASK_ALL ((1u << _NANO_CGROUP_CONTROLLER_MAX) - 1)

/* "memory", "pids", "cpu"; NULL when out of range. */
const char *nano_cgroup_controller_to_string(NanoCgroupController c);

typedef enum NanoCgroupVersion {
        NANO_CGROUP_NONE,
        NANO_CGROUP_V1,
        NANO_CGROUP_V2,
} NanoCgroupVersion;

/* Parent directories under which instance cgroups are created: one delegated v2 directory, or one
 * directory per v1 hierarchy ("" where that controller has none). Absolute paths; tests point them
 * at a fake tree of regular files. */
typedef struct NanoCgroupPlace {
        NanoCgroupVersion version;
        char v2[PATH_MAX];
        char v1[_NANO_CGROUP_CONTROLLER_MAX][PATH_MAX];
} NanoCgroupPlace;

/* ---- Probe: what this host allows, without privilege. */

typedef enum NanoProbeFeature {
        NANO_PROBE_USERNS, /* user + mount namespace with a single-id map: --isolate ns */
        NANO_PROBE_PIDNS,  /* pid namespace with its own /proc */
        NANO_PROBE_NETNS,  /* network namespace (loopback only) */
        NANO_PROBE_SECCOMP,
        NANO_PROBE_CAPS, /* dropping capabilities (libcap) */
        NANO_PROBE_LANDLOCK,
        NANO_PROBE_CGROUP_V2, /* a delegated v2 subtree with controllers */
        NANO_PROBE_CGROUP_V1, /* writable v1 directories for memory, pids and cpu */
        NANO_PROBE_LIMITS,    /* either of the two above */
        _NANO_PROBE_FEATURE_MAX,
} NanoProbeFeature;

typedef struct NanoProbeConfig {
        const char *proc;           /* procfs to read; NULL: "/proc". Tests use a fake tree. */
        const char *cgroup_v2_root; /* delegated v2 dir; NULL: $NANO_CGROUP_V2_ROOT, else our own cgroup */
        const char *cgroup_v1_root; /* path inside every v1 hierarchy ("nano/alice" means
                                     * /sys/fs/cgroup/memory/nano/alice, …/pids/nano/alice, …); NULL:
                                     * $NANO_CGROUP_V1_ROOT, else our own cgroup in each hierarchy */
        bool no_fork;               /* skip the namespace trials, which fork */
        bool no_cgroups;            /* skip the cgroup places (mountinfo, cgroupfs): no limit is asked;
                                     * cgroup_v2 and cgroup_v1 are then -ECANCELED */
        bool no_userns;             /* skip the facts only user namespaces need (sysctls, our seccomp
                                     * mode): no namespace is asked; they stay -1 */
} NanoProbeConfig;

typedef struct NanoProbeCgroupV1 {
        int error; /* 0: usable; -ENOENT: no hierarchy mounted; -EACCES: not writable by us */
        char mount[PATH_MAX];
        char dir[PATH_MAX];
        uid_t owner;
} NanoProbeCgroupV1;

/* Facts, not sentences: nano_probe_reason() turns them into one line. An error field is 0 where the
 * feature works and -errno otherwise; a step field names what failed ("write /proc/self/uid_map"). */
typedef struct NanoProbe {
        bool built_namespaces, built_cgroups, built_seccomp, built_libcap;
        uid_t uid;

        /* Host settings that explain a refusal; -1 where the file does not exist. */
        long unprivileged_userns_clone; /* kernel.unprivileged_userns_clone (Debian, Ubuntu) */
        long max_user_namespaces;       /* user.max_user_namespaces */
        long apparmor_restrict_userns;  /* kernel.apparmor_restrict_unprivileged_userns (Ubuntu) */
        int seccomp_mode;               /* "Seccomp:" of our own status: 2 means a filter is already on us */

        int userns;
        const char *userns_step;
        int pidns;
        const char *pidns_step;
        int netns;
        const char *netns_step;

        int seccomp;      /* -ENOSYS: kernel without filters; -EOPNOTSUPP: not built */
        int caps;         /* -EOPNOTSUPP: not built */
        int landlock;     /* -ENOSYS, -EOPNOTSUPP (not enabled at boot) */
        int landlock_abi; /* 0 when unavailable */

        int cgroup_v2; /* -ENOENT no cgroup2 mount; -ENOMEDIUM no controllers; -EACCES */
        char cgroup_v2_mount[PATH_MAX];
        char cgroup_v2_dir[PATH_MAX];
        uid_t cgroup_v2_owner;
        unsigned cgroup_v2_available; /* NANO_CGROUP_MASK() of cgroup.controllers */
        unsigned cgroup_v2_enabled;   /* … of cgroup.subtree_control */

        NanoProbeCgroupV1 cgroup_v1_dirs[_NANO_CGROUP_CONTROLLER_MAX]; /* memory, pids, cpu */
        int cgroup_v1; /* 0 when all three are usable, else the first one's error */

        NanoCgroupPlace cgroup; /* the choice: v2 when usable, else v1, else NONE */
} NanoProbe;

/* [parent] Fills ret (always: a failed check is a fact, not an error). NanoProbe is about 50 KiB:
 * allocate it rather than put it on a small stack. Forks twice for the namespace
 * trials unless c->no_fork. Returns 0, or -errno only if ret is NULL. */
int nano_probe(const NanoProbeConfig *c, NanoProbe *ret);

/* One line saying why f is refused and what to do ("user namespaces are disabled on this host
 * (kernel.unprivileged_userns_clone=0): use --isolate bare"), written to buf. Returns buf, or NULL
 * when f is available. */
const char *nano_probe_reason(const NanoProbe *p, NanoProbeFeature f, char *buf, size_t size);

/* ---- Namespaces and the new root. */

typedef enum NanoIsolation {
        NANO_ISOLATE_BARE,   /* no namespaces: hardening (and Landlock) only */
        NANO_ISOLATE_NS,     /* the host read-only, the store, release and instance under /nano */
        NANO_ISOLATE_ROOTFS, /* the release is the whole root filesystem */
} NanoIsolation;

typedef enum NanoNsFlags {
        NANO_NS_PID = 1 << 0, /* new pid namespace: fork after nano_ns_unshare() */
        NANO_NS_NET = 1 << 1, /* new network namespace with only `lo`, brought up */
        NANO_NS_IPC = 1 << 2,
        NANO_NS_UTS = 1 << 3,      /* with hostname, if set */
        NANO_NS_CGROUP = 1 << 4,   /* unshare after the process joined its cgroup */
        NANO_NS_MAP_ROOT = 1 << 5, /* map our uid/gid to 0 inside instead of to themselves */
        NANO_NS_HOST_DEV = 1 << 6, /* recursive bind of the host's /dev instead of the minimal set */
        /* Tests: make mounts read-only with MS_REMOUNT per mount, as on kernels before 5.12. */
        NANO_NS_LEGACY_REMOUNT = 1 << 7,
} NanoNsFlags;

#define NANO_NS_MAX_BINDS 64

typedef struct NanoBind {
        const char *source; /* host path */
        const char *target; /* absolute path inside; its mount point must exist or be creatable in a
                             * directory nano made (/nano, /tmp…): the host's own trees are read-only */
        bool read_only;
} NanoBind;

typedef struct NanoNsConfig {
        NanoIsolation mode;       /* NANO_ISOLATE_NS or NANO_ISOLATE_ROOTFS */
        unsigned flags;           /* NanoNsFlags */
        const char *store_dir;    /* host dir shown read-only at /nano/store; NULL: none (ns mode) */
        const char *release_dir;  /* /nano/release read-only (ns mode); the new / (rootfs mode) */
        const char *instance_dir; /* /nano/instance, read-write; NULL: none */
        const NanoBind *binds;
        size_t n_binds;          /* at most NANO_NS_MAX_BINDS */
        const char *const *hide; /* NULL-terminated: paths covered by an empty read-only tmpfs */
        const char *hostname;    /* with NANO_NS_UTS; NULL: "nano" */
        const char *workdir;     /* cwd after the pivot; NULL: "/" */
        const char *staging_dir; /* existing host dir the new root is assembled over (in our mount
                                  * namespace only); NULL: "/tmp" */
        const char *skeleton;    /* ns mode: a root skeleton (nano_ns_root_skeleton()) for this staging
                                  * dir, bound read-only as the new root; NULL: a tmpfs filled at each
                                  * start. Not used with binds or hide, which may need new mount points */
} NanoNsConfig;

/* [parent] The root skeleton for this host's top-level layout and staging_dir (NULL: /tmp), made in
 * cache_dir (created if missing) unless it is there already: a directory with every mount point and
 * link an ns-mode root needs, which nano_ns_setup_root() binds instead of filling a tmpfs. Its path
 * goes to ret (size bytes). Returns 0, or -errno: then build the root without one (-EAGAIN: the
 * host's '/' changed a moment ago, its layout is not kept yet). */
int nano_ns_root_skeleton(const char *cache_dir, const char *staging_dir, char *ret, size_t size,
                          NanoError *e);

/* [child] unshare(2)s the user and mount namespaces plus those in c->flags, writes the single-id
 * maps ("deny" to setgroups first), sets the hostname and brings up `lo`. With NANO_NS_PID only the
 * children of the caller are in the new pid namespace: fork next. */
int nano_ns_unshare(const NanoNsConfig *c, NanoError *e);

/* The CLONE_NEW* flags nano_ns_unshare() enters, for a caller that creates its child with them
 * (clone(2)) instead; -EINVAL for the bare mode. */
int nano_ns_clone_flags(const NanoNsConfig *c);

/* [child] What nano_ns_unshare() does once the namespaces are entered: the maps, hostname, `lo`.
 * For a child born in them (clone(2) with nano_ns_clone_flags()). uid and gid are the effective ids
 * on the host, read before entering (inside, until the maps are written, they read as 65534). */
int nano_ns_setup_entered(const NanoNsConfig *c, uid_t uid, gid_t gid, NanoError *e);

/* [child] Builds the new root and pivots into it (see the modes above); the old root is detached.
 * With NANO_NS_PID, call it in the child forked after nano_ns_unshare() (pid 1 of the namespace):
 * mounting a proc for a pid namespace needs to be inside it. Without, the host's /proc is bound. */
int nano_ns_setup_root(const NanoNsConfig *c, NanoError *e);

/* [child] Sets IFF_UP on `lo` in the current network namespace. */
int nano_ns_loopback_up(NanoError *e);

/* ---- Hardening, for every mode. */

/* [child] prctl(PR_SET_NO_NEW_PRIVS): execve() never grants privileges again (setuid, file caps). */
int nano_no_new_privs(NanoError *e);

/* [child] Drops every capability: securebits (noroot, locked) and the bounding set when we hold
 * CAP_SETPCAP (we do inside our user namespace, and as root), the ambient set, then effective,
 * permitted and inheritable. Does not allocate. -EOPNOTSUPP when built without libcap. */
int nano_caps_drop_all(NanoError *e);

typedef struct NanoLandlockConfig {
        const char *const *writable; /* NULL-terminated dirs where files may be created and written */
        bool scope_signals;          /* ABI >= 6: no signals to processes outside the sandbox */
        bool scope_abstract_unix;    /* ABI >= 6: no connecting to abstract sockets outside */
} NanoLandlockConfig;

/* [child] Makes every path read-only (reading and executing stay allowed) except beneath
 * c->writable, the usual device files and /proc: best effort by ABI version. Sets no_new_privs.
 * Returns the ABI version used (> 0); -EOPNOTSUPP / -ENOSYS where Landlock is unavailable. */
int nano_landlock_apply(const NanoLandlockConfig *c, NanoError *e);

/* The Landlock ABI version of the kernel (> 0), or -errno. */
int nano_landlock_abi(void);

typedef struct NanoRlimit {
        int resource; /* RLIMIT_* */
        rlim_t soft, hard;
} NanoRlimit;

/* [child] setrlimit() each entry in order. */
int nano_rlimits_apply(const NanoRlimit *l, size_t n, NanoError *e);
/* "nofile", "NOFILE" or "RLIMIT_NOFILE" -> RLIMIT_NOFILE; -EINVAL otherwise. */
int nano_rlimit_from_string(const char *s);
/* "nofile" for RLIMIT_NOFILE; NULL for unknown resources. */
const char *nano_rlimit_to_string(int resource);
/* Parses "nofile=1024", "nofile=1024:4096", "core=0", "nproc=unlimited:unlimited". */
int nano_rlimit_parse(const char *s, NanoRlimit *ret, NanoError *e);

/* ---- Seccomp. */

/* Limits of the --seccomp FILE format: one system call name per line, '#' starts a comment, the line
 * "@default" includes nano's default deny-list. */
#define NANO_SECCOMP_PROFILE_MAX_SIZE    (64u * 1024u)
#define NANO_SECCOMP_PROFILE_MAX_ENTRIES 512u
#define NANO_SECCOMP_PROFILE_MAX_LINE    256u
#define NANO_SECCOMP_NAME_MAX            63u

typedef struct NanoSeccompEntry {
        char name[NANO_SECCOMP_NAME_MAX + 1];
        unsigned line;
} NanoSeccompEntry;

typedef struct NanoSeccompProfile {
        char origin[256];     /* the name given to the parser, for messages ("" if none) */
        bool include_default; /* "@default" was given */
        size_t n_entries;
        NanoSeccompEntry entries[NANO_SECCOMP_PROFILE_MAX_ENTRIES];
} NanoSeccompProfile;

/* Parses a profile from buf (len bytes, need not be NUL-terminated). Pure: no allocation, no I/O;
 * a libFuzzer target. origin names the input in messages ("'p.txt' line 3: …"); may be NULL. Names
 * are checked for syntax here; whether libseccomp knows them is checked by nano_seccomp_prepare().
 * On failure ret holds no entries. An empty profile (nothing denied) is an error. */
int nano_seccomp_profile_parse(const char *buf, size_t len, const char *origin, NanoSeccompProfile *ret,
                               NanoError *e);

/* A compiled filter, ready for the kernel. */
typedef struct NanoSeccompProgram {
        void *insns; /* struct sock_filter[n] */
        size_t n;
        bool from_cache;     /* loaded from the cache, nothing was compiled */
        int cache_error;     /* -errno when the compiled program could not be cached (not fatal) */
        uint64_t prepare_ns; /* time prepare took (compile + export, or cache read) */
} NanoSeccompProgram;

/* [parent] The BPF of the default deny-list (profile NULL) or of profile. With cache_dir (created
 * 0700 if missing; refused if others may write it), the program is read from the cache file keyed by
 * a hash of (rules, arch, libseccomp version and API level) and compiled and stored only on a miss;
 * a truncated or foreign cache file is a miss. -EOPNOTSUPP when built without libseccomp. */
int nano_seccomp_prepare(const NanoSeccompProfile *profile, const char *cache_dir, NanoSeccompProgram *ret,
                         NanoError *e);
void nano_seccomp_program_done(NanoSeccompProgram *p);

/* [child] Loads p with seccomp(SECCOMP_SET_MODE_FILTER) (prctl on old kernels): one system call.
 * Needs no_new_privs (or CAP_SYS_ADMIN). Denied calls fail with EPERM (clone3: ENOSYS). */
int nano_seccomp_install(const NanoSeccompProgram *p, NanoError *e);
/* [child] The same, with a listener: *ret_fd gets an fd (O_CLOEXEC) that holds a reference to the
 * filter, or -1 where the kernel refuses one (a filter with a listener is already on us). The filter
 * never returns SECCOMP_RET_USER_NOTIF, so the listener hears nothing: it is there so that whoever
 * holds it, rather than the last task under the filter, frees the filter (a deferred work that takes
 * the CPU from the exiting task). */
int nano_seccomp_install_kept(const NanoSeccompProgram *p, int *ret_fd, NanoError *e);

/* Writes the canonical text of the rules of the default list (profile NULL) or of profile into buf:
 * the cache key material, and what `nano` can show. Returns the length, or -ENOBUFS / -EOPNOTSUPP. */
int nano_seccomp_rules_text(const NanoSeccompProfile *profile, char *buf, size_t size, NanoError *e);

/* ---- Everything at once. */

typedef struct NanoHardenConfig {
        const NanoRlimit *rlimits;
        size_t n_rlimits;
        const NanoLandlockConfig *landlock; /* NULL: no Landlock */
        bool landlock_required;             /* else a host without Landlock is not an error */
        /* Escape hatches, for tests and for hosts or builds without the feature: */
        bool allow_new_privs;              /* skip no_new_privs */
        bool keep_caps;                    /* skip the capability drop */
        const NanoSeccompProgram *seccomp; /* NULL: no seccomp filter */
        int *seccomp_kept_fd;              /* non-NULL: nano_seccomp_install_kept(), its fd here */
} NanoHardenConfig;

/* [child] rlimits, no_new_privs, Landlock, capabilities, then seccomp: the filter comes last as it
 * denies nothing the earlier steps need, but they would be pointless after it. Allocates (libcap). */
int nano_harden(const NanoHardenConfig *c, NanoError *e);

/* ---- Cgroups: one cgroup per instance. */

#define NANO_CGROUP_UNLIMITED UINT64_MAX

typedef struct NanoCgroupLimits {
        uint64_t memory_max;    /* bytes; 0: no limit */
        uint64_t cpu_quota_us;  /* CPU time per period (--cpus 1.5: 150000 of 100000); 0: no limit */
        uint64_t cpu_period_us; /* 0: 100000 */
        uint64_t pids_max;      /* 0: no limit */
} NanoCgroupLimits;

/* What the kernel applied and counted. Limits are NANO_CGROUP_UNLIMITED when unlimited and 0 when
 * that controller is not there (see present). */
typedef struct NanoCgroupState {
        NanoCgroupVersion version;
        unsigned present; /* NANO_CGROUP_MASK() of the controllers this cgroup has */
        uint64_t memory_max;
        uint64_t memory_swap_max; /* v1 memsw (memory+swap) or v2 memory.swap.max */
        uint64_t memory_current;
        uint64_t cpu_quota_us, cpu_period_us;
        uint64_t pids_max, pids_current;
        uint64_t memory_oom;      /* times the limit was hit hard (v2 "oom"; v1 memory.failcnt) */
        uint64_t memory_oom_kill; /* processes the OOM killer killed ("oom_kill") */
        uint64_t pids_max_events; /* forks refused by pids.max (pids.events "max") */
} NanoCgroupState;

typedef struct NanoCgroup NanoCgroup;

/* [parent] Creates the cgroup name (a release-like name) under place and writes the limits. An
 * existing empty cgroup of that name is reused (a leftover of a crash). v2: controllers needed by a
 * limit are enabled in the parent's cgroup.subtree_control first. -EOPNOTSUPP (with a message) when a
 * limit needs a controller place does not have. */
int nano_cgroup_create(const NanoCgroupPlace *place, const char *name, const NanoCgroupLimits *l,
                       NanoCgroup **ret, NanoError *e);
/* [parent] Opens an existing instance cgroup, to read or remove it. */
int nano_cgroup_open(const NanoCgroupPlace *place, const char *name, NanoCgroup **ret, NanoError *e);
/* Moves pid (0: the caller) into the cgroup, in every hierarchy. [child] when pid is 0: no allocation. */
int nano_cgroup_attach(const NanoCgroup *cg, pid_t pid, NanoError *e);
int nano_cgroup_read(const NanoCgroup *cg, NanoCgroupState *ret, NanoError *e);
/* Removes the cgroup; -EBUSY while it has processes. */
int nano_cgroup_remove(NanoCgroup *cg, NanoError *e);
/* [parent] Kills every process in the cgroup, in every hierarchy (the caller excepted), and waits up to
 * timeout_ms for them to be gone: v2 writes cgroup.kill where it exists, else (v1, v2 before Linux
 * 5.14) SIGKILL goes to each process of cgroup.procs until it lists none. Returns how many there were
 * (0: empty already), -EBUSY when some are still there at the deadline. */
int nano_cgroup_kill(const NanoCgroup *cg, unsigned timeout_ms, NanoError *e);
/* The same on one cgroup directory; libc only, no allocation, no message: what nano-monitor links. */
int nano_cgroup_kill_at(int dirfd, unsigned timeout_ms);
/* The open directories of the cgroup (one per hierarchy; still owned by cg) into ret; returns how
 * many. 0 for NULL. */
unsigned nano_cgroup_dir_fds(const NanoCgroup *cg, int ret[static _NANO_CGROUP_CONTROLLER_MAX]);
/* The v2 directory fd (for clone3(CLONE_INTO_CGROUP)); -EBADF for v1. */
int nano_cgroup_fd(const NanoCgroup *cg);
NanoCgroup *nano_cgroup_free(NanoCgroup *cg);
static inline void nano_cgroup_freep(NanoCgroup **cg)
{
        if (*cg)
                nano_cgroup_free(*cg);
}
