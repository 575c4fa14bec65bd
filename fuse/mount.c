/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The mount daemon's life cycle: one daemon per store, known by $NANO_HOME/mount.pid (locked with
 * flock() for as long as it runs, so liveness never depends on a pid that may have been reused) and
 * mount.state (where it serves, with which cache). Starting waits for readiness over a pipe; a dead
 * mount (ENOTCONN) is recognised and cleaned; unmounting goes through umount2() where this process
 * may, else through fusermount3. doc/mount.md tells the whole story. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "error.h"
#include "fuse-internal.h"
#include "log.h"
#include "util.h"

#define READY_TIMEOUT_MS  30000
#define HELPER_TIMEOUT_MS 10000
#define EXIT_TIMEOUT_MS   10000
#define LOG_ROTATE_SIZE   (UINT64_C(4) << 20)

extern char **environ;

/* ---- Paths. */

int nano_mount_canonicalize(const char *mountpoint, char **ret)
{
        _cleanup_free_ char *p = NULL, *dir = NULL;
        char *slash, *base;
        char resolved[PATH_MAX];

        if (!mountpoint || !*mountpoint || strchr(mountpoint, '\n'))
                return -EINVAL;
        if (mountpoint[0] == '/')
                p = strdup(mountpoint);
        else {
                char cwd[PATH_MAX];
                if (!getcwd(cwd, sizeof cwd))
                        return -errno;
                if (asprintf(&p, "%s/%s", cwd, mountpoint) < 0)
                        p = NULL;
        }
        if (!p)
                return -ENOMEM;
        for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--)
                p[n - 1] = '\0';

        /* A symlink is mounted on where it points, and the mount table names that. (lstat() of a
         * dead mount fails with ENOTCONN: then it is no symlink.) */
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISLNK(st.st_mode)) {
                if (!realpath(p, resolved))
                        return -errno;
                return (*ret = strdup(resolved)) ? 0 : -ENOMEM;
        }

        /* realpath() of the parent only: the mountpoint itself may be a dead mount (ENOTCONN). */
        slash = strrchr(p, '/');
        base = slash + 1;
        if (streq(base, ".") || streq(base, "..") || slash == p) {
                if (!realpath(p, resolved))
                        return -errno;
                return (*ret = strdup(resolved)) ? 0 : -ENOMEM;
        }
        *slash = '\0';
        if (!realpath(p, resolved))
                return -errno;
        if (asprintf(&dir, "%s/%s", streq(resolved, "/") ? "" : resolved, base) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(dir);
        return 0;
}

/* Decodes the octal escapes (\040 for a space…) of a mountinfo field in place. */
static void unescape_octal(char *s)
{
        char *w = s;

        for (char *r = s; *r;) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
                    r[3] >= '0' && r[3] <= '7') {
                        *w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
                        r += 4;
                } else
                        *w++ = *r++;
        }
        *w = '\0';
}

/* Finds the topmost mount on mountpoint in /proc/self/mountinfo: 1 and its type, 0 if none. */
static int mountinfo_find(const char *mountpoint, char *fstype, size_t size)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        int found = 0;

        if (!f)
                return -errno;
        while (getline(&line, &cap, f) > 0) {
                /* id parent major:minor root mountpoint options [optional…] - type source super */
                char *save = NULL, *field, *mp = NULL, *type = NULL;
                bool dash = false;
                int i = 0;
                for (field = strtok_r(line, " \n", &save); field;
                     field = strtok_r(NULL, " \n", &save), i++) {
                        if (i == 4)
                                mp = field;
                        else if (dash) {
                                type = field;
                                break;
                        } else if (i > 5 && streq(field, "-"))
                                dash = true;
                }
                if (!mp || !type)
                        continue;
                unescape_octal(mp);
                if (streq(mp, mountpoint)) {
                        snprintf(fstype, size, "%s", type);
                        found = 1; /* keep reading: the last one listed is on top */
                }
        }
        return found;
}

