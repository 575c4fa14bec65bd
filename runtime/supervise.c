/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The supervisor of one instance: starts its service, reaps it (and anything orphaned below it: we
 * are a child subreaper), forwards signals, restarts per policy with a capped exponential back-off,
 * caps the service's log, and keeps state.json true.
 *
 * libc only, no threads, no allocation after init: this file is also the whole of the static
 * `nano-monitor`, which must stay small (doc/run.md). One poll() loop over a signalfd (SIGCHLD and the
 * forwarded signals), the service's pidfd where the kernel has pidfd_open(), and the log pipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime-internal.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

#define BACKOFF_FIRST_MS 100u
#define BACKOFF_MAX_MS 30000u
#define STABLE_NS (UINT64_C(10) * 1000000000) /* running this long resets the back-off */
/* A transient service's state.json comes this long after its start, not at once: the start is when
 * the service needs the CPU most, and one that is over by then (a command, not a service) never
 * needs one. Until then `nano ps` says "starting". */
#define TRANSIENT_STATE_DELAY_NS (UINT64_C(5) * 1000000)
/* `nano stop` sends SIGTERM with sigqueue() and this in the value's high bits, the timeout below. */
#define STOP_MAGIC 0x5a000000
#define STOP_MAGIC_MASK 0xff000000
/* How long the processes left in the cgroup have to go after SIGKILL (one in D state may take a
 * while): bounded, as `nano stop` waits for us. */
#define CGROUP_KILL_TIMEOUT_MS 3000u

bool nano_instance_name_is_valid(const char *s)
{
        size_t n;

        if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= '0' && s[0] <= '9')))
                return false;
        n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-");
        return s[n] == 0 && n <= NANO_INSTANCE_NAME_MAX;
}

static const char *const state_names[_NANO_STATE_MAX] = {
        [NANO_STATE_STARTING] = "starting", [NANO_STATE_RUNNING] = "running",
        [NANO_STATE_EXITED] = "exited",     [NANO_STATE_RESTARTING] = "restarting",
        [NANO_STATE_STOPPED] = "stopped",   [NANO_STATE_FAILED] = "failed",
        [NANO_STATE_UNKNOWN] = "unknown",
};

const char *nano_instance_state_to_string(NanoInstanceState s)
{
        return (unsigned)s < _NANO_STATE_MAX ? state_names[s] : NULL;
}

NanoInstanceState nano_instance_state_from_string(const char *s)
{
        for (unsigned i = 0; s && i < _NANO_STATE_MAX; i++)
                if (strcmp(s, state_names[i]) == 0)
                        return (NanoInstanceState)i;
        return _NANO_STATE_INVALID;
}

static const char *const restart_names[_NANO_RESTART_MAX] = {
        [NANO_RESTART_NO] = "no",
        [NANO_RESTART_ON_FAILURE] = "on-failure",
        [NANO_RESTART_ALWAYS] = "always",
};

const char *nano_restart_policy_to_string(NanoRestartPolicy p)
{
        return (unsigned)p < _NANO_RESTART_MAX ? restart_names[p] : NULL;
}

NanoRestartPolicy nano_restart_policy_from_string(const char *s)
{
        for (unsigned i = 0; s && i < _NANO_RESTART_MAX; i++)
                if (strcmp(s, restart_names[i]) == 0)
                        return (NanoRestartPolicy)i;
        return _NANO_RESTART_INVALID;
}

static uint64_t mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t real_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int xclose(int fd)
{
        if (fd >= 0) {
                int saved = errno;
                close(fd);
                errno = saved;
        }
        return -1;
}

void report_send(int fd, int type, int stage, int pid, const NanoError *e)
{
        Report r = { .type = type, .stage = stage, .pid = pid };
        ssize_t n;

        if (e)
                r.error = *e;
        do
                n = write(fd, &r, sizeof r);
        while (n < 0 && errno == EINTR);
}

