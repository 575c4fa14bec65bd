/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* `nano run`: from a release and options to a running instance (doc/run.md).
 *
 *   1. resolve the release, create instances/<name>/, pin the release (a GC root), mount the store;
 *   2. probe the host and make the plan: isolation, hardening, limits, with a notice for each thing
 *      the host refuses; write spec.json and a first state.json;
 *   3. foreground: fork the service here and supervise it from this process;
 *      detached: fork twice into a new session and exec the static nano-monitor, which starts the
 *      service through `nano __spawn` and reports the first start back on a pipe. */
#include <fcntl.h>
#include <sched.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "runtime-internal.h"
#include "store.h"
#include "util.h"

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

#ifndef NANO_LIBEXECDIR
#define NANO_LIBEXECDIR "/usr/local/libexec/nano"
#endif

_Static_assert(NANO_RUN_ISOLATE_BARE == (int)NANO_ISOLATE_BARE && NANO_RUN_ISOLATE_NS == (int)NANO_ISOLATE_NS &&
                       NANO_RUN_ISOLATE_ROOTFS == (int)NANO_ISOLATE_ROOTFS,
               "runtime.h mirrors NanoIsolation");

typedef struct Run {
        const NanoRunOptions *o;
        NanoError *err;
        char home[PATH_MAX];
        char self_exe[PATH_MAX];
        NanoStore *store;
        uint8_t id[32];
        char release_name[NANO_RELEASE_NAME_MAX + 1];
        RunPlan plan;
        NanoProbe *probe;
        NanoSeccompProgram prog;
        NanoCgroup *cg;
        int instance_fd, lock_fd;
        bool created;
        /* A foreground --rm run: nothing of it outlives this process, so it writes only what `ps`,
         * `inspect`, `exec` and `rm` need while it runs (no logs/, one state.json). */
        bool transient;
        json_object *notices;       /* isolation notices */
        json_object *limit_notices;
        json_object *applied_limits;
        char *static_json;
} Run;

static void notice(Run *r, json_object *list, const char *fmt, ...) _printf_(3, 4);
static void notice(Run *r, json_object *list, const char *fmt, ...)
{
        char buf[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        json_object_array_add(list, json_object_new_string(buf));
        if (r->o->notice)
                r->o->notice(buf, r->o->userdata);
}

static void run_done(Run *r)
{
        run_plan_done(&r->plan);
        nano_seccomp_program_done(&r->prog);
        r->cg = nano_cgroup_free(r->cg);
        r->store = r->store ? nano_store_unref(r->store) : NULL;
        free(r->probe);
        r->instance_fd = safe_close(r->instance_fd);
        r->lock_fd = safe_close(r->lock_fd);
        if (r->notices)
                json_object_put(r->notices);
        if (r->limit_notices)
                json_object_put(r->limit_notices);
        if (r->applied_limits)
                json_object_put(r->applied_limits);
        free(r->static_json);
}

static void run_freep(Run **r)
{
        if (!*r)
                return;
        run_done(*r);
        free(*r);
}

/* Our own binary, for what execs it again (`nano mount`, the monitor, `nano __spawn`): found when
 * first needed, which a foreground run whose mount is up never is (the first look at /proc/self of a
 * new process costs tens of microseconds). NULL, with r->err set, when it cannot be found. */
static const char *run_self_exe(Run *r)
{
        if (r->self_exe[0])
                return r->self_exe;
        if (r->o->self_exe) {
                if (!realpath(r->o->self_exe, r->self_exe)) {
                        nano_error_set(r->err, errno, "cannot find the nano binary '%s': %m", r->o->self_exe);
                        r->self_exe[0] = 0;
                        return NULL;
                }
        } else {
                /* The kernel's own path of our binary, already canonical: one readlink(), where
                 * realpath() would walk it again component by component. */
                ssize_t n = readlink("/proc/self/exe", r->self_exe, sizeof r->self_exe - 1);
                if (n < 0) {
                        nano_error_set(r->err, errno, "cannot find the nano binary (/proc/self/exe): %m");
                        return NULL;
                }
                r->self_exe[n] = 0;
        }
        return r->self_exe;
}

/* ---- Strings. */

static int strv_push(char ***v, size_t *n, const char *s)
{
        char **nv = reallocarray(*v, *n + 2, sizeof **v);
        if (!nv)
                return -ENOMEM;
        *v = nv;
        nv[*n] = strdup(s);
        if (!nv[*n])
                return -ENOMEM;
        nv[++*n] = NULL;
        return 0;
}

static int strv_pushf(char ***v, size_t *n, const char *fmt, ...) _printf_(3, 4);
static int strv_pushf(char ***v, size_t *n, const char *fmt, ...)
{
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&s, fmt, ap);
        va_end(ap);
        return k < 0 ? -ENOMEM : strv_push(v, n, s);
}

/* ---- Steps. */

static int make_name(Run *r)
{
        uint8_t rnd[3];
        char hex[7];

        if (r->o->name) {
                if (!nano_instance_name_is_valid(r->o->name))
                        return nano_error_set(r->err, EINVAL, "invalid instance name '%s': use "
                                              "[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", r->o->name);
                strcpy(r->plan.name, r->o->name);
                return 0;
        }
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
                uint64_t t = now_ns();
                memcpy(rnd, &t, sizeof rnd);
        }
        hex_encode(rnd, sizeof rnd, hex);
        snprintf(r->plan.name, sizeof r->plan.name, "%.57s-%s", r->release_name[0] ? r->release_name : "instance",
                 hex);
        return 0;
}

static int resolve(Run *r)
{
        char version[NANO_RELEASE_NAME_MAX + 1], idbuf[NANO_ID_STRING_SIZE];
        NanoError e = {};
        int k;

        k = nano_store_open(r->o->home, &r->store, r->err);
        if (k < 0)
                return k;
        if (!realpath(nano_store_home(r->store), r->home))
                return nano_error_set(r->err, errno, "cannot resolve the nano home '%s': %m", nano_store_home(r->store));
        if (strlen(r->home) > PATH_MAX - 512)
                return nano_error_set(r->err, ENAMETOOLONG, "the nano home '%s' is too deep: use a shorter NANO_HOME",
                                      r->home);
        if (!r->o->release)
                return nano_error_set(r->err, EINVAL, "no release given");
        k = nano_store_resolve(r->store, r->o->release, r->id, &e);
        if (k == -ENOENT)
                return nano_error_set(r->err, ENOENT, "release '%s' is not in the store: add it with `nano store add "
                                      "DIR --name NAME --version VERSION` (`nano store ls` lists what there is)",
                                      r->o->release);
        if (k < 0)
                return nano_error_set(r->err, k, "%s", e.message[0] ? e.message : "cannot resolve the release");
        if (nano_release_parse(r->o->release, r->release_name, version) < 0)
                r->release_name[0] = 0;
        snprintf(r->plan.release, sizeof r->plan.release, "%s", r->o->release);
        strcpy(r->plan.release_id, nano_id_format(r->id, idbuf));
        strcpy(r->plan.home, r->home);
        return 0;
}