/* ---- The daemon's pid and state files. */

static int home_path(const char *home, const char *file, char **ret)
{
        return asprintf(ret, "%s/%s", home, file) < 0 ? -ENOMEM : 0;
}

typedef struct DaemonInfo {
        bool alive;
        pid_t pid;
        char mountpoint[4096];
        uint64_t cache_size;
        unsigned threads;
} DaemonInfo;

static pid_t read_pid(int fd)
{
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        long pid;

        if (n <= 0)
                return 0;
        buf[n] = '\0';
        pid = strtol(buf, NULL, 10);
        return pid > 0 && pid <= INT_MAX ? (pid_t)pid : 0;
}

static void daemon_info(const char *home, DaemonInfo *ret)
{
        _cleanup_free_ char *pid_path = NULL, *state_path = NULL, *line = NULL;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_fclose_ FILE *f = NULL;
        size_t cap = 0;

        *ret = (DaemonInfo){};
        if (home_path(home, NANO_MOUNT_PID_FILE, &pid_path) < 0 ||
            home_path(home, NANO_MOUNT_STATE_FILE, &state_path) < 0)
                return;
        fd = open(pid_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return;
        /* The daemon holds an exclusive lock for its whole life: if we can lock it, no one runs. */
        if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
                (void)flock(fd, LOCK_UN);
                return;
        }
        if (errno != EWOULDBLOCK)
                return;
        ret->alive = true;
        ret->pid = read_pid(fd);

        f = fopen(state_path, "re");
        if (!f)
                return;
        while (getline(&line, &cap, f) > 0) {
                line[strcspn(line, "\n")] = '\0';
                if (strncmp(line, "mountpoint=", 11) == 0)
                        snprintf(ret->mountpoint, sizeof ret->mountpoint, "%s", line + 11);
                else if (strncmp(line, "cache_size=", 11) == 0)
                        ret->cache_size = strtoull(line + 11, NULL, 10);
                else if (strncmp(line, "threads=", 8) == 0)
                        ret->threads = (unsigned)strtoul(line + 8, NULL, 10);
        }
}

