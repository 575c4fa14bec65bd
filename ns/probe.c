/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the host allows, found out without privilege: by reading its settings and by trying, in
 * children that are thrown away. Built everywhere: each feature's file (or its stub) answers for it. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>

#include "ns-internal.h"

static int read_seccomp_mode(int procfd)
{
        char buf[4096];
        const char *s;

        if (ns_read_at(procfd, "self/status", buf, sizeof buf) < 0)
                return -1;
        s = strstr(buf, "\nSeccomp:");
        if (!s)
                return -1;
        s += strlen("\nSeccomp:");
        s += strspn(s, " \t");
        return *s >= '0' && *s <= '2' ? *s - '0' : -1;
}

int nano_probe(const NanoProbeConfig *c, NanoProbe *ret)
{
        static const NanoProbeConfig defaults = {};
        _cleanup_close_ int procfd = -EBADF;
        NanoProbe *p = ret;
        int abi;

        if (!p)
                return -EINVAL;
        if (!c)
                c = &defaults;
        /* NanoProbe is ~48 KiB, nearly all of it cgroup paths: without the cgroup probe, only their
         * first bytes are written (below), not 12 pages that `nano run` never reads. */
        if (c->no_cgroups)
                memset(p, 0, offsetof(NanoProbe, cgroup_v2_mount));
        else
                memset(p, 0, sizeof *p);
        p->built_namespaces = HAVE_NAMESPACES;
        p->built_cgroups = HAVE_CGROUPS;
        p->built_seccomp = HAVE_SECCOMP;
        p->built_libcap = HAVE_LIBCAP;
        p->uid = geteuid();
        p->unprivileged_userns_clone = p->max_user_namespaces = p->apparmor_restrict_userns = -1;
        p->seccomp_mode = -1;

        if (!c->no_userns || !c->no_cgroups)
                procfd = open(c->proc ? c->proc : "/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (procfd >= 0 && !c->no_userns) {
                (void)ns_read_long_at(procfd, "sys/kernel/unprivileged_userns_clone",
                                      &p->unprivileged_userns_clone);
                (void)ns_read_long_at(procfd, "sys/user/max_user_namespaces", &p->max_user_namespaces);
                (void)ns_read_long_at(procfd, "sys/kernel/apparmor_restrict_unprivileged_userns",
                                      &p->apparmor_restrict_userns);
                /* Our own mode is one prctl(), where /proc/self/status is generated whole (~10 us);
                 * a /proc given by the caller (tests) is read. */
                if (c->proc)
                        p->seccomp_mode = read_seccomp_mode(procfd);
                else {
                        int m = prctl(PR_GET_SECCOMP, 0, 0, 0, 0);
                        p->seccomp_mode = m >= 0 && m <= 2 ? m : -1;
                }
        }

        ns_probe_namespaces(p, !c->no_fork);
        ns_probe_seccomp(p, !c->no_fork);
        p->caps = HAVE_LIBCAP ? 0 : -EOPNOTSUPP;
        abi = nano_landlock_abi();
        p->landlock = abi < 0 ? abi : 0;
        p->landlock_abi = abi < 0 ? 0 : abi;
        if (c->no_cgroups) {
                p->cgroup_v2 = p->cgroup_v1 = -ECANCELED;
                p->cgroup_v2_mount[0] = p->cgroup_v2_dir[0] = 0;
                p->cgroup_v2_owner = 0;
                p->cgroup_v2_available = p->cgroup_v2_enabled = 0;
                for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++) {
                        p->cgroup_v1_dirs[i].error = 0;
                        p->cgroup_v1_dirs[i].mount[0] = p->cgroup_v1_dirs[i].dir[0] = 0;
                        p->cgroup_v1_dirs[i].owner = 0;
                }
                p->cgroup.version = NANO_CGROUP_NONE;
                p->cgroup.v2[0] = 0;
                for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++)
                        p->cgroup.v1[i][0] = 0;
        } else
                ns_probe_cgroups(p, c, procfd);
        return 0;
}

/* ---- Reasons. */

static const char *say(char *buf, size_t size, const char *fmt, ...) _printf_(3, 4);
static const char *say(char *buf, size_t size, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        return buf;
}

