/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Existing instances: listing them truthfully, stopping, removing, and the small file helpers the
 * runtime shares. "Is it alive" never trusts a pid alone: the monitor holds the instance's lock for
 * its whole life (a free lock is a dead monitor, which a reused pid cannot fake), and a service pid
 * counts only with the start time recorded for it. */
#include <dirent.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#if HAVE_FUSE
#include "fuse.h"
#endif
#include "log.h"
#include "runtime-internal.h"
#include "store.h"
#include "util.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define STOP_MAGIC 0x5a000000

int instance_dir_path(const char *home, const char *name, char **ret)
{
        if (!nano_instance_name_is_valid(name))
                return -EINVAL;
        return asprintf(ret, "%s/instances/%s", home, name) < 0 ? -ENOMEM : 0;
}

int read_text_file(const char *path, size_t max, char **ret)
{
        return read_file_at(AT_FDCWD, path, max, ret, NULL);
}

int write_file_atomic(int dirfd, const char *name, const char *data, size_t len)
{
        char tmp[NAME_MAX + 1];
        _cleanup_close_ int fd = -EBADF;
        int r;

        snprintf(tmp, sizeof tmp, ".%s.tmp.%ld", name, (long)getpid());
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        r = write_all(fd, data, len);
        if (r >= 0 && renameat(dirfd, tmp, dirfd, name) < 0)
                r = -errno;
        if (r < 0)
                (void)unlinkat(dirfd, tmp, 0);
        return r;
}