/* Takes the store's pid file: the lock is held, and the pid written, until the fd is closed. */
static int pid_file_take(const char *home, int *ret_fd, pid_t *ret_other)
{
        _cleanup_free_ char *path = NULL;
        int r = home_path(home, NANO_MOUNT_PID_FILE, &path);

        if (r < 0)
                return r;
        for (unsigned attempt = 0; attempt < 8; attempt++) {
                _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
                struct stat a, b;
                char buf[32];

                if (fd < 0)
                        return -errno;
                if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                        if (errno != EWOULDBLOCK)
                                return -errno;
                        if (ret_other)
                                *ret_other = read_pid(fd);
                        return -EALREADY;
                }
                /* A daemon exiting removes the file after we opened it: we hold a lock on nothing. */
                if (fstat(fd, &a) < 0)
                        return -errno;
                if (stat(path, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
                        continue;
                if (ftruncate(fd, 0) < 0)
                        return -errno;
                snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
                r = pwrite_all(fd, buf, strlen(buf), 0);
                if (r < 0)
                        return r;
                *ret_fd = TAKE_FD(fd);
                return 0;
        }
        return -EBUSY;
}

static int state_file_write(const char *home, const char *mountpoint, const NanoFuseOptions *o)
{
        _cleanup_free_ char *path = NULL, *tmp = NULL, *text = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (home_path(home, NANO_MOUNT_STATE_FILE, &path) < 0 ||
            asprintf(&tmp, "%s.%ld.tmp", path, (long)getpid()) < 0 ||
            asprintf(&text, "pid=%ld\nmountpoint=%s\ncache_size=%llu\nthreads=%u\n", (long)getpid(),
                     mountpoint, (unsigned long long)o->cache_size, o->threads) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        r = write_all(fd, text, strlen(text));
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void)unlink(tmp);
        return r;
}

static void daemon_files_remove(const char *home)
{
        _cleanup_free_ char *pid_path = NULL, *state_path = NULL;

        if (home_path(home, NANO_MOUNT_STATE_FILE, &state_path) >= 0)
                (void)unlink(state_path);
        /* Last, and while the lock is still ours: whoever sees no pid file may start a daemon. */
        if (home_path(home, NANO_MOUNT_PID_FILE, &pid_path) >= 0)
                (void)unlink(pid_path);
}

/* ---- Status. */

int nano_mount_status(const char *home, const char *mountpoint, NanoMountStatus *ret)
{
        NanoMountStatus st = {};
        DaemonInfo d;
        char fstype[64];
        struct statvfs sv;
        int r;

        snprintf(st.mountpoint, sizeof st.mountpoint, "%s", mountpoint);
        daemon_info(home, &d);
        st.daemon_alive = d.alive;
        st.pid = d.pid;
        st.cache_size = d.cache_size;
        st.threads = d.threads;
        snprintf(st.daemon_mountpoint, sizeof st.daemon_mountpoint, "%s", d.mountpoint);

        r = mountinfo_find(mountpoint, fstype, sizeof fstype);
        if (r < 0)
                return r;
        if (r == 0 || strncmp(fstype, "fuse", 4) != 0)
                st.state = NANO_MOUNT_NONE; /* nothing, or a plain filesystem we may mount over */
        else if (!streq(fstype, "fuse.nano"))
                st.state = NANO_MOUNT_FOREIGN;
        else if (statvfs(mountpoint, &sv) < 0)
                /* statfs, not stat: the kernel may answer a stat from its attribute cache after the
                 * daemon died, while statfs always asks the daemon. ENOTCONN: the daemon is gone and
                 * the kernel aborted the connection. Anything else is not ours to clean. */
                st.state = errno == ENOTCONN ? NANO_MOUNT_STALE : NANO_MOUNT_FOREIGN;
        else if (d.alive && streq(d.mountpoint, mountpoint))
                st.state = NANO_MOUNT_LIVE;
        else
                st.state = NANO_MOUNT_FOREIGN; /* a live nano mount of another store */

        *ret = st;
        return 0;
}

/* ---- Helpers: fusermount3. */

/* Runs `fusermount3 ARGS…` in the C locale (its messages are parsed), with its output collected
 * into out. Bounded: killed after HELPER_TIMEOUT_MS. Returns its exit status. */
static int run_fusermount(const char *const *args, char *out, size_t size)
{
        _cleanup_close_ int rd = -EBADF;
        _cleanup_free_ char **envp = NULL;
        const char *argv[8] = { "fusermount3" };
        size_t n_env = 0, k = 1, len = 0;
        uint64_t deadline = now_ns() + (uint64_t)HELPER_TIMEOUT_MS * 1000000;
        int fds[2], status;
        pid_t pid;

        for (const char *const *a = args; *a && k < ELEMENTSOF(argv) - 1; a++)
                argv[k++] = *a;
        while (environ[n_env])
                n_env++;
        envp = calloc(n_env + 2, sizeof *envp);
        if (!envp)
                return -ENOMEM;
        k = 0;
        for (size_t i = 0; i < n_env; i++)
                if (strncmp(environ[i], "LC_", 3) != 0 && strncmp(environ[i], "LANG", 4) != 0)
                        envp[k++] = environ[i];
        envp[k] = (char *)"LC_ALL=C";

        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                safe_close(fds[0]);
                safe_close(fds[1]);
                return -errno;
        }
        if (pid == 0) {
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (null >= 0)
                        dup2(null, STDIN_FILENO);
                dup2(fds[1], STDOUT_FILENO);
                dup2(fds[1], STDERR_FILENO);
                execvpe(argv[0], (char **)argv, envp);
                dprintf(STDERR_FILENO, "cannot run fusermount3: %m\n");
                _exit(127);
        }
        safe_close(fds[1]);
        rd = fds[0];

        out[0] = '\0';
        for (;;) {
                int64_t left = (int64_t)(deadline - now_ns()) / 1000000;
                struct pollfd p = { .fd = rd, .events = POLLIN };
                char buf[512];
                ssize_t got;

                if (left <= 0 || poll(&p, 1, (int)left) == 0) {
                        kill(pid, SIGKILL);
                        (void)waitpid(pid, NULL, 0);
                        snprintf(out, size, "fusermount3 did not finish within %d s",
                                 HELPER_TIMEOUT_MS / 1000);
                        return -ETIMEDOUT;
                }
                got = read(rd, buf, sizeof buf);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        break;
                size_t take = MIN((size_t)got, size - 1 - len);
                memcpy(out + len, buf, take);
                len += take;
                out[len] = '\0';
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        while (len > 0 && out[len - 1] == '\n')
                out[--len] = '\0';
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Unmounts with umount2() if we may (root, or root of the user namespace that mounted it), else
 * with fusermount3. */
static int unmount(const char *mountpoint, bool lazy, NanoError *err)
{
        const char *args[5] = { "-u" };
        char out[1024];
        size_t k = 1;
        int r;

        if (lazy)
                args[k++] = "-z";
        args[k++] = "--";
        args[k++] = mountpoint;

        if (umount2(mountpoint, (lazy ? MNT_DETACH : 0) | UMOUNT_NOFOLLOW) == 0)
                return 0;
        if (errno == EBUSY)
                return -EBUSY;
        if (errno == EINVAL)
                return nano_error_set(err, EINVAL, "'%s' is not mounted", mountpoint);
        if (errno != EPERM && errno != EACCES)
                return nano_error_set(err, errno, "cannot unmount '%s': %m", mountpoint);

        r = run_fusermount(args, out, sizeof out);
        if (r == 0)
                return 0;
        if (strstr(out, "busy"))
                return -EBUSY;
        if (strstr(out, "not found") || strstr(out, "Invalid argument"))
                return nano_error_set(err, EINVAL, "'%s' is not mounted", mountpoint);
        if (r < 0)
                return nano_error_set(err, r, "cannot unmount '%s': %s", mountpoint, out);
        return nano_error_set(err, EPERM, "cannot unmount '%s': %s", mountpoint,
                              out[0] ? out : "fusermount3 failed");
}

/* Waits until process pid exits (pidfd, no polling); where pidfds are missing, watches the pid
 * file's lock instead. Bounded by timeout_ms. */
static int wait_daemon_exit(const char *home, pid_t pid, int timeout_ms)
{
        uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;
        DaemonInfo d;

#ifdef SYS_pidfd_open
        _cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd >= 0) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };
                int r;
                do
                        r = poll(&p, 1, timeout_ms);
                while (r < 0 && errno == EINTR);
                return r > 0 ? 0 : -ETIMEDOUT;
        }
        if (errno == ESRCH)
                return 0;