static const char *userns_reason(const NanoProbe *p, char *buf, size_t size, const char *what,
                                 const char *fix)
{
        if (!p->built_namespaces)
                return say(buf, size, "nano was built without namespace support: %s", fix);
        if (p->unprivileged_userns_clone == 0)
                return say(buf, size,
                           "user namespaces are disabled on this host "
                           "(kernel.unprivileged_userns_clone=0): %s",
                           fix);
        if (p->max_user_namespaces == 0)
                return say(buf, size,
                           "user namespaces are disabled on this host (user.max_user_namespaces=0): %s",
                           fix);
        if (p->apparmor_restrict_userns == 1)
                return say(buf, size,
                           "AppArmor restricts unprivileged user namespaces on this host "
                           "(kernel.apparmor_restrict_unprivileged_userns=1): %s",
                           fix);
        if (p->userns == -ENOSPC)
                return say(buf, size,
                           "the limit of user namespaces is reached (user.max_user_namespaces=%ld): %s",
                           p->max_user_namespaces, fix);
        if ((p->userns == -EINVAL || p->userns == -ENOSYS) &&
            streq(p->userns_step, "unshare(CLONE_NEWUSER)"))
                return say(buf, size, "this kernel has no user namespaces (CONFIG_USER_NS): %s", fix);
        if (p->userns == -EPERM && p->seccomp_mode == 2 && streq(p->userns_step, "unshare(CLONE_NEWUSER)"))
                return say(buf, size,
                           "user namespaces are refused by a seccomp filter around nano (a container?): "
                           "%s",
                           fix);
        if (p->userns == -ECANCELED)
                return say(buf, size, "%s: not tried", what);
        return say(buf, size, "%s do not work here (%s: %s): %s", what,
                   p->userns_step ? p->userns_step : "?", strerror(-p->userns), fix);
}

static const char *v2_reason(const NanoProbe *p, char *buf, size_t size)
{
        switch (p->cgroup_v2) {
        case 0:
                return NULL;
        case -EOPNOTSUPP:
                return say(buf, size, "nano was built without cgroup support");
        case -ENOENT:
                if (!p->cgroup_v2_mount[0])
                        return say(buf, size, "no cgroup2 filesystem is mounted");
                return say(buf, size, "cgroup '%s' does not exist",
                           p->cgroup_v2_dir[0] ? p->cgroup_v2_dir : "?");
        case -ENOMEDIUM:
                return say(buf, size,
                           "the cgroup2 mount at %s has no memory, pids or cpu controller (they are on "
                           "cgroup v1 hierarchies)",
                           p->cgroup_v2_mount);
        case -EACCES:
                return say(buf, size,
                           "cgroup '%s' is not delegated to uid %u (owner: uid %u): run nano in a "
                           "delegated cgroup (systemd: Delegate=yes, or systemd-run --user --scope -p "
                           "Delegate=yes), or set NANO_CGROUP_V2_ROOT",
                           p->cgroup_v2_dir, (unsigned)p->uid, (unsigned)p->cgroup_v2_owner);
        default:
                return say(buf, size, "cgroup '%s': %s", p->cgroup_v2_dir, strerror(-p->cgroup_v2));
        }
}

static const char *v1_reason(const NanoProbe *p, char *buf, size_t size)
{
        bool none_mounted = true;

        if (p->cgroup_v1 == 0)
                return NULL;
        if (p->cgroup_v1 == -EOPNOTSUPP)
                return say(buf, size, "nano was built without cgroup support");
        for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++)
                if (p->cgroup_v1_dirs[i].error != -ENOENT || p->cgroup_v1_dirs[i].mount[0])
                        none_mounted = false;
        if (none_mounted)
                return say(buf, size, "no cgroup v1 hierarchy is mounted for memory, pids or cpu");

        for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++) {
                const NanoProbeCgroupV1 *v = &p->cgroup_v1_dirs[i];
                const char *name = nano_cgroup_controller_to_string(i);

                if (v->error == 0)
                        continue;
                if (!v->mount[0])
                        return say(buf, size, "no cgroup v1 hierarchy is mounted for %s", name);
                if (v->error == -EACCES)
                        return say(buf, size,
                                   "cgroup '%s' is not writable by uid %u (owner: uid %u): delegate it "
                                   "(chown it and its cgroup.procs), or point NANO_CGROUP_V1_ROOT at a "
                                   "delegated "
                                   "directory",
                                   v->dir, (unsigned)p->uid, (unsigned)v->owner);
                if (v->error == -ENOENT && v->dir[0])
                        return say(buf, size, "cgroup '%s' does not exist", v->dir);
                return say(buf, size, "cgroup v1 %s: %s", name, strerror(-v->error));
        }
        return NULL;
}