int instance_lock_held(int instance_fd)
{
        /* spec.json is the lock (run.c, create_instance()). */
        _cleanup_close_ int fd = openat(instance_fd, "spec.json", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        if (flock(fd, LOCK_SH | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? 1 : -errno;
        return 0;
}

int ensure_mount(const char *home, const char *self_exe, NanoError *err)
{
        _cleanup_free_ char *mp = NULL;
        int status;
        pid_t pid;

        if (asprintf(&mp, "%s/mnt", home) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
#if HAVE_FUSE
        NanoMountStatus st;
        if (nano_mount_status(home, mp, &st) >= 0 && st.state == NANO_MOUNT_LIVE)
                return 0;
#else
        return nano_error_set(err, EOPNOTSUPP, "nano was built without FUSE support: releases cannot be mounted "
                              "to run them");
#endif

        /* Through the command, not nano_mount_start(): the daemon is threaded, and a fork of this
         * process that goes on as a daemon is no good base for the forks we do later. */
        pid = fork();
        if (pid < 0)
                return nano_error_set(err, errno, "cannot fork to mount the store: %m");
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null >= 0) {
                        (void)dup2(null, 0);
                        (void)dup2(null, 1);
                }
                execl(self_exe, self_exe, "--home", home, "--log-level", "error", "mount", (char *)NULL);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return nano_error_set(err, errno, "cannot wait for `nano mount`: %m");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return nano_error_set(err, EIO, "cannot mount the store on '%s' (`nano mount` failed, see above "
                                      "and '%s/mount.log'): run `nano mount` to see why", mp, home);
        return 0;
}

/* ---- Reading. */

static int64_t json_int(json_object *j, const char *key, int64_t def)
{
        json_object *v;
        if (!j || !json_object_object_get_ex(j, key, &v) || !json_object_is_type(v, json_type_int))
                return def;
        return json_object_get_int64(v);
}

static const char *json_str(json_object *j, const char *key)
{
        json_object *v;
        if (!j || !json_object_object_get_ex(j, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

void nano_instance_info_done(NanoInstanceInfo *i)
{
        free(i->state_json);
        i->state_json = NULL;
}

static int instance_read(const char *home, const char *name, NanoInstanceInfo *ret, NanoError *err)
{
        _cleanup_free_ char *dir = NULL, *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        NanoInstanceInfo i = {};
        json_object *j = NULL;
        int r;

        if (!nano_instance_name_is_valid(name))
                return nano_error_set(err, EINVAL, "'%s' is not a valid instance name", name ? name : "");
        r = instance_dir_path(home, name, &dir);
        if (r < 0)
                return nano_error_set(err, r, "out of memory");
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return nano_error_set(err, errno, errno == ENOENT ? "no instance '%s': see `nano ps`" :
                                                                    "cannot open the instance '%s': %m", name);
        strcpy(i.name, name);
        if (asprintf(&path, "%s/state.json", dir) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        (void)read_text_file(path, 1u << 20, &i.state_json);
        r = instance_lock_held(fd);
        i.monitor_alive = r > 0;

        j = i.state_json ? json_tokener_parse(i.state_json) : NULL;
        i.state = nano_instance_state_from_string(json_str(j, "state"));
        /* No state yet, and its owner is alive: a foreground `nano run` between creating the
         * instance and starting the service, which writes the first state.json. */
        if (i.state < 0)
                i.state = !i.state_json && i.monitor_alive ? NANO_STATE_STARTING : NANO_STATE_UNKNOWN;
        i.pid = (pid_t)json_int(j, "pid", 0);
        i.monitor_pid = (pid_t)json_int(j, "monitor_pid", 0);
        if (i.pid > 0) {
                uint64_t st = (uint64_t)json_int(j, "pid_starttime", 0);
                i.service_alive = kill(i.pid, 0) == 0 || errno == EPERM;
                if (i.service_alive && st && proc_starttime(i.pid) != st)
                        i.service_alive = false; /* the pid was reused */
        }
        /* A monitor that died (kill -9, OOM) leaves a state that says it still runs. */
        if (!i.monitor_alive && (i.state == NANO_STATE_RUNNING || i.state == NANO_STATE_STARTING ||
                                 i.state == NANO_STATE_RESTARTING))
                i.state = NANO_STATE_UNKNOWN;
        if (j)
                json_object_put(j);
        *ret = i;
        return 0;
}

int nano_instance_get(const char *home, const char *name, NanoInstanceInfo *ret, NanoError *err)
{
        return instance_read(home, name, ret, err);
}

static int cmp_info(const void *a, const void *b)
{
        return strcmp(((const NanoInstanceInfo *)a)->name, ((const NanoInstanceInfo *)b)->name);
}

int nano_instance_list(const char *home, NanoInstanceInfo **ret, size_t *ret_n, NanoError *err)
{
        _cleanup_free_ char *dir = NULL;
        NanoInstanceInfo *list = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        DIR *d;

        if (asprintf(&dir, "%s/instances", home) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT)
                        return nano_error_set(err, errno, "cannot read '%s': %m", dir);
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        while ((de = readdir(d))) {
                NanoInstanceInfo i;
                NanoError e = {};
                if (!nano_instance_name_is_valid(de->d_name))
                        continue;
                if (instance_read(home, de->d_name, &i, &e) < 0)
                        continue; /* removed meanwhile */
                if (n == cap) {
                        NanoInstanceInfo *nl = reallocarray(list, cap ? cap * 2 : 16, sizeof *list);
                        if (!nl) {
                                nano_instance_info_done(&i);
                                break;
                        }
                        list = nl;
                        cap = cap ? cap * 2 : 16;
                }
                list[n++] = i;
        }
        closedir(d);
        if (n)
                qsort(list, n, sizeof *list, cmp_info);
        *ret = list;
        *ret_n = n;
        return 0;
}

/* The spec.json plan of an instance. */
static int read_plan(const char *home, const char *name, RunPlan *ret, NanoError *err)
{
        _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
        json_object *j, *plan;
        int r;

        r = instance_dir_path(home, name, &dir);
        if (r < 0 || asprintf(&path, "%s/spec.json", dir) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        r = read_text_file(path, 4u << 20, &text);
        if (r < 0)
                return nano_error_set(err, r, "cannot read '%s': %m", path);
        j = json_tokener_parse(text);
        if (!j || !json_object_object_get_ex(j, "plan", &plan)) {
                if (j)
                        json_object_put(j);
                return nano_error_set(err, EBADMSG, "'%s' is not a spec nano wrote", path);
        }
        r = run_plan_from_json(plan, ret, err);
        json_object_put(j);
        return r;
}

int nano_instance_cgroup_now(const char *home, const char *name, char **ret)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        NanoCgroupState st;
        NanoError e = {};
        RunPlan p;
        json_object *j;

        *ret = NULL;
        if (read_plan(home, name, &p, &e) < 0)
                return 0;
        if (p.cgroup && nano_cgroup_open(&p.place, p.cgroup_name, &cg, &e) >= 0 &&
            nano_cgroup_read(cg, &st, &e) >= 0) {
                j = json_object_new_object();
#define U(k, v) json_object_object_add(j, k, (v) == NANO_CGROUP_UNLIMITED ? json_object_new_string("max") : \
                                                                             json_object_new_int64((int64_t)(v)))
                U("memory_max", st.memory_max);
                U("memory_current", st.memory_current);
                U("memory_oom", st.memory_oom);
                U("memory_oom_kill", st.memory_oom_kill);
                U("pids_max", st.pids_max);
                U("pids_current", st.pids_current);
                U("pids_max_events", st.pids_max_events);
                U("cpu_quota_us", st.cpu_quota_us);
                U("cpu_period_us", st.cpu_period_us);
#undef U
                *ret = strdup(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
                json_object_put(j);
        }
        run_plan_done(&p);
        return 0;
}

/* ---- Stopping. */

/* Rewrites fields of state.json (json-c), for the cases where no monitor does it. */
static void state_update(const char *home, const char *name, const char *state, int exit_code)
{
        _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
        _cleanup_close_ int fd = -EBADF;
        json_object *j;
        const char *s;

        if (instance_dir_path(home, name, &dir) < 0 || asprintf(&path, "%s/state.json", dir) < 0)
                return;
        if (read_text_file(path, 1u << 20, &text) < 0 || !(j = json_tokener_parse(text)))
                return;
        json_object_object_add(j, "state", json_object_new_string(state));
        if (exit_code >= 0)
                json_object_object_add(j, "exit_code", json_object_new_int(exit_code));
        json_object_object_add(j, "pid", NULL);
        s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
                (void)write_file_atomic(fd, "state.json", s, strlen(s));
        json_object_put(j);
}

/* Waits up to ms for the lock of the instance to be free (the monitor gone). */
static bool wait_lock_free(int instance_fd, unsigned ms)
{
        for (unsigned waited = 0;; waited += 20) {
                if (instance_lock_held(instance_fd) == 0)
                        return true;
                if (waited >= ms)
                        return false;
                (void)poll(NULL, 0, 20);
        }
}

static bool wait_pid_gone(pid_t pid, uint64_t starttime, unsigned ms)
{
        int pfd = (int)syscall(SYS_pidfd_open, pid, 0);

        if (pfd >= 0) {
                struct pollfd p = { .fd = pfd, .events = POLLIN };
                int r = poll(&p, 1, (int)ms);
                close(pfd);
                return r > 0;
        }
        for (unsigned waited = 0;; waited += 20) {
                if (kill(pid, 0) < 0 || proc_starttime(pid) != starttime)
                        return true;
                if (waited >= ms)
                        return false;
                (void)poll(NULL, 0, 20);
        }
}

/* The monitor is gone, the service may not be: stop it ourselves (its process group with it). */
static int stop_orphan(const char *home, const NanoInstanceInfo *i, unsigned timeout)
{
        _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
        uint64_t st = 0;
        json_object *j;

        if (instance_dir_path(home, i->name, &dir) >= 0 && asprintf(&path, "%s/state.json", dir) >= 0 &&
            read_text_file(path, 1u << 20, &text) >= 0 && (j = json_tokener_parse(text))) {
                st = (uint64_t)json_int(j, "pid_starttime", 0);
                json_object_put(j);
        }
        (void)kill(i->pid, SIGTERM);
        (void)kill(-i->pid, SIGTERM);
        if (!wait_pid_gone(i->pid, st, timeout * 1000u)) {
                (void)kill(i->pid, SIGKILL);
                (void)kill(-i->pid, SIGKILL);
                (void)wait_pid_gone(i->pid, st, 5000);
        }
        state_update(home, i->name, "stopped", -1);
        return 0;
}

/* How long a stop waits for an instance that is being started to name its owner in state.json (the
 * owner holds the lock, but the first state.json is not written yet, or names no monitor: `nano run
 * -d` writes one before the monitor exists), and for one whose directory is made but not yet locked
 * (the moment between mkdir() and flock() in `nano run`). */
#define STOP_WAIT_OWNER_MS 10000u
#define STOP_WAIT_CREATED_MS 1000u

/* The instance as a stop can act on it: its owner alive and named, or no owner. 1 when it was there
 * and has gone meanwhile (a --rm run that ended). */
static int read_settled(const char *home, const char *name, NanoInstanceInfo *ret, NanoError *err)
{
        for (unsigned waited = 0;; waited += 20) {
                NanoInstanceInfo i;
                bool has_state;
                int r = instance_read(home, name, &i, err);

                if (r == -ENOENT && waited > 0)
                        return 1;
                if (r < 0)
                        return r;
                has_state = i.state_json;
                nano_instance_info_done(&i);
                if (i.monitor_alive ? i.monitor_pid > 0 : has_state || waited >= STOP_WAIT_CREATED_MS) {
                        *ret = i;
                        return 0;
                }
                if (waited >= STOP_WAIT_OWNER_MS)
                        return nano_error_set(err, EAGAIN, "the instance '%s' is still starting: its owner holds "
                                              "its lock but has named no pid after %u s; try again", name,
                                              STOP_WAIT_OWNER_MS / 1000);
                (void)poll(NULL, 0, 20);
        }
}

/* How long processes left in an instance's cgroup have to go after SIGKILL. */
#define CGROUP_KILL_TIMEOUT_MS 5000u

/* The instance's cgroup, when it has one (1), else 0; -errno when it has one that cannot be opened
 * (gone already: 0). */
static int open_cgroup(const char *home, const char *name, NanoCgroup **ret, NanoError *err)
{
        NanoError e = {};
        RunPlan p;
        int r = 0;

        *ret = NULL;
        if (read_plan(home, name, &p, &e) < 0)
                return 0; /* no plan: nothing was ever started */
        if (p.cgroup) {
                r = nano_cgroup_open(&p.place, p.cgroup_name, ret, err);
                if (r == -ENOENT)
                        r = 0;
                else if (r >= 0)
                        r = 1;
        }
        run_plan_done(&p);
        return r;
}

/* Kills what is left in the instance's cgroup once its service is over: a process that left the
 * service's process group (a daemon's setsid()) is still in it. Its monitor does that when the service
 * is over; this is for a monitor that was killed, or did not get to it. */
static int kill_cgroup(const char *home, const char *name, NanoError *err)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        int r;

        r = open_cgroup(home, name, &cg, err);
        if (r <= 0)
                return r;
        r = nano_cgroup_kill(cg, CGROUP_KILL_TIMEOUT_MS, err);
        if (r > 0)
                log_debug("'%s': %d process%s left in its cgroup: killed", name, r, r == 1 ? "" : "es");
        return r < 0 ? r : 0;
}

static int stop_service(const char *home, const char *name, unsigned timeout, NanoError *err);

int nano_instance_stop(const char *home, const char *name, unsigned timeout, NanoError *err)
{
        int r = stop_service(home, name, timeout, err), k;

        if (r < 0)
                return r;
        /* Over: nothing of it may stay in its cgroup either. */
        k = kill_cgroup(home, name, err);
        return k < 0 ? k : r;
}

static int stop_service(const char *home, const char *name, unsigned timeout, NanoError *err)
{
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int fd = -EBADF;
        NanoInstanceInfo i, now;
        uint64_t monitor_st;
        NanoError e = {};
        union sigval v;
        int r;

        r = read_settled(home, name, &i, err);
        if (r != 0)
                return r;
        if (instance_dir_path(home, name, &dir) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 1 : nano_error_set(err, errno, "cannot open the instance '%s': %m", name);

        if (!i.monitor_alive) {
                if (i.service_alive)
                        return stop_orphan(home, &i, timeout);
                if (i.state == NANO_STATE_UNKNOWN)
                        state_update(home, name, "stopped", -1);
                return 1;
        }
        /* Only the owner writes state.json, and the lock is still held once we know the pid's start
         * time: the pid is the owner's, and stays known as such by that start time. */
        monitor_st = proc_starttime(i.monitor_pid);
        if (!monitor_st || instance_lock_held(fd) <= 0) {
                if (wait_lock_free(fd, 5000))
                        return 1; /* gone meanwhile */
                return nano_error_set(err, ESRCH, "the owner of '%s' holds its lock, but state.json names pid %d, "
                                      "which is gone", name, (int)i.monitor_pid);
        }
        /* The timeout travels with the signal: the monitor applies it and never restarts after. */
        v.sival_int = STOP_MAGIC | (int)(timeout > 0xffffff ? 0xffffff : timeout);
        if (sigqueue(i.monitor_pid, SIGTERM, v) < 0 && errno != ESRCH)
                return nano_error_set(err, errno, "cannot signal the monitor of '%s' (pid %d): %m", name,
                                      (int)i.monitor_pid);
        if (wait_lock_free(fd, timeout * 1000u + 5000u))
                return 0;
        /* A monitor that does not go: take it down with what it runs, once sure that the pids are still
         * theirs. state.json again (its service may have started or changed since), the lock still
         * held, and the same monitor (pid and start time): else it is not ours to kill. */
        r = instance_read(home, name, &now, &e);
        if (r < 0)
                return r == -ENOENT ? 0 : nano_error_set(err, -r, "%s", e.message);
        nano_instance_info_done(&now);
        if (!now.monitor_alive)
                return 0;
        if (now.monitor_pid != i.monitor_pid || proc_starttime(now.monitor_pid) != monitor_st)
                return nano_error_set(err, ETIMEDOUT, "the monitor of '%s' (pid %d) did not exit, and the instance "
                                      "has another owner now: nothing killed", name, (int)i.monitor_pid);
        /* The service first: while its monitor lives and has not reaped it, its pid cannot be reused. */
        if (now.pid > 0 && now.service_alive) {
                (void)kill(now.pid, SIGKILL);
                (void)kill(-now.pid, SIGKILL);
        }
        (void)kill(now.monitor_pid, SIGKILL);
        if (!wait_lock_free(fd, 5000))
                return nano_error_set(err, ETIMEDOUT, "the monitor of '%s' (pid %d) does not exit", name,
                                      (int)i.monitor_pid);
        state_update(home, name, "stopped", 137);
        return 0;
}

/* ---- Removing. */

static int rm_rf_at(int parent_fd, const char *name)
{
        _cleanup_close_ int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        struct dirent *de;
        DIR *d;

        if (fd < 0) {
                if (errno == ENOTDIR || errno == ELOOP)
                        return unlinkat(parent_fd, name, 0) < 0 ? -errno : 0;
                return errno == ENOENT ? 0 : -errno;
        }
        (void)fchmod(fd, 0700); /* a read-only directory the service made */
        d = fdopendir(fd);
        if (!d)
                return -errno;
        fd = -EBADF;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN)
                        (void)rm_rf_at(dirfd(d), de->d_name);
                else
                        (void)unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
        return unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}

int nano_instance_remove(const char *home, const char *name, bool force, NanoError *err)
{
        _cleanup_(nano_store_unrefp_rt) NanoStore *s = NULL;
        _cleanup_free_ char *dir = NULL, *instances = NULL, *pin = NULL;
        _cleanup_close_ int fd = -EBADF, lock = -EBADF, ifd = -EBADF;
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        char trash[NAME_MAX + 1];
        NanoInstanceInfo i;
        NanoError e = {};
        bool stopped = false;
        int r;

        r = instance_read(home, name, &i, err);
        if (r < 0)
                return r;
        nano_instance_info_done(&i);
        if (i.monitor_alive && !i.service_alive &&
            (i.state == NANO_STATE_EXITED || i.state == NANO_STATE_STOPPED || i.state == NANO_STATE_FAILED)) {
                /* Over, and its monitor is on its way out (it writes the final state, then exits): a
                 * moment's wait, not a refusal. */
                _cleanup_free_ char *d = NULL;
                _cleanup_close_ int dfd = -EBADF;
                if (instance_dir_path(home, name, &d) >= 0 &&
                    (dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0 && wait_lock_free(dfd, 3000))
                        i.monitor_alive = false;
        }
        if (i.monitor_alive || i.service_alive) {
                if (!force)
                        return nano_error_set(err, EBUSY, "the instance '%s' is running: stop it first (`nano stop %s`) "
                                              "or use `nano rm -f`", name, name);
                r = nano_instance_stop(home, name, 0, err);
                if (r < 0)
                        return r;
                stopped = true;
        }
        if (instance_dir_path(home, name, &dir) < 0 || asprintf(&instances, "%s/instances", home) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        /* Gone once stopped: its owner removed it (--rm), which is what we were asked to do. */
        if (fd < 0 && errno == ENOENT && stopped)
                return 0;
        if (fd < 0)
                return nano_error_set(err, errno, "cannot open the instance '%s': %m", name);
        /* Ours from now: a monitor that starts can only be for a new instance of this name. */
        lock = openat(fd, "spec.json", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) < 0)
                return nano_error_set(err, EBUSY, "the instance '%s' is still locked by its monitor", name);

        /* The cgroup first: one that cannot be removed (its processes do not go) keeps the instance,
         * for a `nano rm` later, rather than outliving it unnoticed with processes in it, where the
         * next instance of this name would find it and run without limits. */
        r = open_cgroup(home, name, &cg, &e);
        if (r > 0) {
                r = nano_cgroup_kill(cg, CGROUP_KILL_TIMEOUT_MS, &e);
                if (r >= 0)
                        r = nano_cgroup_remove(cg, &e);
        }
        if (r < 0)
                return nano_error_set(err, -r, "cannot remove the instance '%s': %s; the instance is kept, for "
                                      "`nano rm %s` once that is solved", name, e.message, name);

        /* Out of the way first, so that the name is free at once; then deleted. */
        ifd = open(instances, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (ifd < 0)
                return nano_error_set(err, errno, "cannot open '%s': %m", instances);
        snprintf(trash, sizeof trash, ".trash-%s-%ld", name, (long)getpid());
        if (renameat(ifd, name, ifd, trash) < 0)
                return errno == ENOENT && stopped ? 0 :
                       nano_error_set(err, errno, "cannot remove the instance '%s': %m", name);
        r = rm_rf_at(ifd, trash);
        if (r < 0)
                log_debug_errno(r, "removing '%s/%s': %m", instances, trash);

        /* The release may go with the next gc now. */
        if (nano_store_open(home, &s, &e) >= 0 && asprintf(&pin, "instance:%s", name) >= 0)
                (void)nano_store_unpin(s, pin, &e);
        return 0;
}

/* The child that deletes a trash: what it needs, at the top of its own stack (our memory is its
 * memory, and our frames are gone once we return). */
typedef struct Deleter {
        int dir_fd;  /* instances/ */
        int keep[2]; /* the instance's mount namespace and seccomp filter, or -1 */
        int wait_fd; /* reads EOF once we have exited; -1: do not wait */
        char trash[NAME_MAX + 1];
} Deleter;

static int deleter_main(void *arg)
{
        Deleter *d = arg;
        int fd = d->dir_fd, last = fd;
        char c;

        /* Until we have exited, it shares our memory while we run: system calls only, on its own stack,
         * and no errno read (ours may write it). Its own session: a Ctrl-C meant for the terminal's
         * next command does not cut it short. */
        (void)setsid();
        for (size_t i = 0; i < 2; i++)
                if (d->keep[i] > last)
                        last = d->keep[i];
        if (d->wait_fd > last)
                last = d->wait_fd;
        /* Everything of ours but what it needs: whoever reads our output sees its end at our exit. */
        for (int f = 0; f <= last; f++)
                if (f != fd && f != d->keep[0] && f != d->keep[1] && f != d->wait_fd)
                        (void)close(f);
        (void)syscall(SYS_close_range, (unsigned)last + 1, ~0u, 0u);
        if (d->wait_fd >= 0) {
                /* 0 at EOF; -1 only for a signal (EINTR), which we do not ask errno about. */
                while (read(d->wait_fd, &c, 1) != 0)
                        ;
                close(d->wait_fd);
        }
        /* We are gone: the memory is its alone, libc with it. The namespaces and the filter go first,
         * then the files. */
        for (size_t i = 0; i < 2; i++)
                if (d->keep[i] >= 0)
                        close(d->keep[i]);
        (void)rm_rf_at(fd, d->trash);
        return 0;
}

#define DELETER_STACK_SIZE (256 * 1024)

/* Deletes parent_fd/trash in a child that nobody waits for: its caller, the foreground `nano run
 * --rm`, is done once the instance's name and pin are gone, and the deletion (a synchronous block
 * discard per directory freed, on ext4 without a journal mounted with discard) need not delay the
 * exit the user waits for. keep_fds (-1 each where none), the instance's mount namespace and seccomp
 * filter, are let go of before the deletion: their teardown is the child's work.
 *
 * until_exit (the caller exits right after: the CLI) makes the child a clone(CLONE_VM), not a fork:
 * no copy of our page tables, and since it holds our memory until it is done, our exit does not unmap
 * it either (~0.2 ms of the exit the user waits for, on this machine). It waits, on its own stack and
 * with system calls only, for EOF on a pipe whose other end we hold until we exit; then it is the
 * memory's only user. Else (a library caller that goes on) a fork, which does not wait. Where neither
 * can be started, the caller deletes the trash itself. */
static int rm_rf_detached(int parent_fd, const char *trash, const int keep_fds[static 2], bool until_exit)
{
        /* Ours until we exit: the deleter reads EOF on its end then. */
        static int exit_pipe[2] = { -1, -1 };
        uint8_t *stack;
        Deleter *d;
        pid_t pid;
        int saved;

        if (until_exit && pipe2(exit_pipe, O_CLOEXEC) < 0)
                return -errno;
        stack = mmap(NULL, DELETER_STACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
                saved = errno;
                exit_pipe[0] = safe_close(exit_pipe[0]);
                exit_pipe[1] = safe_close(exit_pipe[1]);
                return -saved;
        }
        d = (Deleter *)(stack + DELETER_STACK_SIZE - sizeof(Deleter));
        *d = (Deleter){ .dir_fd = parent_fd, .keep = { keep_fds[0], keep_fds[1] },
                        .wait_fd = until_exit ? exit_pipe[0] : -1 };
        snprintf(d->trash, sizeof d->trash, "%s", trash);
#if !NANO_SANITIZED /* AddressSanitizer cannot follow a child in our memory: it forks */
        if (until_exit)
                pid = clone(deleter_main, (uint8_t *)d - 64, CLONE_VM | SIGCHLD, d);
        else
#endif
        {
                pid = fork();
                if (pid == 0)
                        _exit(deleter_main(d));
        }
        saved = errno;
        /* Its copy is its own; ours would keep it waiting. The stack is the child's until it exits
         * (after us, with clone()), and not ours to unmap; a fork has its own copy. */
        exit_pipe[0] = safe_close(exit_pipe[0]);
        if (pid < 0) {
                exit_pipe[1] = safe_close(exit_pipe[1]);
                (void)munmap(stack, DELETER_STACK_SIZE);
                return -saved;
        }
        if (!until_exit || NANO_SANITIZED)
                (void)munmap(stack, DELETER_STACK_SIZE);
        return 0;
}

int instance_remove_owned(const char *home, const char *name, NanoStore *store, NanoCgroup *cg,
                          const int keep_fds[static 2], bool until_exit)
{
        _cleanup_free_ char *instances = NULL, *pin = NULL;
        _cleanup_close_ int ifd = -EBADF;
        char trash[NAME_MAX + 1];
        NanoError e = {};
        int r;

        /* What nano_instance_remove() does, without finding out again what the caller knows: no
         * state or spec to parse, no store to open, no lock to wait for (the caller holds it). The
         * name and the pin go before we return; the files in a child we do not wait for. */
        if (cg && nano_cgroup_remove(cg, &e) < 0) {
                /* Its supervisor emptied it when the service was over: something that did not go.
                 * Kept, with the instance, for `nano rm` to try again and say why. */
                log_warning("%s: the instance '%s' is kept (`nano rm %s` removes it)", e.message, name, name);
                return -e.error;
        }
        if (asprintf(&instances, "%s/instances", home) < 0)
                return -ENOMEM;
        ifd = open(instances, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (ifd < 0)
                return -errno;
        snprintf(trash, sizeof trash, ".trash-%s-%ld", name, (long)getpid());
        if (renameat(ifd, name, ifd, trash) < 0)
                return -errno;
        if (asprintf(&pin, "instance:%s", name) >= 0)
                (void)nano_store_unpin(store, pin, &e);
        if (rm_rf_detached(ifd, trash, keep_fds, until_exit) >= 0)
                return 0;
        r = rm_rf_at(ifd, trash);
        if (r < 0)
                log_debug_errno(r, "removing '%s/%s': %m", instances, trash);
        return 0;
}

int nano_instance_log_paths(const char *home, const char *name, char **ret_old, char **ret_cur, NanoError *err)
{
        _cleanup_free_ char *dir = NULL;
        NanoInstanceInfo i;
        int r;

        r = instance_read(home, name, &i, err);
        if (r < 0)
                return r;
        nano_instance_info_done(&i);
        if (instance_dir_path(home, name, &dir) < 0 || asprintf(ret_old, "%s/logs/service.log.1", dir) < 0 ||
            asprintf(ret_cur, "%s/logs/service.log", dir) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        return 0;
}