#endif
        do {
                daemon_info(home, &d);
                if (!d.alive || d.pid != pid)
                        return 0;
                (void)nanosleep(&(struct timespec){ .tv_nsec = 20 * 1000 * 1000 }, NULL);
        } while (now_ns() < deadline);
        return -ETIMEDOUT;
}

int nano_mount_clean_stale(const char *home, const char *mountpoint, NanoError *err)
{
        DaemonInfo d;
        int r = unmount(mountpoint, true, err);

        if (r == -EBUSY) /* lazy unmounts are never busy, but be clear if one is */
                return nano_error_set(err, r, "cannot unmount the stale mount '%s': %m", mountpoint);
        if (r < 0)
                return r;
        /* A daemon whose connection died is on its way out: let it go before another one starts. */
        daemon_info(home, &d);
        if (d.alive && d.pid > 0 && streq(d.mountpoint, mountpoint) &&
            wait_daemon_exit(home, d.pid, EXIT_TIMEOUT_MS) < 0)
                return nano_error_set(err, ETIMEDOUT,
                                      "the daemon of the stale mount '%s' (pid %ld) does not exit",
                                      mountpoint, (long)d.pid);
        return 0;
}

int nano_mount_stop(const char *home, const char *mountpoint, bool lazy, NanoError *err)
{
        NanoMountStatus st;
        int r;

        r = nano_mount_status(home, mountpoint, &st);
        if (r < 0)
                return nano_error_set(err, r, "cannot read the mount table: %m");
        if (st.state == NANO_MOUNT_NONE)
                return nano_error_set(err, EINVAL, "'%s' is not mounted", mountpoint);
        if (st.state == NANO_MOUNT_FOREIGN)
                return nano_error_set(err, EINVAL, "'%s' is not a mount of this nano store", mountpoint);

        r = unmount(mountpoint, lazy || st.state == NANO_MOUNT_STALE, err);
        if (r == -EBUSY)
                return nano_error_set(err, EBUSY,
                                      "'%s' is busy: a process still uses files under it; close them or use "
                                      "`nano umount --lazy`",
                                      mountpoint);
        if (r < 0)
                return r;

        /* The daemon sees its session end, removes its files and exits; after a lazy unmount that
         * happens only when the last file under it is closed, so there is nothing to wait for. */
        if (!lazy && st.state == NANO_MOUNT_LIVE && st.pid > 0 &&
            wait_daemon_exit(home, st.pid, EXIT_TIMEOUT_MS) < 0)
                return 1;
        return 0;
}