static int create_instance(Run *r)
{
        char path[PATH_MAX];
        int k;

        snprintf(path, sizeof path, "%s/instances", r->home);
        k = mkdirat_ok(AT_FDCWD, path, 0755);
        if (k < 0)
                return nano_error_set(r->err, k, "cannot create '%s': %m", path);
        if ((size_t)snprintf(r->plan.instance_dir, sizeof r->plan.instance_dir, "%s/%s", path, r->plan.name) >=
            sizeof r->plan.instance_dir)
                return nano_error_set(r->err, ENAMETOOLONG, "the instance path is too long");
        if (mkdir(r->plan.instance_dir, 0700) < 0) {
                if (errno == EEXIST)
                        return nano_error_set(r->err, EEXIST, "an instance named '%s' exists already: pick another "
                                              "--name, or remove it with `nano rm %s`", r->plan.name, r->plan.name);
                return nano_error_set(r->err, errno, "cannot create '%s': %m", r->plan.instance_dir);
        }
        r->created = true;
        r->instance_fd = open(r->plan.instance_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (r->instance_fd < 0)
                return nano_error_set(r->err, errno, "cannot open '%s': %m", r->plan.instance_dir);
        /* logs/ holds the monitor's notes and a detached service's output: a transient run has
         * neither (its service writes to our terminal). On ext4 every inode made costs, and more so
         * when many were freed in the last seconds, as a loop of `nano run --rm` does. */
        if (mkdirat(r->instance_fd, "data", 0755) < 0 ||
            (!r->transient && mkdirat(r->instance_fd, "logs", 0755) < 0))
                return nano_error_set(r->err, errno, "cannot create the folders of '%s': %m", r->plan.instance_dir);
        snprintf(r->plan.data_dir, sizeof r->plan.data_dir, "%s/data", r->plan.instance_dir);
        /* The lock is the monitor's for the instance's whole life; taken now, inherited by it. It is
         * spec.json, made empty now and filled once the plan is made (write_spec()): a file that is
         * never replaced, and one inode fewer to make and free than a lock file of its own. */
        r->lock_fd = openat(r->instance_fd, "spec.json", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (r->lock_fd < 0 || flock(r->lock_fd, LOCK_EX | LOCK_NB) < 0)
                return nano_error_set(r->err, errno, "cannot lock '%s/spec.json': %m", r->plan.instance_dir);
        return 0;
}

static int pin_release(Run *r)
{
        char pin[NANO_INSTANCE_NAME_MAX + 16];

        snprintf(pin, sizeof pin, "instance:%s", r->plan.name);
        /* A transient instance does not outlive a power cut: its pin need not either. */
        return nano_store_pin(r->store, pin, r->id, r->o->release, r->transient ? 0 : NANO_PIN_SYNC, r->err);
}

/* Whether the store's mount is up and serves this release, in three system calls: mnt is a mount
 * point (its device is not its parent's), a FUSE filesystem that answers statfs() (which always
 * goes to the daemon: a dead one gives ENOTCONN, where a stat could come from the kernel's cache),
 * and the release's by-id directory is there. What ensure_mount() would find out through the
 * daemon's files and the mount table (~0.15 ms) when all is well; anything else goes there, to be
 * told apart and repaired. */
static bool mount_serves(Run *r)
{
        struct stat home, mnt, rel;
        struct statfs sf;

        return stat(r->home, &home) == 0 && stat(r->plan.mount_root, &mnt) == 0 && mnt.st_dev != home.st_dev &&
               statfs(r->plan.mount_root, &sf) == 0 && sf.f_type == FUSE_SUPER_MAGIC &&
               stat(r->plan.release_dir, &rel) == 0 && S_ISDIR(rel.st_mode) && rel.st_dev == mnt.st_dev;
}

/* The bare mode's colon-free path to the release: $NANO_HOME/cache/release/<hex of the id>, a link to
 * ../../mnt/by-id/sha256:<hex>. One per release, made by its first bare run and kept: a link in each
 * instance (as before) cost an inode with a block of its own, made and freed at every start. Its name
 * says where it must point: one found there that does is kept, anything else replaced. */
static int release_link(Run *r, char *ret, size_t size)
{
        char dir[PATH_MAX], target[PATH_MAX];
        const char *hex = r->plan.release_id + strlen("sha256:");

        snprintf(dir, sizeof dir, "%s/cache", r->home);
        (void)mkdirat_ok(AT_FDCWD, dir, 0700);
        snprintf(dir, sizeof dir, "%s/cache/release", r->home);
        (void)mkdirat_ok(AT_FDCWD, dir, 0755);
        snprintf(target, sizeof target, "../../mnt/by-id/%s", r->plan.release_id);
        if ((size_t)snprintf(ret, size, "%s/%s", dir, hex) >= size)
                return nano_error_set(r->err, ENAMETOOLONG, "the release link path is too long");
        if (symlink(target, ret) == 0)
                return 0;
        if (errno == EEXIST) {
                char have[PATH_MAX], tmp[PATH_MAX];
                ssize_t n = readlink(ret, have, sizeof have - 1);

                if (n >= 0 && (size_t)n == strlen(target) && memcmp(have, target, (size_t)n) == 0)
                        return 0;
                /* Something else under that name (a file put there by hand?): replaced, atomically. */
                snprintf(tmp, sizeof tmp, "%s.tmp.%ld", ret, (long)getpid());
                if (symlink(target, tmp) == 0 && rename(tmp, ret) == 0)
                        return 0;
                (void)unlink(tmp);
        }
        return nano_error_set(r->err, errno, "cannot create the release link '%s': %m", ret);
}

static int pick_command(Run *r, const char *view)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t n = 0;
        int k;

        if (r->o->argv && r->o->argv[0]) {
                for (char **a = r->o->argv; *a; a++)
                        if (strv_push(&r->plan.argv, &n, *a) < 0)
                                return nano_error_set(r->err, ENOMEM, "out of memory");
                return 0;
        }
        /* .nano/command: the arguments, one per line (no quoting to get wrong). */
        if (asprintf(&path, "%s/.nano/command", r->plan.release_dir) < 0)
                return nano_error_set(r->err, ENOMEM, "out of memory");
        k = read_text_file(path, 64 * 1024, &text);
        if (k >= 0) {
                for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                        if (*line && strv_push(&r->plan.argv, &n, line) < 0)
                                return nano_error_set(r->err, ENOMEM, "out of memory");
                if (n > 0)
                        return 0;
        }
        free(path);
        path = NULL;
        if (r->release_name[0]) {
                if (asprintf(&path, "%s/bin/%s", r->plan.release_dir, r->release_name) < 0)
                        return nano_error_set(r->err, ENOMEM, "out of memory");
                if (access(path, X_OK) == 0) {
                        if (strv_pushf(&r->plan.argv, &n, "%s/bin/%s", view, r->release_name) < 0)
                                return nano_error_set(r->err, ENOMEM, "out of memory");
                        return 0;
                }
        }
        return nano_error_set(r->err, EINVAL, "no command given, and the release '%s' has no default one (an "
                              "executable bin/%s or a file .nano/command): add one after `--`",
                              r->o->release, r->release_name[0] ? r->release_name : "NAME");
}

/* The probe's fork trials (user, pid and net namespaces, a seccomp filter) cost a few milliseconds
 * per start: a success is remembered in $NANO_HOME/cache/probe, keyed by what could change it: the
 * boot, our uid, the sysctls that govern user namespaces and nano's version. Failures are not
 * cached: they are tried again, and their reasons need the trial's details. */
static void probe_key(Run *r, char *buf, size_t size)
{
        const NanoProbe *p = r->probe;
        char boot[64] = "?";
        int fd;

        fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t n = read_full(fd, boot, sizeof boot - 1);
                boot[n > 0 ? n : 0] = 0;
                boot[strcspn(boot, "\n")] = 0;
                safe_close(fd);
        }
        snprintf(buf, size, "nano %s boot %.36s uid %u userns_clone %ld max_userns %ld apparmor %ld seccomp_mode %d\n",
                 NANO_VERSION, boot, (unsigned)p->uid, p->unprivileged_userns_clone,
                 p->max_user_namespaces, p->apparmor_restrict_userns, p->seccomp_mode);
}