int report_exit_code(const Report *r)
{
        if (r->type != REPORT_ERROR || r->stage != STAGE_EXEC)
                return NANO_EXIT_RUN_FAILED_CODE;
        return r->error.error == ENOENT ? 127 : 126;
}

uint64_t proc_starttime(pid_t pid)
{
        char path[64], buf[1024], *p;
        unsigned long long v = 0;
        ssize_t n;
        int fd;

        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
                return 0;
        buf[n] = 0;
        /* The command name may hold spaces and parentheses: fields count from the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return 0;
        p++;
        for (int field = 3; field < 22 && p; field++) {
                p = strchr(p + 1, ' ');
        }
        if (!p || sscanf(p, " %llu", &v) != 1)
                return 0;
        return v;
}

const char *json_escape(const char *s, char *buf, size_t size)
{
        size_t o = 0;

        for (; s && *s && o + 7 < size; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\') {
                        buf[o++] = '\\';
                        buf[o++] = (char)c;
                } else if (c < 0x20) {
                        o += (size_t)snprintf(buf + o, size - o, "\\u%04x", c);
                } else
                        buf[o++] = (char)c;
        }
        buf[o] = 0;
        return buf;
}

const char *format_iso_time(int64_t ns, char buf[40])
{
        /* UTC by arithmetic (days to civil date, proleptic Gregorian: H. Hinnant's algorithm) rather
         * than gmtime_r(), whose first call in a process loads /etc/localtime: seven system calls
         * on every start, for a time zone nobody asked for. */
        int64_t secs = ns / 1000000000, days = secs / 86400, rem = secs % 86400;
        int64_t era, doe, yoe, doy, mp, y, m, d;

        if (rem < 0) {
                rem += 86400;
                days--;
        }
        days += 719468;
        era = (days >= 0 ? days : days - 146096) / 146097;
        doe = days - era * 146097;
        yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        mp = (5 * doy + 2) / 153;
        d = doy - (153 * mp + 2) / 5 + 1;
        m = mp < 10 ? mp + 3 : mp - 9;
        y = yoe + era * 400 + (m <= 2);
        snprintf(buf, 40, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (int)y, (int)m, (int)d, (int)(rem / 3600),
                 (int)(rem / 60 % 60), (int)(rem % 60), (int)((ns / 1000000) % 1000));
        return buf;
}

void supervisor_sigset(sigset_t *ret)
{
        sigemptyset(ret);
        sigaddset(ret, SIGCHLD);
        sigaddset(ret, SIGTERM);
        sigaddset(ret, SIGINT);
        sigaddset(ret, SIGHUP);
        sigaddset(ret, SIGQUIT);
        sigaddset(ret, SIGUSR1);
        sigaddset(ret, SIGUSR2);
}

void supervisor_note(Supervisor *s, const char *fmt, ...)
{
        char line[1400], t[40];
        va_list ap;
        int n;

        if (s->monitor_log_fd < 0)
                return;
        n = snprintf(line, sizeof line, "%s ", format_iso_time(real_ns(), t));
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (n > (int)sizeof line - 2)
                n = (int)sizeof line - 2;
        line[n++] = '\n';
        (void)!write(s->monitor_log_fd, line, (size_t)n);
}

static const char *null_or_int(char *buf, size_t size, long v)
{
        if (v < 0)
                return "null";
        snprintf(buf, size, "%ld", v);
        return buf;
}