/* ---- Running and starting the daemon. */

int nano_mount_run(NanoStore *s, const char *mountpoint, const NanoFuseOptions *o,
                   void (*ready)(void *userdata), void *userdata, pid_t *ret_pid, NanoError *err)
{
        _cleanup_(nano_fuse_freep) NanoFuse *f = NULL;
        _cleanup_close_ int pid_fd = -EBADF;
        const char *home = nano_store_home(s);
        NanoFuseOptions opts = *o;
        char b[32];
        int r;

        if (opts.threads == 0)
                opts.threads = NANO_FUSE_THREADS_DEFAULT;
        r = pid_file_take(home, &pid_fd, ret_pid);
        if (r == -EALREADY)
                return r;
        if (r < 0)
                return nano_error_set(err, r, "cannot take '%s/%s': %m", home, NANO_MOUNT_PID_FILE);
        r = state_file_write(home, mountpoint, &opts);
        if (r < 0) {
                nano_error_set(err, r, "cannot write '%s/%s': %m", home, NANO_MOUNT_STATE_FILE);
                goto finish;
        }

        r = nano_fuse_new(s, &opts, &f);
        if (r < 0) {
                nano_error_set(err, r, "cannot set up the filesystem: %m");
                goto finish;
        }
        r = nano_fuse_mount(f, mountpoint);
        if (r < 0) {
                const char *why = nano_fuse_last_error();
                if (why[0])
                        nano_error_set(err, r, "cannot mount on '%s': %s", mountpoint, why);
                else if (r == -EPERM && access(mountpoint, W_OK) < 0)
                        nano_error_set(err, r, "cannot mount on '%s': fusermount3 needs write access to it",
                                       mountpoint);
                else if (r == -EPERM)
                        nano_error_set(err, r,
                                       "cannot mount on '%s': fusermount3 refused (its reason is logged)",
                                       mountpoint);
                else
                        nano_error_set(err, r, "cannot mount on '%s': %m", mountpoint);
                goto finish;
        }
        log_notice("pid %ld serves the store '%s' on '%s' (cache %s, %u threads)", (long)getpid(), home,
                   mountpoint, format_bytes(opts.cache_size, b, sizeof b), opts.threads);
        r = nano_fuse_loop(f, ready, userdata);
        if (r < 0)
                nano_error_set(err, r, "the mount on '%s' does not answer: %m", mountpoint);
        else if (r > 0)
                log_notice("pid %ld: %s, unmounted '%s', exiting", (long)getpid(), strsignal(r), mountpoint);
        else
                log_notice("pid %ld: '%s' was unmounted, exiting", (long)getpid(), mountpoint);

finish:
        f = nano_fuse_free(f); /* unmounts if still mounted, before the files go */
        daemon_files_remove(home);
        return r < 0 ? r : 0;
}