static bool probe_cached(Run *r)
{
        _cleanup_free_ char *text = NULL, *path = NULL;
        char key[512];

        probe_key(r, key, sizeof key);
        if (asprintf(&path, "%s/cache/probe", r->home) < 0 || read_file_at(AT_FDCWD, path, 4096, &text, NULL) < 0 ||
            !streq(text, key))
                return false;
        r->probe->userns = r->probe->pidns = r->probe->netns = 0;
        r->probe->userns_step = r->probe->pidns_step = r->probe->netns_step = NULL;
        if (r->probe->built_seccomp && r->probe->seccomp == 0)
                r->probe->seccomp = 0;
        return true;
}

static void probe_cache_store(Run *r)
{
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int fd = -EBADF;
        char key[512];

        if (r->probe->userns || r->probe->pidns || r->probe->netns || r->probe->seccomp)
                return;
        probe_key(r, key, sizeof key);
        if (asprintf(&dir, "%s/cache", r->home) < 0 || mkdirat_ok(AT_FDCWD, dir, 0700) < 0)
                return;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
                (void)write_file_atomic(fd, "probe", key, strlen(key));
}

static const char *mode_name(NanoIsolation m)
{
        return m == NANO_ISOLATE_BARE ? "bare" : m == NANO_ISOLATE_NS ? "ns" : "rootfs";
}

static int decide_isolation(Run *r)
{
        NanoProbeConfig pc = {};
        char why[1024];
        int k;

        r->probe = calloc(1, sizeof *r->probe);
        if (!r->probe)
                return nano_error_set(r->err, ENOMEM, "out of memory");
        /* The namespace trials fork: only when namespaces may be used, and not each time. The
         * cgroup places (mountinfo, /proc/self/cgroup, cgroupfs) only matter for limits. */
        pc.no_fork = true;
        pc.no_cgroups = !r->o->memory && !r->o->cpus_milli && !r->o->pids;
        pc.no_userns = r->o->isolate == NANO_RUN_ISOLATE_BARE;
        (void)nano_probe(&pc, r->probe);
        if (r->o->isolate != NANO_ISOLATE_BARE && !probe_cached(r)) {
                pc.no_fork = false;
                (void)nano_probe(&pc, r->probe);
                probe_cache_store(r);
        }

        if (r->o->isolate == NANO_RUN_ISOLATE_AUTO) {
                if (r->probe->userns == 0)
                        r->plan.mode = NANO_ISOLATE_NS;
                else {
                        r->plan.mode = NANO_ISOLATE_BARE;
                        notice(r, r->notices, "%s (running this instance bare)",
                               nano_probe_reason(r->probe, NANO_PROBE_USERNS, why, sizeof why));
                }
        } else {
                r->plan.mode = (NanoIsolation)r->o->isolate;
                if (r->plan.mode != NANO_ISOLATE_BARE && r->probe->userns != 0)
                        return nano_error_set(r->err, r->probe->userns ?: EPERM, "%s",
                                              nano_probe_reason(r->probe, NANO_PROBE_USERNS, why, sizeof why));
        }
        if ((r->o->pid_ns || r->o->net_none) && r->plan.mode == NANO_ISOLATE_BARE)
                return nano_error_set(r->err, EINVAL, "%s needs namespaces, and this instance runs bare: use "
                                      "--isolate ns where the host allows it", r->o->pid_ns ? "--pid" : "--net none");
        if (r->o->pid_ns) {
                if (r->probe->pidns != 0)
                        return nano_error_set(r->err, r->probe->pidns, "%s",
                                              nano_probe_reason(r->probe, NANO_PROBE_PIDNS, why, sizeof why));
                r->plan.ns_flags |= NANO_NS_PID;
        }
        if (r->o->net_none) {
                if (r->probe->netns != 0)
                        return nano_error_set(r->err, r->probe->netns, "%s",
                                              nano_probe_reason(r->probe, NANO_PROBE_NETNS, why, sizeof why));
                r->plan.ns_flags |= NANO_NS_NET;
        }

        if (r->plan.mode == NANO_ISOLATE_BARE) {
                r->plan.landlock = r->probe->landlock == 0;
                if (!r->plan.landlock)
                        notice(r, r->notices, "%s: the host outside the instance stays writable for the service",
                               nano_probe_reason(r->probe, NANO_PROBE_LANDLOCK, why, sizeof why));
        }
        r->plan.caps = r->probe->caps == 0;
        if (!r->plan.caps)
                notice(r, r->notices, "%s", nano_probe_reason(r->probe, NANO_PROBE_CAPS, why, sizeof why));

        /* Seccomp: compiled once, then read from the cache (the compile is what makes starts slow). */
        if (r->o->seccomp && streq(r->o->seccomp, "none"))
                r->plan.seccomp = PLAN_SECCOMP_NONE;
        else if (r->probe->seccomp != 0) {
                if (r->o->seccomp && !streq(r->o->seccomp, "default"))
                        return nano_error_set(r->err, EOPNOTSUPP, "--seccomp %s: %s", r->o->seccomp,
                                              nano_probe_reason(r->probe, NANO_PROBE_SECCOMP, why, sizeof why));
                r->plan.seccomp = PLAN_SECCOMP_NONE;
                notice(r, r->notices, "%s", nano_probe_reason(r->probe, NANO_PROBE_SECCOMP, why, sizeof why));
        } else if (!r->o->seccomp || streq(r->o->seccomp, "default"))
                r->plan.seccomp = PLAN_SECCOMP_DEFAULT;
        else {
                _cleanup_free_ char *text = NULL;
                size_t len = 0;

                k = read_file_at(AT_FDCWD, r->o->seccomp, NANO_SECCOMP_PROFILE_MAX_SIZE, &text, &len);
                if (k < 0)
                        return nano_error_set(r->err, k, "cannot read the seccomp profile '%s': %m", r->o->seccomp);
                /* The instance keeps its own copy: a restart applies what was checked now. */
                k = write_file_atomic(r->instance_fd, "seccomp.profile", text, len);
                if (k < 0)
                        return nano_error_set(r->err, k, "cannot copy the seccomp profile: %m");
                snprintf(r->plan.seccomp_profile, sizeof r->plan.seccomp_profile, "%s/seccomp.profile",
                         r->plan.instance_dir);
                r->plan.seccomp = PLAN_SECCOMP_PROFILE;
        }
        return 0;
}

