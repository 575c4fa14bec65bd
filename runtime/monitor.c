/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* nano-monitor: the process that owns a detached instance (doc/run.md). `nano run -d` forks twice,
 * then execs this with the instance's lock, the pipe to report the first start on, and the JSON that
 * never changes in state.json. Static and libc-only so that a hundred of them cost little: all it
 * does is supervise.c's loop, and exec `nano __spawn` for each (re)start. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "runtime-internal.h"

static int arg_int(const char *s)
{
        char *end;
        long v = strtol(s, &end, 10);
        return *end || v < 0 || v > 1 << 30 ? -1 : (int)v;
}

static char *read_all(int fd)
{
        size_t size = 0, cap = 4096;
        char *buf = malloc(cap);

        if (!buf)
                return NULL;
        for (;;) {
                ssize_t n;
                if (size + 1 >= cap) {
                        char *nb = cap < (1u << 20) ? realloc(buf, cap * 2) : NULL;
                        if (!nb) {
                                free(buf);
                                return NULL;
                        }
                        buf = nb;
                        cap *= 2;
                }
                n = pread(fd, buf + size, cap - size - 1, (off_t)size);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        free(buf);
                        return NULL;
                }
                if (n == 0)
                        break;
                size += (size_t)n;
        }
        buf[size] = 0;
        return buf;
}

int main(int argc, char **argv)
{
        const char *home = NULL, *name = NULL, *nano = NULL, *restart = "no";
        int sync_fd = -1, lock_fd = -1, static_fd = -1;
        unsigned long long log_max = 0;
        bool remove = false;
        char path[PATH_MAX];
        Supervisor s = {};
        NanoError e;
        int code;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (strcmp(a, "--remove") == 0) {
                        remove = true;
                        continue;
                }
                if (!v)
                        goto usage;
                i++;
                if (strcmp(a, "--home") == 0)
                        home = v;
                else if (strcmp(a, "--name") == 0)
                        name = v;
                else if (strcmp(a, "--nano") == 0)
                        nano = v;
                else if (strcmp(a, "--restart") == 0)
                        restart = v;
                else if (strcmp(a, "--log-max") == 0)
                        log_max = strtoull(v, NULL, 10);
                else if (strcmp(a, "--sync-fd") == 0)
                        sync_fd = arg_int(v);
                else if (strcmp(a, "--lock-fd") == 0)
                        lock_fd = arg_int(v);
                else if (strcmp(a, "--static-fd") == 0)
                        static_fd = arg_int(v);
                else if (strcmp(a, "--cgroup-fd") == 0 && s.n_cgroup_fd < _NANO_CGROUP_CONTROLLER_MAX &&
                         arg_int(v) >= 0) {
                        s.cgroup_fd[s.n_cgroup_fd++] = arg_int(v);
                        (void)fcntl(arg_int(v), F_SETFD, FD_CLOEXEC);
                }
                else
                        goto usage;
        }
        if (!home || !name || !nano || !nano_instance_name_is_valid(name) ||
            nano_restart_policy_from_string(restart) < 0 || lock_fd < 0)
                goto usage;

        /* What we inherited must not reach the services we start (or `nano rm` at the end). */
        (void)fcntl(lock_fd, F_SETFD, FD_CLOEXEC);
        if (sync_fd >= 0)
                (void)fcntl(sync_fd, F_SETFD, FD_CLOEXEC);
        if (static_fd >= 0) {
                s.static_json = read_all(static_fd);
                close(static_fd);
        }

        if (snprintf(path, sizeof path, "%s/instances/%s", home, name) >= (int)sizeof path)
                return 125;
        s.instance_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s.instance_fd < 0)
                return 125;
        s.name = name;
        s.home = home;
        s.nano_exe = nano;
        s.restart = nano_restart_policy_from_string(restart);
        s.detached = true;
        s.log_max = log_max;
        s.sync_fd = sync_fd;
        s.spawn = supervisor_spawn_exec;

        if (supervisor_init(&s) < 0) {
                e = (NanoError){ .error = errno };
                snprintf(e.message, sizeof e.message, "the monitor cannot set itself up: %s", strerror(errno));
                if (sync_fd >= 0)
                        report_send(sync_fd, REPORT_ERROR, STAGE_SETUP, 0, &e);
                return 125;
        }
        if (supervisor_first_start(&s, &e, &code) >= 0)
                (void)supervisor_loop(&s);
        supervisor_note(&s, "monitor exits");
        supervisor_done(&s);

        if (remove) {
                /* --rm: `nano rm` does it all (directory, pin, cgroup); it refuses while the lock is
                 * held, so let go of it first. */
                char *rm[] = { (char *)nano, (char *)"--home", (char *)home, (char *)"rm", (char *)name, NULL };
                close(lock_fd);
                execv(nano, rm);
        }
        return 0;

usage:
        fprintf(stderr, "nano-monitor: started by `nano run -d`, not by hand\n");
        return 125;
}
