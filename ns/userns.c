/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Entering the namespaces: a user namespace with a single-id map (no setuid helper: a process may map
 * its own uid and gid), the mount namespace it owns, and the optional ones. */
#include "config.h"

#include <net/if.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "ns-internal.h"
#include "util.h"

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

static const struct {
        unsigned nano;
        int clone;
        const char *name;
} optional_ns[] = {
        {NANO_NS_PID, CLONE_NEWPID, "CLONE_NEWPID"},          {NANO_NS_NET, CLONE_NEWNET, "CLONE_NEWNET"},
        {NANO_NS_IPC, CLONE_NEWIPC, "CLONE_NEWIPC"},          {NANO_NS_UTS, CLONE_NEWUTS, "CLONE_NEWUTS"},
        {NANO_NS_CGROUP, CLONE_NEWCGROUP, "CLONE_NEWCGROUP"},
};

int nano_ns_loopback_up(NanoError *e)
{
        _cleanup_close_ int fd = -EBADF;
        struct ifreq ifr = {};

        /* Any socket reaches the interface ioctls; an AF_UNIX one also works where IPv4 is compiled out. */
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 && errno == EAFNOSUPPORT)
                fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return nano_error_set(e, errno, "bring up 'lo': socket: %m");
        memcpy(ifr.ifr_name, "lo", 3);
        if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
                return nano_error_set(e, errno, "bring up 'lo': SIOCGIFFLAGS: %m");
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
                return nano_error_set(e, errno, "bring up 'lo': SIOCSIFFLAGS: %m");
        return 0;
}

int nano_ns_clone_flags(const NanoNsConfig *c)
{
        int flags = CLONE_NEWUSER | CLONE_NEWNS;

        if (!c || (c->mode != NANO_ISOLATE_NS && c->mode != NANO_ISOLATE_ROOTFS))
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(optional_ns); i++)
                if (c->flags & optional_ns[i].nano)
                        flags |= optional_ns[i].clone;
        return flags;
}

int nano_ns_unshare(const NanoNsConfig *c, NanoError *e)
{
        char what[160] = "CLONE_NEWUSER|CLONE_NEWNS";
        int flags = nano_ns_clone_flags(c);
        uid_t uid = geteuid(); /* ours on the host: in the new namespace they read as the overflow ids */
        gid_t gid = getegid();

        if (flags < 0)
                return nano_error_set(e, EINVAL, "namespaces: no config, or the bare mode");
        for (size_t i = 0; i < ELEMENTSOF(optional_ns); i++)
                if (c->flags & optional_ns[i].nano) {
                        strcat(what, "|");
                        strcat(what, optional_ns[i].name);
                }

        /* EINVAL here usually means the caller has threads: unshare(CLONE_NEWUSER) wants a
         * single-threaded process, which a freshly forked child is. */
        if (unshare(flags) < 0)
                return nano_error_set(e, errno, "unshare(%s): %m", what);
        return nano_ns_setup_entered(c, uid, gid, e);
}