static int prepare_seccomp(const RunPlan *p, const char *home, NanoSeccompProgram *prog, NanoError *err)
{
        _cleanup_free_ NanoSeccompProfile *profile = NULL;
        _cleanup_free_ char *cache = NULL, *text = NULL;
        size_t len = 0;
        int k;

        if (p->seccomp == PLAN_SECCOMP_NONE)
                return 0;
        if (asprintf(&cache, "%s/cache", home) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        (void)mkdirat_ok(AT_FDCWD, cache, 0700);
        free(cache);
        if (asprintf(&cache, "%s/cache/seccomp", home) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        if (p->seccomp == PLAN_SECCOMP_PROFILE) {
                profile = calloc(1, sizeof *profile);
                if (!profile)
                        return nano_error_set(err, ENOMEM, "out of memory");
                k = read_file_at(AT_FDCWD, p->seccomp_profile, NANO_SECCOMP_PROFILE_MAX_SIZE, &text, &len);
                if (k < 0)
                        return nano_error_set(err, k, "cannot read the seccomp profile '%s': %m", p->seccomp_profile);
                k = nano_seccomp_profile_parse(text, len, p->seccomp_profile, profile, err);
                if (k < 0)
                        return k;
        }
        return nano_seccomp_prepare(profile, cache, prog, err);
}

/* ns mode: the root skeleton of this host, made once in cache/root (ns/skeleton.c), so that a start
 * binds it rather than filling a tmpfs. Without one (a read-only home, the host's '/' just changed),
 * the root is built on a tmpfs as before: not an error. */
static void prepare_root(RunPlan *p, const char *home)
{
        char cache[PATH_MAX];
        NanoError e = {};
        int k;

        p->root_skeleton[0] = 0;
        if (p->mode != NANO_ISOLATE_NS ||
            snprintf(cache, sizeof cache, "%s/cache/root", home) >= (int)sizeof cache)
                return;
        k = nano_ns_root_skeleton(cache, NULL, p->root_skeleton, sizeof p->root_skeleton, &e);
        if (k == -ENOENT) {
                char *slash = strrchr(cache, '/');
                *slash = 0;
                (void)mkdirat_ok(AT_FDCWD, cache, 0700);
                *slash = '/';
                e = (NanoError){};
                k = nano_ns_root_skeleton(cache, NULL, p->root_skeleton, sizeof p->root_skeleton, &e);
        }
        if (k < 0) {
                log_debug("no root skeleton, a tmpfs root: %s", e.message);
                p->root_skeleton[0] = 0;
        }
}

static json_object *limits_requested(const NanoRunOptions *o)
{
        json_object *j = json_object_new_object();
        json_object_object_add(j, "memory", o->memory ? json_object_new_int64((int64_t)o->memory) : NULL);
        json_object_object_add(j, "cpus", o->cpus_milli ? json_object_new_double((double)o->cpus_milli / 1000.0) : NULL);
        json_object_object_add(j, "pids", o->pids ? json_object_new_int64((int64_t)o->pids) : NULL);
        return j;
}

static uint32_t fnv1a(const char *s)
{
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 16777619u;
        return h;
}

static int apply_limits(Run *r)
{
        const NanoCgroupPlace *place = &r->probe->cgroup;
        NanoCgroupLimits l = {};
        NanoCgroupState st;
        unsigned have = 0;
        char why[2048];
        NanoError e = {};
        struct {
                bool asked;
                NanoCgroupController c;
                const char *opt;
        } wanted[] = {
                { r->o->memory > 0, NANO_CGROUP_MEMORY, "--memory" },
                { r->o->cpus_milli > 0, NANO_CGROUP_CPU, "--cpus" },
                { r->o->pids > 0, NANO_CGROUP_PIDS, "--pids" },
        };
        int k;

        if (!r->o->memory && !r->o->cpus_milli && !r->o->pids)
                return 0;
        if (place->version == NANO_CGROUP_NONE) {
                nano_probe_reason(r->probe, NANO_PROBE_LIMITS, why, sizeof why);
                if (r->o->require_limits)
                        return nano_error_set(r->err, EOPNOTSUPP, "%s; --require-limits makes that an error", why);
                notice(r, r->limit_notices, "%s: the limits are not applied", why);
                return 0;
        }
        for (unsigned c = 0; c < _NANO_CGROUP_CONTROLLER_MAX; c++)
                if (place->version == NANO_CGROUP_V2 ? (r->probe->cgroup_v2_available & NANO_CGROUP_MASK(c)) != 0 :
                                                       place->v1[c][0] != 0)
                        have |= NANO_CGROUP_MASK(c);
        for (size_t i = 0; i < ELEMENTSOF(wanted); i++) {
                if (!wanted[i].asked)
                        continue;
                if (!(have & NANO_CGROUP_MASK(wanted[i].c))) {
                        const char *ctl = nano_cgroup_controller_to_string(wanted[i].c);
                        if (r->o->require_limits)
                                return nano_error_set(r->err, EOPNOTSUPP, "%s needs the %s controller in a delegated "
                                                      "cgroup, and there is none (--require-limits)", wanted[i].opt, ctl);
                        notice(r, r->limit_notices, "%s is not applied: no delegated cgroup has the %s controller",
                               wanted[i].opt, ctl);
                        continue;
                }
                switch (wanted[i].c) {
                case NANO_CGROUP_MEMORY:
                        l.memory_max = r->o->memory;
                        break;
                case NANO_CGROUP_CPU:
                        l.cpu_quota_us = r->o->cpus_milli * 100;
                        l.cpu_period_us = 100000;
                        break;
                case NANO_CGROUP_PIDS:
                        l.pids_max = r->o->pids;
                        break;
                default:
                        break;
                }
        }
        if (!l.memory_max && !l.cpu_quota_us && !l.pids_max)
                return 0;

        /* Named after the instance and its home: two homes sharing one delegated cgroup never meet. */
        snprintf(r->plan.cgroup_name, sizeof r->plan.cgroup_name, "%s.%08x", r->plan.name, fnv1a(r->home));
        k = nano_cgroup_create(place, r->plan.cgroup_name, &l, &r->cg, &e);
        if (k < 0) {
                if (r->o->require_limits)
                        return nano_error_set(r->err, k, "%s (--require-limits)", e.message);
                notice(r, r->limit_notices, "%s: the limits are not applied", e.message);
                return 0;
        }
        r->plan.cgroup = true;
        r->plan.place = *place;

        r->applied_limits = json_object_new_object();
        if (nano_cgroup_read(r->cg, &st, &e) >= 0) {
#define U(k, v, on) json_object_object_add(r->applied_limits, k, !(on) ? NULL : (v) == NANO_CGROUP_UNLIMITED ? \
                                           json_object_new_string("max") : json_object_new_int64((int64_t)(v)))
                U("memory_max", st.memory_max, l.memory_max);
                U("cpu_quota_us", st.cpu_quota_us, l.cpu_quota_us);
                U("cpu_period_us", st.cpu_period_us, l.cpu_quota_us);
                U("pids_max", st.pids_max, l.pids_max);
#undef U
        }
        return 0;
}

static int make_env(Run *r, const char *view_release, const char *view_instance)
{
        static const char *const keep[] = { "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TZ" };
        const char *path = getenv("PATH");
        size_t n = 0;
        int k = 0;

        /* A service's environment does not depend on the shell that started it: the basics, the
         * caller's PATH behind the release's bin/, where things are, then --env. */
        k = strv_pushf(&r->plan.env, &n, "PATH=%s/bin:%s", view_release,
                       path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
        for (size_t i = 0; k >= 0 && i < ELEMENTSOF(keep); i++) {
                const char *v = getenv(keep[i]);
                if (v)
                        k = strv_pushf(&r->plan.env, &n, "%s=%s", keep[i], v);
        }
        if (k >= 0)
                k = strv_pushf(&r->plan.env, &n, "NANO_RELEASE=%s", view_release[0] ? view_release : "/");
        if (k >= 0)
                k = strv_pushf(&r->plan.env, &n, "NANO_INSTANCE=%s", view_instance);
        if (k >= 0)
                k = strv_pushf(&r->plan.env, &n, "NANO_INSTANCE_NAME=%s", r->plan.name);
        for (char **e = r->o->env; k >= 0 && e && *e; e++) {
                const char *eq = strchr(*e, '=');
                size_t kl;
                if (!eq || eq == *e)
                        return nano_error_set(r->err, EINVAL, "--env '%s': expected KEY=VALUE", *e);
                kl = (size_t)(eq - *e) + 1;
                /* A later value of a key replaces the earlier one. */
                for (size_t i = 0; i < n; i++)
                        if (strncmp(r->plan.env[i], *e, kl) == 0) {
                                free(r->plan.env[i]);
                                r->plan.env[i] = r->plan.env[--n];
                                r->plan.env[n] = NULL;
                                break;
                        }
                k = strv_push(&r->plan.env, &n, *e);
        }
        return k < 0 ? nano_error_set(r->err, k, "out of memory") : 0;
}

/* The JSON members of state.json that never change, rendered once. */
static int render_static(Run *r)
{
        json_object *j = json_object_new_object(), *iso = json_object_new_object(), *req = json_object_new_object(),
                    *app = json_object_new_object(), *lim = json_object_new_object(), *cmd = json_object_new_array();
        const char *s;
        size_t len;

        for (char **a = r->plan.argv; a && *a; a++)
                json_object_array_add(cmd, json_object_new_string(*a));
        json_object_object_add(j, "name", json_object_new_string(r->plan.name));
        json_object_object_add(j, "release", json_object_new_string(r->plan.release));
        json_object_object_add(j, "release_id", json_object_new_string(r->plan.release_id));
        json_object_object_add(j, "command", cmd);
        json_object_object_add(j, "detached", json_object_new_boolean(r->o->detach));
        json_object_object_add(j, "restart_policy",
                               json_object_new_string(nano_restart_policy_to_string(r->plan.restart)));
        json_object_object_add(j, "instance_dir", json_object_new_string(r->plan.instance_dir));
        json_object_object_add(j, "data_dir", json_object_new_string(r->plan.data_dir));
        json_object_object_add(j, "release_dir", json_object_new_string(r->plan.release_dir));
        json_object_object_add(j, "workdir", json_object_new_string(r->plan.workdir));

        json_object_object_add(req, "mode", json_object_new_string(r->o->isolate == NANO_RUN_ISOLATE_AUTO ? "auto" :
                                                                   mode_name((NanoIsolation)r->o->isolate)));
        json_object_object_add(req, "pid_namespace", json_object_new_boolean(r->o->pid_ns));
        json_object_object_add(req, "net", json_object_new_string(r->o->net_none ? "none" : "host"));
        json_object_object_add(req, "seccomp", json_object_new_string(r->o->seccomp ? r->o->seccomp : "default"));
        json_object_object_add(app, "mode", json_object_new_string(mode_name(r->plan.mode)));
        json_object_object_add(app, "user_namespace", json_object_new_boolean(r->plan.mode != NANO_ISOLATE_BARE));
        json_object_object_add(app, "mount_namespace", json_object_new_boolean(r->plan.mode != NANO_ISOLATE_BARE));
        json_object_object_add(app, "pid_namespace", json_object_new_boolean(r->plan.ns_flags & NANO_NS_PID));
        json_object_object_add(app, "net", json_object_new_string(r->plan.ns_flags & NANO_NS_NET ? "none" : "host"));
        json_object_object_add(app, "host_read_only", json_object_new_boolean(r->plan.mode != NANO_ISOLATE_BARE ||
                                                                              r->plan.landlock));
        json_object_object_add(app, "landlock", r->plan.landlock && r->probe ?
                               json_object_new_int(r->probe->landlock_abi) : NULL);
        json_object_object_add(app, "no_new_privs", json_object_new_boolean(true));
        json_object_object_add(app, "capabilities_dropped", json_object_new_boolean(r->plan.caps));
        json_object_object_add(app, "seccomp", json_object_new_string(
                r->plan.seccomp == PLAN_SECCOMP_NONE ? "none" : r->plan.seccomp == PLAN_SECCOMP_DEFAULT ? "default" :
                                                                                                           "profile"));
        json_object_object_add(iso, "requested", req);
        json_object_object_add(iso, "applied", app);
        json_object_object_add(iso, "notices", json_object_get(r->notices));
        json_object_object_add(j, "isolation", iso);

        json_object_object_add(lim, "requested", limits_requested(r->o));
        json_object_object_add(lim, "applied", r->applied_limits ? json_object_get(r->applied_limits) : NULL);
        if (r->plan.cgroup) {
                json_object *cg = json_object_new_object(), *paths = json_object_new_array();
                json_object_object_add(cg, "version", json_object_new_string(r->plan.place.version == NANO_CGROUP_V2 ?
                                                                             "v2" : "v1"));
                if (r->plan.place.version == NANO_CGROUP_V2) {
                        char p[PATH_MAX + 200];
                        snprintf(p, sizeof p, "%s/%s", r->plan.place.v2, r->plan.cgroup_name);
                        json_object_array_add(paths, json_object_new_string(p));
                } else
                        for (unsigned c = 0; c < _NANO_CGROUP_CONTROLLER_MAX; c++)
                                if (r->plan.place.v1[c][0]) {
                                        char p[PATH_MAX + 200];
                                        snprintf(p, sizeof p, "%s/%s", r->plan.place.v1[c], r->plan.cgroup_name);
                                        json_object_array_add(paths, json_object_new_string(p));
                                }
                json_object_object_add(cg, "paths", paths);
                json_object_object_add(lim, "cgroup", cg);
        } else
                json_object_object_add(lim, "cgroup", NULL);
        json_object_object_add(lim, "notices", json_object_get(r->limit_notices));
        json_object_object_add(j, "limits", lim);

        s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        len = strlen(s);
        /* Members only: "{...}" without its braces. */
        r->static_json = len >= 2 ? strndup(s + 1, len - 2) : strdup("");
        json_object_put(j);
        return r->static_json ? 0 : nano_error_set(r->err, ENOMEM, "out of memory");
}

static int write_spec(Run *r)
{
        json_object *j = json_object_new_object(), *req = json_object_new_object(), *argv = json_object_new_array(),
                    *env = json_object_new_array();
        char t[40];
        const char *s;
        int k;

        for (char **a = r->o->argv; a && *a; a++)
                json_object_array_add(argv, json_object_new_string(*a));
        for (char **a = r->o->env; a && *a; a++)
                json_object_array_add(env, json_object_new_string(*a));
        json_object_object_add(req, "release", json_object_new_string(r->o->release));
        json_object_object_add(req, "name", r->o->name ? json_object_new_string(r->o->name) : NULL);
        json_object_object_add(req, "command", argv);
        json_object_object_add(req, "env", env);
        json_object_object_add(req, "workdir", r->o->workdir ? json_object_new_string(r->o->workdir) : NULL);
        json_object_object_add(req, "restart", json_object_new_string(nano_restart_policy_to_string(r->o->restart)));
        json_object_object_add(req, "isolate", json_object_new_string(r->o->isolate == NANO_RUN_ISOLATE_AUTO ?
                                                                      "auto" : mode_name((NanoIsolation)r->o->isolate)));
        json_object_object_add(req, "pid", json_object_new_boolean(r->o->pid_ns));
        json_object_object_add(req, "net", json_object_new_string(r->o->net_none ? "none" : "host"));
        json_object_object_add(req, "limits", limits_requested(r->o));
        json_object_object_add(req, "require_limits", json_object_new_boolean(r->o->require_limits));
        json_object_object_add(req, "seccomp", json_object_new_string(r->o->seccomp ? r->o->seccomp : "default"));
        json_object_object_add(req, "detach", json_object_new_boolean(r->o->detach));
        json_object_object_add(req, "remove", json_object_new_boolean(r->o->remove));
        json_object_object_add(j, "requested", req);
        json_object_object_add(j, "plan", run_plan_to_json(&r->plan));
        json_object_object_add(j, "created_at", json_object_new_string(format_iso_time((int64_t)time(NULL) * 1000000000,
                                                                                       t)));
        s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        /* Into the locked file: in place, not tmp + rename, or the lock would stay with the old inode.
         * Until it is whole, readers find no plan in it, as they found no file before. */
        k = pwrite_all(r->lock_fd, s, strlen(s), 0);
        json_object_put(j);
        return k < 0 ? nano_error_set(r->err, k, "cannot write '%s/spec.json': %m", r->plan.instance_dir) : 0;
}

/* ---- Starting: in this process (foreground), or through the monitor. */

typedef struct InProcess {
        const RunPlan *plan;
        const NanoSeccompProgram *prog;
        const NanoCgroup *cg;
        const ChildBorn *born;
        int keep_sock; /* -1, or where the child sends its seccomp filter's listener */
} InProcess;

static void run_child_of(void *userdata, int report_fd)
{
        InProcess *ip = userdata;

        run_child(ip->plan, ip->prog, ip->cg, ip->born, report_fd, ip->keep_sock);
}

static int spawn_in_process(Supervisor *s, NanoError *err, int *ret_code)
{
        InProcess *ip = s->userdata;
        const RunPlan *p = ip->plan;
        NanoNsConfig c = { .mode = p->mode, .flags = p->ns_flags };
        ChildBorn born = { .uid = geteuid(), .gid = getegid() };
        InProcess vm = *ip;
        int flags = 0;

        /* A fork copies our page tables, and the child's writes then fault page by page: a start in
         * our memory (clone(CLONE_VM | CLONE_VFORK)) saves most of the time between fork and exec.
         * Not with a cgroup, which the child joins before it enters any namespace (cgroupfs paths,
         * and counting everything it does): that forks. A pid namespace is entered by the child
         * itself (run_child()): its first child is the init, which never execs. */
        if ((p->ns_flags & NANO_NS_CGROUP) || ip->cg || NANO_SANITIZED)
                return spawn_reporting_child(run_child_of, ip, err, ret_code);
        if (p->mode != NANO_ISOLATE_BARE) {
                flags = nano_ns_clone_flags(&c);
                if (flags < 0)
                        return spawn_reporting_child(run_child_of, ip, err, ret_code);
                flags &= ~CLONE_NEWPID;
                vm.born = &born;
        }
        return spawn_reporting_child_vm(run_child_of, &vm, flags, err, ret_code);
}

static const char *find_monitor(const char *self_exe, char *buf, size_t size)
{
        const char *env = getenv("NANO_MONITOR");
        char dir[PATH_MAX], *slash;

        if (env && *env)
                return env;
        snprintf(dir, sizeof dir, "%s", self_exe);
        slash = strrchr(dir, '/');
        if (slash)
                *slash = 0;
        /* Installed beside nano or in libexec; in a build tree, runtime/ next to cli/. */
        snprintf(buf, size, "%s/nano-monitor", dir);
        if (access(buf, X_OK) == 0)
                return buf;
        snprintf(buf, size, "%s/../runtime/nano-monitor", dir);
        if (access(buf, X_OK) == 0)
                return buf;
        snprintf(buf, size, "%s/nano-monitor", NANO_LIBEXECDIR);
        if (access(buf, X_OK) == 0)
                return buf;
        return NULL;
}

static int run_detached(Run *r, NanoRunResult *ret)
{
        int sync[2], memfd, status;
        pid_t pid;
        Report rep;
        ssize_t n;

        if (!run_self_exe(r))
                return -r->err->error;
        memfd = memfd_create("nano-state", MFD_CLOEXEC);
        if (memfd < 0 || write_all(memfd, r->static_json, strlen(r->static_json)) < 0)
                return nano_error_set(r->err, errno, "cannot pass the state to the monitor: %m");
        if (pipe2(sync, O_CLOEXEC) < 0) {
                safe_close(memfd);
                return nano_error_set(r->err, errno, "cannot create a pipe: %m");
        }

        pid = fork();
        if (pid < 0) {
                safe_close(memfd);
                safe_close(sync[0]);
                safe_close(sync[1]);
                return nano_error_set(r->err, errno, "cannot fork: %m");
        }
        if (pid == 0) {
                char monitor[PATH_MAX], a_sync[16], a_lock[16], a_static[16], a_log[32];
                char a_cg[_NANO_CGROUP_CONTROLLER_MAX][16];
                int null, cg_fds[_NANO_CGROUP_CONTROLLER_MAX];
                const char *mon;
                unsigned n_cg;

                /* A session of its own, then fork again: the monitor is no session leader, so it can
                 * never get a controlling terminal, and its parent (us) is gone: init or the nearest
                 * subreaper adopts it. */
                safe_close(sync[0]);
                if (setsid() < 0)
                        _exit(125);
                pid = fork();
                if (pid != 0)
                        _exit(pid < 0 ? 125 : 0);

                null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null >= 0) {
                        (void)dup2(null, 0);
                        (void)dup2(null, 1);
                        (void)dup2(null, 2);
                }
                (void)chdir("/");
                mon = find_monitor(r->self_exe, monitor, sizeof monitor);
                n_cg = nano_cgroup_dir_fds(r->cg, cg_fds);
                if (mon) {
                        char *argv[21 + 2 * _NANO_CGROUP_CONTROLLER_MAX] = {
                                (char *)mon, (char *)"--home", r->home, (char *)"--name", r->plan.name,
                                (char *)"--nano", r->self_exe, (char *)"--restart",
                                (char *)nano_restart_policy_to_string(r->plan.restart), (char *)"--log-max", a_log,
                                (char *)"--sync-fd", a_sync, (char *)"--lock-fd", a_lock, (char *)"--static-fd",
                                a_static, r->o->remove ? (char *)"--remove" : NULL,
                        };
                        size_t argc = r->o->remove ? 18 : 17;
                        snprintf(a_sync, sizeof a_sync, "%d", sync[1]);
                        snprintf(a_lock, sizeof a_lock, "%d", r->lock_fd);
                        snprintf(a_static, sizeof a_static, "%d", memfd);
                        snprintf(a_log, sizeof a_log, "%llu", (unsigned long long)r->plan.log_max);
                        (void)fcntl(sync[1], F_SETFD, 0);
                        (void)fcntl(r->lock_fd, F_SETFD, 0);
                        (void)fcntl(memfd, F_SETFD, 0);
                        /* The cgroup, which the monitor empties when the service is over. */
                        for (unsigned i = 0; i < n_cg; i++) {
                                snprintf(a_cg[i], sizeof a_cg[i], "%d", cg_fds[i]);
                                argv[argc++] = (char *)"--cgroup-fd";
                                argv[argc++] = a_cg[i];
                                (void)fcntl(cg_fds[i], F_SETFD, 0);
                        }
                        execv(mon, argv);
                        (void)fcntl(sync[1], F_SETFD, FD_CLOEXEC);
                        (void)fcntl(r->lock_fd, F_SETFD, FD_CLOEXEC);
                }
                /* No nano-monitor to exec: this process supervises, at the cost of its size. */
                {
                        Supervisor s = {
                                .instance_fd = r->instance_fd,
                                .name = r->plan.name,
                                .home = r->home,
                                .static_json = r->static_json,
                                .restart = r->plan.restart,
                                .detached = true,
                                .log_max = r->plan.log_max,
                                .sync_fd = sync[1],
                                .nano_exe = r->self_exe,
                                .spawn = supervisor_spawn_exec,
                        };
                        NanoError e;
                        int code;

                        s.n_cgroup_fd = nano_cgroup_dir_fds(r->cg, s.cgroup_fd);
                        if (supervisor_init(&s) >= 0 && supervisor_first_start(&s, &e, &code) >= 0)
                                (void)supervisor_loop(&s);
                        supervisor_done(&s);
                        if (r->o->remove) {
                                /* --rm, as nano-monitor does it: let go of the lock (rm refuses while
                                 * it is held), then remove the instance as `nano rm` would. */
                                r->lock_fd = safe_close(r->lock_fd);
                                (void)nano_instance_remove(r->home, r->plan.name, false, &e);
                        }
                        _exit(0);
                }
        }

        safe_close(sync[1]);
        safe_close(memfd);
        /* The lock lives on in the monitor's copy. */
        r->lock_fd = safe_close(r->lock_fd);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        do
                n = read(sync[0], &rep, sizeof rep);
        while (n < 0 && errno == EINTR);
        safe_close(sync[0]);
        if (n != (ssize_t)sizeof rep)
                return nano_error_set(r->err, EIO, "the monitor of '%s' died before the service started: see "
                                      "'%s/logs/monitor.log'", r->plan.name, r->plan.instance_dir);
        if (rep.type == REPORT_ERROR) {
                ret->exit_code = report_exit_code(&rep);
                return nano_error_set(r->err, rep.error.error ?: EIO, "%s", rep.error.message);
        }
        ret->exit_code = 0;
        return 0;
}

/* An fd of the mount namespace of pid (with the user namespace that owns it), or -1. */
static int open_mount_ns(pid_t pid)
{
        char path[64];

        snprintf(path, sizeof path, "/proc/%d/ns/mnt", (int)pid);
        return open(path, O_RDONLY | O_CLOEXEC);
}

static void close_pair(int (*p)[2])
{
        (*p)[0] = safe_close((*p)[0]);
        (*p)[1] = safe_close((*p)[1]);
}

/* The fd sent on the datagram socket sock (SCM_RIGHTS), if one is waiting there, else -1. */
static int recv_fd(int sock)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } u;
        char byte;
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
        struct cmsghdr *c;
        int fd;

        if (recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
                return -1;
        c = CMSG_FIRSTHDR(&m);
        if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
                return -1;
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
        return fd;
}

