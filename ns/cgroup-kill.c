/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Emptying an instance cgroup: every process in it killed, wherever it went in the process tree (a
 * daemon that called setsid() left the service's process group, not its cgroup). libc only, nothing
 * allocated, no errno of ours kept: this file is also part of the static nano-monitor
 * (runtime/meson.build), which empties the cgroup when its service is over, and it works on a fake
 * cgroupfs tree of regular files as well (tests/unit/test-ns-cgroup.c). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "ns.h"

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The processes listed in dirfd's cgroup.procs, but the caller; each sent SIGKILL if kill_them.
 * Returns how many, or -errno. */
static int procs_each(int dirfd, bool kill_them)
{
        pid_t self = getpid();
        unsigned long pid = 0;
        bool in_pid = false;
        char buf[4096];
        int fd, count = 0;

        fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = -errno;
                        close(fd);
                        return r;
                }
                /* One pid per line; a pid may straddle two reads. EOF ends the last one. */
                for (ssize_t i = 0; i <= n; i++) {
                        if (i < n && buf[i] >= '0' && buf[i] <= '9') {
                                pid = pid * 10 + (unsigned long)(buf[i] - '0');
                                in_pid = pid <= INT32_MAX;
                                continue;
                        }
                        if (i == n && n > 0)
                                break;
                        if (in_pid && pid > 0 && (pid_t)pid != self) {
                                count++;
                                if (kill_them)
                                        (void)kill((pid_t)pid, SIGKILL);
                        }
                        pid = 0;
                        in_pid = false;
                }
                if (n == 0)
                        break;
        }
        close(fd);
        return count;
}

int nano_cgroup_kill_at(int dirfd, unsigned timeout_ms)
{
        uint64_t deadline = now_ms() + timeout_ms;
        unsigned delay = 1;
        bool killed_all = false;
        int found = -1, fd;

        /* v2 (Linux 5.14): one write kills every process of the cgroup and of its children, and a
         * fork racing with it cannot escape. Elsewhere (v1, older v2), SIGKILL to each process listed
         * until none is: a process forking meanwhile shows its child at the next reading. */
        fd = openat(dirfd, "cgroup.kill", O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOCTTY);
        if (fd >= 0) {
                ssize_t n;
                do
                        n = write(fd, "1", 1);
                while (n < 0 && errno == EINTR);
                killed_all = n == 1;
                close(fd);
        }
        for (;;) {
                int r = procs_each(dirfd, !killed_all);
                if (r == -ENOENT) /* the cgroup is gone: nothing in it */
                        return found < 0 ? 0 : found;
                if (r < 0)
                        return r;
                if (found < 0)
                        found = r;
                if (r == 0)
                        return found;
                if (now_ms() >= deadline)
                        return -EBUSY;
                (void)poll(NULL, 0, (int)delay);
                delay = delay < 32 ? delay * 2 : 50;
        }
}