/* What the daemon tells `nano mount` over the readiness pipe: one fixed-size record, written with
 * one write() (< PIPE_BUF, so atomic). */
typedef struct ReadyMessage {
        int32_t error; /* 0: ready; else a positive errno */
        int32_t pid;
        char message[1024];
} ReadyMessage;

static void send_message(int fd, int error, const char *message)
{
        ReadyMessage m = { .error = error < 0 ? -error : error, .pid = (int32_t)getpid() };

        if (fd < 0)
                return;
        snprintf(m.message, sizeof m.message, "%s", message ? message : "");
        (void)write(fd, &m, sizeof m);
}

static void daemon_ready(void *userdata)
{
        int *fd = userdata;

        send_message(*fd, 0, NULL);
        *fd = safe_close(*fd); /* `nano mount` returns at once; nothing else goes over the pipe */
}

/* Closes every fd but the store's and the readiness pipe: one inherited from the caller (a pipe a
 * test harness reads to EOF…) must not stay open for the daemon's lifetime. */
static void close_inherited_fds(const NanoStore *s, int keep)
{
        _cleanup_close_ int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        const int keep_fds[] = { keep,       s->store_fd, s->objects_fd, s->manifests_fd,
                                 s->refs_fd, s->tmp_fd,   s->lock_fd };
        struct dirent *de;
        DIR *d;

        if (dfd < 0)
                return;
        d = fdopendir(dfd);
        if (!d)
                return;
        int own = TAKE_FD(dfd);
        while ((de = readdir(d))) {
                char *end;
                long fd = strtol(de->d_name, &end, 10);
                bool kept = false;
                if (*end || fd < 3 || fd == own)
                        continue;
                for (size_t i = 0; i < ELEMENTSOF(keep_fds); i++)
                        kept = kept || keep_fds[i] == fd;
                if (!kept)
                        (void)close((int)fd);
        }
        closedir(d);
}

static int open_log(const char *home)
{
        _cleanup_free_ char *path = NULL, *old = NULL;
        struct stat st;
        int fd;

        if (home_path(home, NANO_MOUNT_LOG_FILE, &path) < 0 || asprintf(&old, "%s.1", path) < 0)
                return -ENOMEM;
        /* One generation of history is enough for a log that only says when things went wrong. */
        if (stat(path, &st) == 0 && (uint64_t)st.st_size > LOG_ROTATE_SIZE)
                (void)rename(path, old);
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        return fd < 0 ? -errno : fd;
}

_noreturn_ static void daemon_main(NanoStore *s, const char *mountpoint, const NanoFuseOptions *o, int fd)
{
        NanoError err = {};
        char when[64];
        time_t now = time(NULL);
        struct tm tm;
        pid_t other = 0;
        int r, null, log_fd;

        /* The daemon leaves the caller's directory: a relative NANO_HOME must not depend on it. */
        char *home = realpath(s->home, NULL);
        if (home) {
                free(s->home);
                s->home = home;
        }
        close_inherited_fds(s, fd);
        /* `nano mount` may be gone (killed while waiting): its pipe must not kill us. */
        (void)signal(SIGPIPE, SIG_IGN);
        (void)umask(022);
        if (chdir("/") < 0) {
                /* Not fatal: only keeps the daemon from pinning the caller's directory. */
        }
        null = open("/dev/null", O_RDWR | O_CLOEXEC);
        log_fd = open_log(nano_store_home(s));
        if (null < 0 || log_fd < 0) {
                send_message(fd, null < 0 ? errno : -log_fd, "cannot open the daemon's log or /dev/null");
                _exit(1);
        }
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        safe_close(null);
        safe_close(log_fd);

        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", localtime_r(&now, &tm));
        log_notice("mount daemon %ld starting at %s", (long)getpid(), when);

        r = nano_mount_run(s, mountpoint, o, daemon_ready, &fd, &other, &err);
        if (r == -EALREADY) {
                char msg[64];
                snprintf(msg, sizeof msg, "%ld", (long)other);
                send_message(fd, EALREADY, msg);
                _exit(1);
        }
        if (r < 0) {
                if (err.message[0])
                        log_error("%s", err.message);
                else
                        log_error_errno(r, "the mount daemon failed: %m");
                /* Only if readiness was not signalled yet: then `nano mount` is still waiting. */
                send_message(fd, r, err.message[0] ? err.message : NULL);
                _exit(1);
        }
        _exit(0);
}