static int run_foreground(Run *r, NanoRunResult *ret)
{
        InProcess ip = { .plan = &r->plan, .prog = &r->prog, .cg = r->cg, .keep_sock = -EBADF };
        Supervisor s = {
                .instance_fd = r->instance_fd,
                .name = r->plan.name,
                .home = r->home,
                .static_json = r->static_json,
                .restart = r->plan.restart,
                .foreground = true,
                .transient = r->transient,
                .sync_fd = -1,
                .nano_exe = r->self_exe,
                .spawn = spawn_in_process,
                .userdata = &ip,
        };
        _cleanup_close_ int keep_sock = -EBADF;
        _cleanup_(close_pair) int keep[2] = { -EBADF, -EBADF };
        bool keeps = r->transient && r->plan.mode != NANO_ISOLATE_BARE && r->plan.restart == NANO_RESTART_NO;
        sigset_t set;
        int k, code = 0;

        s.n_cgroup_fd = nano_cgroup_dir_fds(r->cg, s.cgroup_fd);
        k = supervisor_init(&s);
        if (k < 0) {
                supervisor_done(&s);
                return nano_error_set(r->err, k, "cannot set up the supervision: %m");
        }
        /* A transient run's namespaces and seccomp filter outlive its service a little: held here,
         * then by the child that deletes the files, which lets go once we have exited. Their teardown
         * (every mount undone, with an RCU grace period waited for, the tmpfs and devpts superblocks,
         * the user namespace, the filter's BPF program) then happens after our exit, not in the
         * service's exit, which we wait for: the filter's is a deferred work that took the CPU from
         * the exiting service. Not with restarts: each start has namespaces of its own. */
        if (keeps) {
                int sp[2];

                if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp) >= 0) {
                        keep_sock = sp[0];
                        ip.keep_sock = sp[1];
                }
        }
        k = supervisor_first_start(&s, r->err, &code);
        ip.keep_sock = safe_close(ip.keep_sock);
        if (k >= 0 && keeps) {
                keep[0] = open_mount_ns(s.pid);
                if (keep_sock >= 0)
                        keep[1] = recv_fd(keep_sock);
        }
        if (k >= 0)
                code = supervisor_loop(&s);
        supervisor_done(&s);
        supervisor_sigset(&set);
        (void)sigprocmask(SIG_UNBLOCK, &set, NULL);
        ret->exit_code = code;
        /* Still holding the lock: no one else can take the instance while it goes. */
        if (r->o->remove &&
            instance_remove_owned(r->home, r->plan.name, r->store, r->cg, keep, r->o->exits_after) >= 0)
                r->cg = nano_cgroup_free(r->cg);
        r->lock_fd = safe_close(r->lock_fd);
        return k < 0 ? k : 0;
}