int nano_ns_setup_entered(const NanoNsConfig *c, uid_t uid, gid_t gid, NanoError *e)
{
        char map[64];
        int r;

        if (!c || (c->mode != NANO_ISOLATE_NS && c->mode != NANO_ISOLATE_ROOTFS))
                return nano_error_set(e, EINVAL, "namespaces: no config, or the bare mode");

        /* An unprivileged process may write a gid_map only after giving up setgroups(2), which could
         * otherwise drop a group that denies it access ("negative" group permissions). */
        r = ns_write_at(AT_FDCWD, "/proc/self/setgroups", "deny", false);
        if (r < 0 && r != -ENOENT) /* ENOENT: a kernel before 3.19 */
                return nano_error_set(e, r, "write 'deny' to '/proc/self/setgroups': %m");

        r = ns_format(map, sizeof map, "%u %u 1\n", (c->flags & NANO_NS_MAP_ROOT) ? 0u : (unsigned)uid,
                      (unsigned)uid);
        if (r >= 0)
                r = ns_write_at(AT_FDCWD, "/proc/self/uid_map", map, false);
        if (r < 0)
                return nano_error_set(e, r, "write '/proc/self/uid_map' (%.*s): %m", (int)strcspn(map, "\n"),
                                      map);

        r = ns_format(map, sizeof map, "%u %u 1\n", (c->flags & NANO_NS_MAP_ROOT) ? 0u : (unsigned)gid,
                      (unsigned)gid);
        if (r >= 0)
                r = ns_write_at(AT_FDCWD, "/proc/self/gid_map", map, false);
        if (r < 0)
                return nano_error_set(e, r, "write '/proc/self/gid_map' (%.*s): %m", (int)strcspn(map, "\n"),
                                      map);

        if (c->flags & NANO_NS_UTS) {
                const char *h = c->hostname ? c->hostname : "nano";
                if (sethostname(h, strlen(h)) < 0)
                        return nano_error_set(e, errno, "set the hostname '%s': %m", h);
        }
        if (c->flags & NANO_NS_NET) {
                r = nano_ns_loopback_up(e);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- Probe: try it, in a child that is thrown away. */

enum { TRIAL_USERNS, TRIAL_NETNS, TRIAL_PIDNS, _TRIAL_MAX };

static const char *const trial_steps[] = {
        "fork",
        "unshare(CLONE_NEWUSER)",
        "write /proc/self/setgroups",
        "write /proc/self/uid_map",
        "write /proc/self/gid_map",
        "unshare(CLONE_NEWNS)",
        "make / a slave mount",
        "mount a tmpfs",
        "unshare(CLONE_NEWNET)",
        "bring up lo",
        "unshare(CLONE_NEWPID)",
        "fork into the pid namespace",
        "mount proc",
        "the trial process died",
        "not tried",
};
enum { STEP_FORK = 0, STEP_DIED = 13, STEP_NOT_TRIED = 14 };

typedef struct Trial {
        int feature, error, step;
} Trial;

static void report(int fd, int feature, int error, int step)
{
        Trial t = {feature, error, step};
        ssize_t n;

        do
                n = write(fd, &t, sizeof t);
        while (n < 0 && errno == EINTR);
}

/* Only system calls from here on: the parent may have threads. */
_noreturn_ static void trial_child(int fd)
{
        char map[64];
        uid_t uid = geteuid();
        gid_t gid = getegid();
        pid_t pid;
        int r;

        if (unshare(CLONE_NEWUSER) < 0) {
                report(fd, TRIAL_USERNS, errno, 1);
                _exit(0);
        }
        r = ns_write_at(AT_FDCWD, "/proc/self/setgroups", "deny", false);
        if (r < 0 && r != -ENOENT) {
                report(fd, TRIAL_USERNS, -r, 2);
                _exit(0);
        }
        (void)ns_format(map, sizeof map, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
        r = ns_write_at(AT_FDCWD, "/proc/self/uid_map", map, false);
        if (r < 0) {
                report(fd, TRIAL_USERNS, -r, 3);
                _exit(0);
        }
        (void)ns_format(map, sizeof map, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
        r = ns_write_at(AT_FDCWD, "/proc/self/gid_map", map, false);
        if (r < 0) {
                report(fd, TRIAL_USERNS, -r, 4);
                _exit(0);
        }
        if (unshare(CLONE_NEWNS) < 0) {
                report(fd, TRIAL_USERNS, errno, 5);
                _exit(0);
        }
        if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
                report(fd, TRIAL_USERNS, errno, 6);
                _exit(0);
        }
        /* Where a security module lets unshare() pass but takes the capabilities away (AppArmor's
         * restriction on Ubuntu), this is what fails. (This mount is ours alone; a host without /tmp
         * says nothing about namespaces.) */
        if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, NULL) < 0 && errno != ENOENT) {
                report(fd, TRIAL_USERNS, errno, 7);
                _exit(0);
        }
        report(fd, TRIAL_USERNS, 0, 0);

        if (unshare(CLONE_NEWNET) < 0)
                report(fd, TRIAL_NETNS, errno, 8);
        else if ((r = nano_ns_loopback_up(NULL)) < 0)
                report(fd, TRIAL_NETNS, -r, 9);
        else
                report(fd, TRIAL_NETNS, 0, 0);

        if (unshare(CLONE_NEWPID) < 0) {
                report(fd, TRIAL_PIDNS, errno, 10);
                _exit(0);
        }
        pid = fork();
        if (pid < 0) {
                report(fd, TRIAL_PIDNS, errno, 11);
                _exit(0);
        }
        if (pid == 0) {
                /* pid 1 of the new namespace: only from here can a proc showing it be mounted. */
                if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                        report(fd, TRIAL_PIDNS, errno, 12);
                else
                        report(fd, TRIAL_PIDNS, 0, 0);
                _exit(0);
        }
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        _exit(0);
}

void ns_probe_namespaces(NanoProbe *p, bool trial)
{
        int *err[_TRIAL_MAX] = {&p->userns, &p->netns, &p->pidns};
        const char **step[_TRIAL_MAX] = {&p->userns_step, &p->netns_step, &p->pidns_step};
        _cleanup_close_ int rfd = -EBADF;
        int fds[2];
        Trial t;
        pid_t pid;

        for (int i = 0; i < _TRIAL_MAX; i++) {
                *err[i] = trial ? -ECHILD : -ECANCELED;
                *step[i] = trial_steps[trial ? STEP_DIED : STEP_NOT_TRIED];
        }
        if (!trial)
                return;

        if (pipe2(fds, O_CLOEXEC) < 0) {
                for (int i = 0; i < _TRIAL_MAX; i++)
                        *err[i] = negative_errno(), *step[i] = trial_steps[STEP_FORK];
                return;
        }
        rfd = fds[0];
        pid = fork();
        if (pid < 0) {
                for (int i = 0; i < _TRIAL_MAX; i++)
                        *err[i] = negative_errno(), *step[i] = trial_steps[STEP_FORK];
                safe_close(fds[1]);
                return;
        }
        if (pid == 0) {
                safe_close(fds[0]);
                trial_child(fds[1]);
        }
        safe_close(fds[1]);

        while (read_full(rfd, &t, sizeof t) == (ssize_t)sizeof t)
                if (t.feature >= 0 && t.feature < _TRIAL_MAX && t.step >= 0 &&
                    (size_t)t.step < ELEMENTSOF(trial_steps)) {
                        *err[t.feature] = -abs(t.error);
                        *step[t.feature] = t.error ? trial_steps[t.step] : NULL;
                }
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;

        /* Without a user namespace the others were not tried: they would fail for the same reason. */
        if (p->userns < 0)
                for (int i = TRIAL_NETNS; i < _TRIAL_MAX; i++) {
                        *err[i] = p->userns;
                        *step[i] = p->userns_step;
                }
}