const char *nano_probe_reason(const NanoProbe *p, NanoProbeFeature f, char *buf, size_t size)
{
        char r2[PATH_MAX + 256], r1[PATH_MAX + 256];

        if (!p || !buf || size == 0)
                return NULL;

        switch (f) {
        case NANO_PROBE_USERNS:
                if (p->userns == 0)
                        return NULL;
                return userns_reason(p, buf, size, "user namespaces", "use --isolate bare");
        case NANO_PROBE_PIDNS:
                if (p->pidns == 0)
                        return NULL;
                if (p->userns < 0)
                        return userns_reason(p, buf, size, "user namespaces", "no pid namespace");
                if (p->pidns == -EPERM || p->pidns == -EACCES)
                        return say(buf, size,
                                   "a pid namespace does not work here (%s: %s; is /proc partly hidden, "
                                   "as in some containers?): run without a pid namespace",
                                   p->pidns_step ? p->pidns_step : "?", strerror(-p->pidns));
                return say(buf, size, "a pid namespace does not work here (%s: %s): run without one",
                           p->pidns_step ? p->pidns_step : "?", strerror(-p->pidns));
        case NANO_PROBE_NETNS:
                if (p->netns == 0)
                        return NULL;
                if (p->userns < 0)
                        return userns_reason(p, buf, size, "user namespaces", "no network isolation");
                return say(buf, size,
                           "a network namespace does not work here (%s: %s): run without network "
                           "isolation",
                           p->netns_step ? p->netns_step : "?", strerror(-p->netns));
        case NANO_PROBE_SECCOMP:
                if (p->seccomp == 0)
                        return NULL;
                if (!p->built_seccomp || p->seccomp == -EOPNOTSUPP)
                        return say(buf, size,
                                   "nano was built without seccomp support: no system call is denied");
                if (p->seccomp == -ENOSYS)
                        return say(buf, size,
                                   "this kernel has no seccomp filters (CONFIG_SECCOMP_FILTER): no system "
                                   "call is denied");
                return say(buf, size,
                           "a seccomp filter cannot be loaded here (%s): no system call is denied",
                           strerror(-p->seccomp));
        case NANO_PROBE_CAPS:
                if (p->caps == 0)
                        return NULL;
                return say(buf, size, "nano was built without libcap support: capabilities are not dropped");
        case NANO_PROBE_LANDLOCK:
                if (p->landlock == 0)
                        return NULL;
                if (!p->built_namespaces)
                        return say(buf, size,
                                   "nano was built without namespace support, which Landlock is part of");
                if (p->landlock == -ENOSYS)
                        return say(buf, size, "Landlock is not supported by this kernel (needs Linux 5.13)");
                if (p->landlock == -EOPNOTSUPP)
                        return say(buf, size,
                                   "Landlock is disabled on this host (add 'landlock' to the lsm= boot "
                                   "parameter)");
                return say(buf, size, "Landlock does not work here (%s)", strerror(-p->landlock));
        case NANO_PROBE_CGROUP_V2:
                return v2_reason(p, buf, size);
        case NANO_PROBE_CGROUP_V1:
                return v1_reason(p, buf, size);
        case NANO_PROBE_LIMITS:
                if (p->cgroup.version != NANO_CGROUP_NONE)
                        return NULL;
                if (!p->built_cgroups)
                        return say(buf, size,
                                   "nano was built without cgroup support: --memory, --cpus and --pids "
                                   "cannot be enforced");
                return say(buf, size, "no delegated cgroup for --memory, --cpus and --pids (v2: %s; v1: %s)",
                           v2_reason(p, r2, sizeof r2) ?: "usable", v1_reason(p, r1, sizeof r1) ?: "usable");
        default:
                return say(buf, size, "unknown feature %d", (int)f);
        }
}