int supervisor_write_state(Supervisor *s)
{
        static char out[64 * 1024];
        char st[40], ft[40], ut[40], started[48], finished[48], err[2200], b1[24], b2[24], b3[24], b4[24], b5[24];
        const char *sig = NULL;
        int n, fd;

        if (s->exit_signal > 0)
                sig = sigabbrev_np(s->exit_signal);
        snprintf(started, sizeof started, s->started_ns ? "\"%s\"" : "null",
                 format_iso_time(s->started_ns, st));
        snprintf(finished, sizeof finished, s->finished_ns ? "\"%s\"" : "null",
                 format_iso_time(s->finished_ns, ft));
        if (s->error[0]) {
                char e[2100];
                snprintf(err, sizeof err, "\"%s\"", json_escape(s->error, e, sizeof e));
        } else
                strcpy(err, "null");

        n = snprintf(out, sizeof out,
                     "{\"state\":\"%s\",\"pid\":%s,\"pid_starttime\":%llu,\"monitor_pid\":%s,\"restarts\":%u,"
                     "\"exit_code\":%s,\"exit_status\":%s,\"exit_signal\":%s,\"exit_signal_name\":%s%s%s,"
                     "\"started_at\":%s,\"finished_at\":%s,\"updated_at\":\"%s\",\"error\":%s%s%s}\n",
                     nano_instance_state_to_string(s->state), null_or_int(b1, sizeof b1, s->pid > 0 ? s->pid : -1),
                     (unsigned long long)s->pid_starttime,
                     null_or_int(b2, sizeof b2, s->monitor_pid > 0 ? s->monitor_pid : -1), s->restarts,
                     null_or_int(b3, sizeof b3, s->exit_code), null_or_int(b4, sizeof b4, s->exit_status),
                     null_or_int(b5, sizeof b5, s->exit_signal > 0 ? s->exit_signal : -1),
                     sig ? "\"" : "", sig ? sig : "null", sig ? "\"" : "", started, finished,
                     format_iso_time(real_ns(), ut), err, s->static_json && s->static_json[0] ? "," : "",
                     s->static_json ? s->static_json : "");
        if (n < 0 || (size_t)n >= sizeof out)
                return -E2BIG;
        if (s->instance_fd < 0) /* `nano exec`: nothing to record */
                return 0;

        fd = openat(s->instance_fd, "state.json.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        if (write(fd, out, (size_t)n) != n) {
                int r = errno ? -errno : -EIO;
                close(fd);
                return r;
        }
        close(fd);
        if (renameat(s->instance_fd, "state.json.tmp", s->instance_fd, "state.json") < 0)
                return -errno;
        return 0;
}