int nano_mount_start(NanoStore *s, const char *mountpoint, const NanoFuseOptions *o, pid_t *ret_pid,
                     NanoError *err)
{
        _cleanup_close_ int rd = -EBADF;
        uint64_t deadline = now_ns() + (uint64_t)READY_TIMEOUT_MS * 1000000;
        ReadyMessage m = {};
        size_t got = 0;
        int fds[2], status;
        pid_t pid;

        if (pipe2(fds, O_CLOEXEC) < 0)
                return nano_error_set(err, errno, "cannot create a pipe: %m");
        fflush(NULL); /* or the children would write our buffered output again */

        pid = fork();
        if (pid < 0) {
                safe_close(fds[0]);
                safe_close(fds[1]);
                return nano_error_set(err, errno, "cannot fork: %m");
        }
        if (pid == 0) {
                /* Double fork: the daemon is in a session of its own, not a session leader (it can
                 * never acquire a terminal), and is reparented to init (or the subreaper). */
                safe_close(fds[0]);
                if (setsid() < 0)
                        _exit(1);
                pid_t d = fork();
                if (d < 0) {
                        send_message(fds[1], errno, "cannot fork the daemon");
                        _exit(1);
                }
                if (d == 0)
                        daemon_main(s, mountpoint, o, fds[1]);
                _exit(0);
        }
        safe_close(fds[1]);
        rd = fds[0];
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;

        while (got < sizeof m) {
                int64_t left = (int64_t)(deadline - now_ns()) / 1000000;
                struct pollfd p = { .fd = rd, .events = POLLIN };
                ssize_t n;

                if (left <= 0 || poll(&p, 1, (int)left) == 0) {
                        /* The daemon sends its pid with its answer; without one, the pid file names it. */
                        DaemonInfo d;
                        daemon_info(nano_store_home(s), &d);
                        if (d.alive && d.pid > 0)
                                (void)kill(d.pid, SIGTERM);
                        return nano_error_set(
                                err, ETIMEDOUT, "the mount daemon did not answer within %d s; see '%s/%s'",
                                READY_TIMEOUT_MS / 1000, nano_store_home(s), NANO_MOUNT_LOG_FILE);
                }
                n = read(rd, (char *)&m + got, sizeof m - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return nano_error_set(err, errno, "cannot read from the mount daemon: %m");
                if (n == 0)
                        return nano_error_set(err, EIO,
                                              "the mount daemon exited before mounting; see '%s/%s'",
                                              nano_store_home(s), NANO_MOUNT_LOG_FILE);
                got += (size_t)n;
        }
        m.message[sizeof m.message - 1] = '\0';
        if (m.error == EALREADY) {
                if (ret_pid)
                        *ret_pid = (pid_t)strtol(m.message, NULL, 10);
                return -EALREADY;
        }
        if (m.error != 0 && m.message[0])
                return nano_error_set(err, m.error, "%s", m.message);
        if (m.error != 0)
                return nano_error_set(err, m.error, "the mount daemon failed: %m");
        if (ret_pid)
                *ret_pid = m.pid;
        return 0;
}