int nano_run(const NanoRunOptions *o, NanoRunResult *ret, NanoError *err)
{
        /* On the heap, not the stack: Run is ~57 KiB, mostly paths of PATH_MAX bytes of which a few
         * are used. calloc() of a block that fresh sbrk memory holds leaves its pages alone, where a
         * zeroed local would write all of them: 14 page faults for nothing, on every start. */
        _cleanup_(run_freep) Run *r = calloc(1, sizeof *r);
        const char *view_release, *view_instance;
        char release_link_path[PATH_MAX];
        Supervisor s0 = {};
        int k;

        ret->exit_code = NANO_EXIT_RUN_FAILED_CODE;
        ret->name[0] = 0;
        if (!r)
                return nano_error_set(err, ENOMEM, "out of memory");
        r->o = o;
        r->err = err;
        r->instance_fd = r->lock_fd = -EBADF;
        r->transient = !o->detach && o->remove;
        r->notices = json_object_new_array();
        r->limit_notices = json_object_new_array();

        k = resolve(r);
        if (k < 0)
                return k;
        k = make_name(r);
        if (k < 0)
                return k;
        k = create_instance(r);
        if (k < 0)
                return k;
        strcpy(ret->name, r->plan.name);
        r->plan.restart = o->restart;
        r->plan.log_max = o->log_max ? o->log_max : NANO_RUN_LOG_MAX_DEFAULT;
        r->plan.new_session = o->detach;

        snprintf(r->plan.mount_root, sizeof r->plan.mount_root, "%s/mnt", r->home);
        snprintf(r->plan.release_dir, sizeof r->plan.release_dir, "%s/by-id/%s", r->plan.mount_root, r->plan.release_id);
        k = pin_release(r);
        if (k >= 0 && !mount_serves(r))
                k = run_self_exe(r) ? ensure_mount(r->home, r->self_exe, err) : -r->err->error;
        if (k < 0)
                goto fail;

        k = decide_isolation(r);
        if (k < 0)
                goto fail;
        /* Bare: the release through a link, the by-id path has a ':', which PATH cannot hold.
         * Namespaces show it at /nano/release and need no link. */
        if (r->plan.mode == NANO_ISOLATE_BARE) {
                k = release_link(r, release_link_path, sizeof release_link_path);
                if (k < 0)
                        goto fail;
        }
        view_release = r->plan.mode == NANO_ISOLATE_BARE ? release_link_path :
                       r->plan.mode == NANO_ISOLATE_NS   ? "/nano/release" : "";
        view_instance = r->plan.mode == NANO_ISOLATE_BARE ? r->plan.data_dir : "/nano/instance";
        snprintf(r->plan.workdir, sizeof r->plan.workdir, "%s", o->workdir ? o->workdir : view_instance);

        k = pick_command(r, view_release);
        if (k >= 0)
                k = make_env(r, view_release, view_instance);
        if (k >= 0)
                k = prepare_seccomp(&r->plan, r->home, &r->prog, err);
        if (k >= 0)
                prepare_root(&r->plan, r->home);
        if (k >= 0)
                k = apply_limits(r);
        if (k >= 0)
                k = write_spec(r);
        if (k >= 0)
                k = render_static(r);
        if (k < 0)
                goto fail;

        if (o->detach) {
                /* A first state.json, so that `nano ps` shows what starts while the monitor execs and
                 * spawns. In the foreground the first start writes it a moment from now; until then
                 * `ps` says "starting" (the lock is held and there is no state yet). It names no
                 * monitor: the monitor names itself with its first start. Our pid there would be
                 * what `nano stop` signals (and, at its timeout, SIGKILLs) in the meantime. */
                s0 = (Supervisor){ .instance_fd = r->instance_fd, .static_json = r->static_json,
                                   .state = NANO_STATE_STARTING, .exit_code = -1, .exit_status = -1,
                                   .exit_signal = -1 };
                (void)supervisor_write_state(&s0);
                return run_detached(r, ret);
        }
        return run_foreground(r, ret);

fail:
        /* Nothing ran: say so in state.json, and leave the instance to `nano rm` (or --rm). */
        if (!r->static_json)
                (void)render_static(r);
        s0 = (Supervisor){ .instance_fd = r->instance_fd, .static_json = r->static_json, .state = NANO_STATE_FAILED,
                           .exit_code = NANO_EXIT_RUN_FAILED_CODE, .exit_status = -1, .exit_signal = -1 };
        snprintf(s0.error, sizeof s0.error, "%s", err->message);
        if (!o->remove)
                (void)supervisor_write_state(&s0);
        r->lock_fd = safe_close(r->lock_fd);
        if (o->remove) {
                NanoError e = {};
                (void)nano_instance_remove(r->home, r->plan.name, true, &e);
        }
        return k;
}