static int open_log(Supervisor *s, const char *name)
{
        if (s->instance_fd < 0)
                return -1;
        return openat(s->instance_fd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
}

int supervisor_init(Supervisor *s)
{
        sigset_t set;
        struct stat st;
        int fds[2];

        s->signal_fd = s->log_rfd = s->log_wfd = s->service_log_fd = s->monitor_log_fd = s->pidfd = -1;
        s->exit_code = s->exit_status = s->exit_signal = -1;
        s->monitor_pid = getpid();
        s->state = NANO_STATE_STARTING;
        if (!s->log_max)
                s->log_max = NANO_RUN_LOG_MAX_DEFAULT;

        /* Orphans below the service (daemons that double-fork, the first child of a pid namespace
         * start) are reparented to us, so that we reap them and nothing is left as a zombie. */
        (void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        signal(SIGPIPE, SIG_IGN);
        supervisor_sigset(&set);
        if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
                return -errno;
        s->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        if (s->signal_fd < 0)
                return -errno;

        if (!s->transient)
                s->monitor_log_fd = open_log(s, "logs/monitor.log");
        if (s->detached) {
                if (pipe2(fds, O_CLOEXEC) < 0)
                        return -errno;
                s->log_rfd = fds[0];
                s->log_wfd = fds[1];
                (void)fcntl(s->log_rfd, F_SETFL, O_NONBLOCK);
                s->service_log_fd = open_log(s, "logs/service.log");
                if (s->service_log_fd < 0)
                        return -errno;
                if (fstat(s->service_log_fd, &st) == 0)
                        s->service_log_size = (uint64_t)st.st_size;
        }
        return 0;
}

void supervisor_done(Supervisor *s)
{
        s->signal_fd = xclose(s->signal_fd);
        s->log_rfd = xclose(s->log_rfd);
        s->log_wfd = xclose(s->log_wfd);
        s->service_log_fd = xclose(s->service_log_fd);
        s->monitor_log_fd = xclose(s->monitor_log_fd);
        s->pidfd = xclose(s->pidfd);
        s->sync_fd = xclose(s->sync_fd);
}

/* ---- Logs: copied from the pipe, rotated to service.log.1 past log_max. */

static void log_write(Supervisor *s, const char *buf, size_t n)
{
        while (n > 0 && s->service_log_fd >= 0) {
                size_t room;
                ssize_t w;

                if (s->service_log_size >= s->log_max) {
                        /* Rotation by rename: `nano logs -f` sees the inode change and reopens. The cap
                         * is on bytes, so a line may straddle the two files. */
                        (void)renameat(s->instance_fd, "logs/service.log", s->instance_fd, "logs/service.log.1");
                        close(s->service_log_fd);
                        s->service_log_fd = open_log(s, "logs/service.log");
                        s->service_log_size = 0;
                        continue;
                }
                room = (size_t)(s->log_max - s->service_log_size);
                w = write(s->service_log_fd, buf, n < room ? n : room);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return;
                buf += w;
                n -= (size_t)w;
                s->service_log_size += (uint64_t)w;
        }
}

static void log_drain(Supervisor *s)
{
        static char buf[16384];

        if (s->log_rfd < 0)
                return;
        for (;;) {
                ssize_t n = read(s->log_rfd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return;
                log_write(s, buf, (size_t)n);
        }
}

/* ---- Starting. */

int supervisor_collect(pid_t child, int rfd, NanoError *err, int *ret_code)
{
        pid_t service = child;
        bool failed = false;
        Report r;

        for (;;) {
                ssize_t n = read(rfd, &r, sizeof r);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                if (n != (ssize_t)sizeof r)
                        continue;
                if (r.type == REPORT_PID && r.pid > 0)
                        service = r.pid;
                else if (r.type == REPORT_ERROR && !failed) {
                        failed = true;
                        *err = r.error;
                        if (!err->error)
                                err->error = EIO;
                        *ret_code = report_exit_code(&r);
                }
        }
        close(rfd);
        if (failed) {
                /* The child exits right after its report: reap it here, so that the loop never takes it
                 * for the service. */
                while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
                        ;
                return -err->error;
        }
        return service;
}

int supervisor_spawn_exec(Supervisor *s, NanoError *err, int *ret_code)
{
        char *argv[] = { (char *)s->nano_exe, (char *)"--home", (char *)s->home, (char *)"__spawn",
                         (char *)s->name, NULL };
        sigset_t none;
        int fds[2];
        pid_t pid;

        if (pipe2(fds, O_CLOEXEC) < 0) {
                *ret_code = NANO_EXIT_RUN_FAILED_CODE;
                err->error = errno;
                snprintf(err->message, sizeof err->message, "cannot create a pipe: %s", strerror(errno));
                return -err->error;
        }
        /* vfork: the child only sets up its descriptors and execs, so it may borrow our memory (we
         * sleep until it has exec'ed): no copy of the monitor's page tables at every restart. */
#if NANO_SANITIZED
        pid = fork();
#else
        pid = vfork();
#endif
        if (pid < 0) {
                int e = errno;
                close(fds[0]);
                close(fds[1]);
                *ret_code = NANO_EXIT_RUN_FAILED_CODE;
                err->error = e;
                snprintf(err->message, sizeof err->message, "cannot fork: %s", strerror(e));
                return -e;
        }
        if (pid == 0) {
                NanoError e = {};
                int null;

                /* Only async-signal-safe calls until exec, and no writes to anything of ours but these
                 * locals. The mask and ignored signals survive execve(): give the service the
                 * defaults (for itself: a vfork child has its own copy of both). */
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_DFL);
                null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (null < 0 || dup2(null, 0) < 0 || dup2(fds[1], 3) < 0 ||
                    (s->log_wfd >= 0 && (dup2(s->log_wfd, 1) < 0 || dup2(s->log_wfd, 2) < 0))) {
                        e.error = errno;
                        strcpy(e.message, "cannot set up the file descriptors of the service");
                        report_send(fds[1], REPORT_ERROR, STAGE_SETUP, 0, &e);
                        _exit(125);
                }
                execv(s->nano_exe, argv);
                e.error = errno;
                snprintf(e.message, sizeof e.message, "cannot execute '%s' to start the service: %s",
                         s->nano_exe, strerror(errno));
                report_send(3, REPORT_ERROR, STAGE_SETUP, 0, &e);
                _exit(125);
        }
        close(fds[1]);
        return supervisor_collect(pid, fds[0], err, ret_code);
}

static int pidfd_open_(pid_t pid)
{
        long fd = syscall(SYS_pidfd_open, pid, 0);
        return fd < 0 ? -1 : (int)fd;
}

/* Signals the service, and in detached mode its whole process group (it called setsid()). */
static void kill_service(Supervisor *s, int sig)
{
        if (s->pid <= 0)
                return;
        if (s->pidfd >= 0 && syscall(SYS_pidfd_send_signal, s->pidfd, sig, NULL, 0) < 0 && errno == ESRCH)
                return;
        if (s->pidfd < 0)
                (void)kill(s->pid, sig);
        if (s->detached)
                (void)kill(-s->pid, sig);
}

/* Empties the instance's cgroup: a process that left the service's group (setsid(), a double fork)
 * is still in it, and would outlive the instance, keep its cgroup from being removed and its name's
 * next instance from getting limits. */
static void kill_cgroup(Supervisor *s)
{
        for (unsigned i = 0; i < s->n_cgroup_fd; i++) {
                int r = nano_cgroup_kill_at(s->cgroup_fd[i], CGROUP_KILL_TIMEOUT_MS);
                if (r > 0)
                        supervisor_note(s, "%d process%s left in the cgroup after the service: killed", r,
                                        r == 1 ? "" : "es");
                else if (r < 0)
                        supervisor_note(s, "cannot empty the cgroup after the service: %s",
                                        r == -EBUSY ? "processes still there after SIGKILL" : strerror(-r));
        }
}

static int start(Supervisor *s, NanoError *err, int *ret_code)
{
        pid_t pid;

        *err = (NanoError){};
        *ret_code = 0;
        s->state = NANO_STATE_STARTING;
        pid = s->spawn(s, err, ret_code);
        s->started_ns = real_ns();
        if (pid < 0) {
                s->state = NANO_STATE_FAILED;
                s->pid = 0;
                s->exit_code = *ret_code;
                s->finished_ns = s->started_ns;
                snprintf(s->error, sizeof s->error, "%s", err->message[0] ? err->message : strerror(-pid));
                supervisor_note(s, "the service failed to start: %s", s->error);
                (void)supervisor_write_state(s);
                return pid;
        }
        s->pid = pid;
        s->pidfd = xclose(s->pidfd);
        s->pidfd = pidfd_open_(pid);
        s->running_since = mono_ns();
        s->state = NANO_STATE_RUNNING;
        s->error[0] = 0;
        s->exit_code = s->exit_status = s->exit_signal = -1;
        s->finished_ns = 0;
        supervisor_note(s, "service started, pid %d", (int)pid);
        if (s->transient) {
                s->pid_starttime = 0;
                s->state_due = s->running_since + TRANSIENT_STATE_DELAY_NS;
                return 0;
        }
        s->pid_starttime = proc_starttime(pid);
        (void)supervisor_write_state(s);
        return 0;
}

int supervisor_first_start(Supervisor *s, NanoError *err, int *ret_code)
{
        int r = start(s, err, ret_code);

        if (s->sync_fd >= 0) {
                /* The result for `nano run -d`, which waits for it. */
                report_send(s->sync_fd, r < 0 ? REPORT_ERROR : REPORT_PID,
                            *ret_code == 126 || *ret_code == 127 ? STAGE_EXEC : STAGE_SETUP, (int)s->pid, err);
                s->sync_fd = xclose(s->sync_fd);
        }
        return r;
}

static bool wants_restart(const Supervisor *s)
{
        if (s->stop_requested)
                return false;
        switch (s->restart) {
        case NANO_RESTART_ALWAYS:
                return true;
        case NANO_RESTART_ON_FAILURE:
                return s->exit_status != 0;
        default:
                return false;
        }
}

/* Reaps every child that is done; returns true when the service was one of them. */
static bool reap(Supervisor *s)
{
        bool service_done = false;

        for (;;) {
                int status;
                pid_t p = waitpid(-1, &status, WNOHANG);
                if (p < 0 && errno == EINTR)
                        continue;
                if (p <= 0)
                        break;
                if (p != s->pid || s->pid <= 0)
                        continue;
                service_done = true;
                if (WIFEXITED(status)) {
                        s->exit_status = WEXITSTATUS(status);
                        s->exit_signal = -1;
                        s->exit_code = s->exit_status;
                } else {
                        s->exit_status = -1;
                        s->exit_signal = WTERMSIG(status);
                        s->exit_code = 128 + s->exit_signal;
                }
        }
        return service_done;
}

static void on_signal(Supervisor *s, const struct signalfd_siginfo *si)
{
        int sig = (int)si->ssi_signo;

        if (sig == SIGCHLD)
                return;
        if (sig == SIGTERM && si->ssi_code == SI_QUEUE && (si->ssi_int & STOP_MAGIC_MASK) == STOP_MAGIC) {
                unsigned timeout = (unsigned)si->ssi_int & ~STOP_MAGIC_MASK;
                s->stop_requested = true;
                supervisor_note(s, "stop requested (pid %u), timeout %u s", si->ssi_pid, timeout);
                if (s->pid > 0) {
                        kill_service(s, SIGTERM);
                        s->kill_deadline = mono_ns() + (uint64_t)timeout * 1000000000u;
                        if (timeout == 0)
                                kill_service(s, SIGKILL);
                }
                return;
        }
        /* Asked to end: no restart after this. SIGHUP and SIGUSR1/2 are the service's own business
         * (reload, rotate…), passed on as they are. */
        if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT)
                s->stop_requested = true;
        /* A signal from the terminal went to the whole foreground process group, the service with
         * us: sending it again would deliver it twice. With a pid namespace too: the service's pid 1
         * there is nano's small init (spawn.c), which also leaves those to the terminal. */
        if (s->foreground && si->ssi_code == SI_KERNEL)
                return;
        if (s->pid > 0)
                kill_service(s, sig);
}

int supervisor_loop(Supervisor *s)
{
        uint64_t restart_at = 0;

        for (;;) {
                struct pollfd pfd[3];
                int n = 0, timeout = -1;
                uint64_t now = mono_ns();

                if (s->pid <= 0 && !restart_at)
                        break;
                if (restart_at)
                        timeout = restart_at <= now ? 0 : (int)((restart_at - now) / 1000000u) + 1;
                if (s->kill_deadline && s->pid > 0) {
                        int t = s->kill_deadline <= now ? 0 : (int)((s->kill_deadline - now) / 1000000u) + 1;
                        timeout = timeout < 0 ? t : (t < timeout ? t : timeout);
                }
                if (s->state_due && s->pid > 0) {
                        int t = s->state_due <= now ? 0 : (int)((s->state_due - now + 999999u) / 1000000u);
                        timeout = timeout < 0 ? t : (t < timeout ? t : timeout);
                }

                pfd[n++] = (struct pollfd){ .fd = s->signal_fd, .events = POLLIN };
                if (s->pidfd >= 0 && s->pid > 0)
                        pfd[n++] = (struct pollfd){ .fd = s->pidfd, .events = POLLIN };
                if (s->log_rfd >= 0)
                        pfd[n++] = (struct pollfd){ .fd = s->log_rfd, .events = POLLIN };

                if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
                        break;

                log_drain(s);
                for (;;) {
                        struct signalfd_siginfo si;
                        ssize_t r = read(s->signal_fd, &si, sizeof si);
                        if (r != (ssize_t)sizeof si)
                                break;
                        on_signal(s, &si);
                }
                now = mono_ns();

                if (s->kill_deadline && s->pid > 0 && now >= s->kill_deadline) {
                        supervisor_note(s, "the service did not stop in time: SIGKILL");
                        kill_service(s, SIGKILL);
                        s->kill_deadline = 0;
                }

                if (s->state_due && s->pid > 0 && now >= s->state_due) {
                        s->state_due = 0;
                        s->pid_starttime = proc_starttime(s->pid);
                        (void)supervisor_write_state(s);
                }

                if (s->pid > 0 && reap(s)) {
                        log_drain(s);
                        if (s->exit_signal > 0)
                                supervisor_note(s, "service pid %d killed by signal %d (SIG%s)", (int)s->pid,
                                                s->exit_signal, sigabbrev_np(s->exit_signal) ?: "?");
                        else
                                supervisor_note(s, "service pid %d exited with status %d", (int)s->pid,
                                                s->exit_status);
                        if (s->detached)
                                /* What is left of its process group goes with it. */
                                (void)kill(-s->pid, SIGKILL);
                        /* And what is left of the instance's cgroup. */
                        kill_cgroup(s);
                        s->pid = 0;
                        s->pidfd = xclose(s->pidfd);
                        s->kill_deadline = 0;
                        s->state_due = 0; /* over before its first state: none needed */
                        s->finished_ns = real_ns();
                        if (wants_restart(s)) {
                                if (now - s->running_since >= STABLE_NS)
                                        s->backoff_ms = 0;
                                s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_FIRST_MS;
                                if (s->backoff_ms > BACKOFF_MAX_MS)
                                        s->backoff_ms = BACKOFF_MAX_MS;
                                restart_at = now + (uint64_t)s->backoff_ms * 1000000u;
                                s->state = NANO_STATE_RESTARTING;
                                supervisor_note(s, "restarting in %u ms", s->backoff_ms);
                        } else
                                s->state = s->stop_requested ? NANO_STATE_STOPPED : NANO_STATE_EXITED;
                        /* Over for good and about to be removed: nobody would read it. */
                        if (s->state == NANO_STATE_RESTARTING || !s->transient)
                                (void)supervisor_write_state(s);
                } else if (s->pid <= 0)
                        (void)reap(s); /* orphans */

                if (restart_at && s->stop_requested) {
                        restart_at = 0;
                        s->state = NANO_STATE_STOPPED;
                        if (!s->transient)
                                (void)supervisor_write_state(s);
                }
                if (restart_at && mono_ns() >= restart_at) {
                        NanoError e;
                        int code;

                        restart_at = 0;
                        s->restarts++;
                        if (start(s, &e, &code) < 0 && wants_restart(s)) {
                                /* A start that fails (the mount is gone…) is retried like a crash. */
                                s->exit_status = 1;
                                s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_FIRST_MS;
                                if (s->backoff_ms > BACKOFF_MAX_MS)
                                        s->backoff_ms = BACKOFF_MAX_MS;
                                restart_at = mono_ns() + (uint64_t)s->backoff_ms * 1000000u;
                        }
                }
        }
        log_drain(s);
        return s->exit_code >= 0 ? s->exit_code : NANO_EXIT_RUN_FAILED_CODE;
}
