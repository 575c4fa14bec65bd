/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The child side of a start: from fork() to execve() of the service, applying the plan with ns/.
 *
 * Runs after fork() of a single-threaded process (the foreground `nano run`, or `nano __spawn` that
 * the monitor exec'ed), so it may use ns/'s allocating steps (libcap). Every failure is a NanoError
 * record on the report pipe, which the parent turns into 125 (setup) or 126/127 (exec). */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime-internal.h"

extern char **environ;

_Noreturn static void fail(int fd, int stage, const NanoError *e)
{
        report_send(fd, REPORT_ERROR, stage, 0, e);
        _exit(stage == STAGE_EXEC ? (e->error == ENOENT ? 127 : 126) : 125);
}

int exec_search(char **argv, char **env)
{
        const char *path = NULL, *p;
        char buf[PATH_MAX];
        bool denied = false;

        /* Our own search rather than execvpe(): a directory of PATH we may not enter must not turn
         * "not found" (127) into "permission denied" (126), and this child must not allocate. */
        environ = env;
        if (strchr(argv[0], '/')) {
                execve(argv[0], argv, env);
                return -errno;
        }
        for (char **e = env; e && *e; e++)
                if (strncmp(*e, "PATH=", 5) == 0)
                        path = *e + 5;
        if (!path)
                path = "/usr/local/bin:/usr/bin:/bin";
        for (p = path;; p++) {
                size_t n = strcspn(p, ":");
                if ((size_t)snprintf(buf, sizeof buf, "%.*s%s%s", (int)n, p, n ? "/" : "", argv[0]) < sizeof buf) {
                        execve(buf, argv, env);
                        if (errno == EACCES && access(buf, F_OK) == 0)
                                denied = true;
                        else if (errno != ENOENT && errno != ENOTDIR && errno != EACCES && errno != ELOOP)
                                return -errno; /* found, but it cannot run: ENOEXEC, E2BIG… */
                }
                p += n;
                if (!*p)
                        break;
        }
        return denied ? -EACCES : -ENOENT;
}

_Noreturn void run_child(const RunPlan *p, const NanoSeccompProgram *prog, const NanoCgroup *cg, int report_fd)
{
        const char *writable[] = { p->data_dir, "/tmp", NULL };
        NanoLandlockConfig ll = { .writable = writable };
        NanoHardenConfig h = {
                .landlock = p->landlock ? &ll : NULL,
                .seccomp = p->seccomp != PLAN_SECCOMP_NONE ? prog : NULL,
                .keep_caps = !p->caps,
        };
        NanoNsConfig c = {
                .mode = p->mode,
                .flags = p->ns_flags,
                .store_dir = p->mode == NANO_ISOLATE_NS ? p->mount_root : NULL,
                .release_dir = p->release_dir,
                .instance_dir = p->data_dir,
                .workdir = p->workdir,
        };
        NanoError e = {};
        sigset_t none;
        int r;

        /* The supervisor blocks these for its signalfd: the mask survives execve(). */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);

        if (cg) {
                /* First, before anything it could fork: its children are counted too. */
                r = nano_cgroup_attach(cg, 0, &e);
                if (r < 0)
                        fail(report_fd, STAGE_SETUP, &e);
        }

        if (p->mode == NANO_ISOLATE_BARE) {
                if (chdir(p->workdir) < 0) {
                        nano_error_set(&e, errno, "cannot change to the working directory '%s': %m", p->workdir);
                        fail(report_fd, STAGE_SETUP, &e);
                }
        } else {
                r = nano_ns_unshare(&c, &e);
                if (r < 0)
                        fail(report_fd, STAGE_SETUP, &e);
                if (p->ns_flags & NANO_NS_PID) {
                        /* Only our children enter the new pid namespace: the service is the next one,
                         * pid 1 there. We report its pid and leave; our parent, a child subreaper,
                         * inherits it. */
                        pid_t pid = fork();
                        if (pid < 0) {
                                nano_error_set(&e, errno, "cannot fork into the pid namespace: %m");
                                fail(report_fd, STAGE_SETUP, &e);
                        }
                        if (pid > 0) {
                                report_send(report_fd, REPORT_PID, STAGE_SETUP, pid, NULL);
                                _exit(0);
                        }
                }
                r = nano_ns_setup_root(&c, &e);
                if (r < 0)
                        fail(report_fd, STAGE_SETUP, &e);
        }

        /* Detached: its own session, so that a stop reaches everything it started, and no terminal. */
        if (p->new_session)
                (void)setsid();

        r = nano_harden(&h, &e);
        if (r < 0)
                fail(report_fd, STAGE_SETUP, &e);

        r = exec_search(p->argv, p->env);
        nano_error_set(&e, r, "cannot execute '%s': %m%s", p->argv[0],
                       r == -ENOENT ? (strchr(p->argv[0], '/') ? "" : " (not found in PATH)") : "");
        fail(report_fd, STAGE_EXEC, &e);
}