/* ---- `nano __spawn NAME`: a (re)start for the monitor. fd 3 is the report pipe. */

int nano_run_spawn_exec(const char *home, const char *name, NanoError *err)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
        NanoSeccompProgram prog = {};
        char self[PATH_MAX];
        json_object *j = NULL, *plan;
        RunPlan p = {};
        int k;

        (void)fcntl(3, F_SETFD, FD_CLOEXEC);
        k = instance_dir_path(home, name, &dir);
        if (k < 0 || asprintf(&path, "%s/spec.json", dir) < 0)
                k = nano_error_set(err, EINVAL, "invalid instance '%s'", name);
        if (k >= 0 && (k = read_text_file(path, 4u << 20, &text)) < 0)
                k = nano_error_set(err, k, "cannot read '%s': %m", path);
        if (k >= 0 && (!(j = json_tokener_parse(text)) || !json_object_object_get_ex(j, "plan", &plan)))
                k = nano_error_set(err, EBADMSG, "'%s' is not a spec nano wrote", path);
        if (k >= 0)
                k = run_plan_from_json(plan, &p, err);
        if (j)
                json_object_put(j);
        /* The mount may have gone since the first start (a killed daemon): bring it back. */
        if (k >= 0 && realpath("/proc/self/exe", self))
                k = ensure_mount(p.home, self, err);
        if (k >= 0)
                k = prepare_seccomp(&p, p.home, &prog, err);
        if (k >= 0)
                prepare_root(&p, p.home);
        if (k >= 0 && p.cgroup)
                k = nano_cgroup_open(&p.place, p.cgroup_name, &cg, err);
        if (k >= 0)
                run_child(&p, &prog, cg, NULL, 3, -1);
        report_send(3, REPORT_ERROR, STAGE_SETUP, 0, err);
        run_plan_done(&p);
        nano_seccomp_program_done(&prog);
        return k;
}
