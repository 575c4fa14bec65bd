/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ns/probe.c: the real probe answers consistently on this host; reasons are rendered from facts
 * (one line each, naming the setting); the cgroup discovery reads a fake /proc (mountinfo, cgroup,
 * sysctls) and a fake cgroup tree. */

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "config.h"
#include "../../ns/ns.h"
#include "util.h"

#include "test-tmpdir.h"


static int group_setup(void **state)
{
        return tmpdir_create("test-ns-probe");
}

/* Writes tmpdir/rel (creating its directories). */
_unused_ static void put(const char *rel, const char *content)
{
        char path[PATH_MAX];
        int fd;

        PATHF(path, "%s/%s", tmpdir, rel);
        *strrchr(path, '/') = 0;
        mkdir_p(path);
        PATHF(path, "%s/%s", tmpdir, rel);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write_all(fd, content, strlen(content)), 0);
        close(fd);
}

static NanoProbe *probe_new(void)
{
        NanoProbe *p = calloc(1, sizeof *p);
        assert_non_null(p);
        return p;
}

/* ---- The real host. */

static void test_real_probe(void **state)
{
        static const char *const names[] = {"userns",   "pidns",     "netns",     "seccomp", "caps",
                                            "landlock", "cgroup-v2", "cgroup-v1", "limits"};
        _cleanup_free_ NanoProbe *p = probe_new();
        char buf[1024];

        assert_int_equal(nano_probe(NULL, p), 0);
        assert_int_equal(p->built_namespaces, HAVE_NAMESPACES);
        assert_int_equal(p->built_cgroups, HAVE_CGROUPS);
        assert_int_equal(p->built_seccomp, HAVE_SECCOMP);
        assert_int_equal(p->built_libcap, HAVE_LIBCAP);
        assert_int_equal(p->uid, geteuid());
        assert_true(p->seccomp_mode >= -1 && p->seccomp_mode <= 2);

        /* Every feature: available exactly when there is no reason; a reason is one line. */
        for (int f = 0; f < _NANO_PROBE_FEATURE_MAX; f++) {
                const char *r = nano_probe_reason(p, f, buf, sizeof buf);
                print_message("# %-9s %s\n", names[f], r ? r : "yes");
                if (r) {
                        assert_true(strlen(r) > 10);
                        assert_null(strchr(r, '\n'));
                }
        }
        assert_true((p->userns == 0) == !nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf));
        assert_true(p->userns == 0 || p->userns_step);
        assert_true(p->userns <= 0 && p->pidns <= 0 && p->netns <= 0);
        if (p->userns < 0) /* the others need it */
                assert_true(p->pidns < 0 && p->netns < 0);
        assert_true((p->landlock == 0) == (p->landlock_abi > 0));
        assert_true((p->seccomp == 0) == !nano_probe_reason(p, NANO_PROBE_SECCOMP, buf, sizeof buf));
        if (!HAVE_SECCOMP)
                assert_int_equal(p->seccomp, -EOPNOTSUPP);
        if (!HAVE_NAMESPACES)
                assert_int_equal(p->userns, -EOPNOTSUPP);

        /* The cgroup choice follows the facts. */
        if (p->cgroup_v2 == 0) {
                assert_int_equal(p->cgroup.version, NANO_CGROUP_V2);
                assert_string_equal(p->cgroup.v2, p->cgroup_v2_dir);
        } else if (p->cgroup.version == NANO_CGROUP_V1) {
                for (int c = 0; c < _NANO_CGROUP_CONTROLLER_MAX; c++)
                        assert_true((p->cgroup_v1_dirs[c].error == 0) == (p->cgroup.v1[c][0] != 0));
        } else
                assert_non_null(nano_probe_reason(p, NANO_PROBE_LIMITS, buf, sizeof buf));

        /* no_fork: the namespaces are not tried, and say so. */
        assert_int_equal(nano_probe(&(NanoProbeConfig){.no_fork = true}, p), 0);
        if (HAVE_NAMESPACES) {
                assert_int_equal(p->userns, -ECANCELED);
                assert_string_equal(nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf),
                                    "user namespaces: not tried");
        }
        assert_int_equal(nano_probe(NULL, NULL), -EINVAL);
}

/* ---- Reasons, from facts. */

static NanoProbe *facts(void)
{
        NanoProbe *p = probe_new();

        p->built_namespaces = p->built_cgroups = p->built_seccomp = p->built_libcap = true;
        p->uid = 1000;
        p->unprivileged_userns_clone = p->max_user_namespaces = p->apparmor_restrict_userns = -1;
        p->userns = -EPERM;
        p->userns_step = "unshare(CLONE_NEWUSER)";
        p->pidns = p->netns = -EPERM;
        p->pidns_step = p->netns_step = p->userns_step;
        return p;
}

static void test_reasons(void **state)
{
        _cleanup_free_ NanoProbe *p = facts();
        char buf[1024];

        p->unprivileged_userns_clone = 0;
        assert_string_equal(
                nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf),
                "user namespaces are disabled on this host (kernel.unprivileged_userns_clone=0): use "
                "--isolate bare");
        /* The namespaces that need a user namespace give its reason. */
        assert_non_null(strstr(nano_probe_reason(p, NANO_PROBE_PIDNS, buf, sizeof buf),
                               "kernel.unprivileged_userns_clone=0"));

        p->unprivileged_userns_clone = 1;
        p->max_user_namespaces = 0;
        assert_string_equal(
                nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf),
                "user namespaces are disabled on this host (user.max_user_namespaces=0): use --isolate "
                "bare");

        p->max_user_namespaces = 100;
        p->apparmor_restrict_userns = 1;
        p->userns = -EPERM;
        p->userns_step = "mount a tmpfs";
        assert_string_equal(nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf),
                            "AppArmor restricts unprivileged user namespaces on this host "
                            "(kernel.apparmor_restrict_unprivileged_userns=1): use --isolate bare");

        p->apparmor_restrict_userns = 0;
        p->seccomp_mode = 2;
        p->userns_step = "unshare(CLONE_NEWUSER)";
        assert_non_null(strstr(nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf),
                               "refused by a seccomp filter around nano"));

        p->userns = -ENOSPC;
        assert_string_equal(
                nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf),
                "the limit of user namespaces is reached (user.max_user_namespaces=100): use --isolate "
                "bare");

        p->seccomp_mode = 0;
        p->userns = -EACCES;
        p->userns_step = "write /proc/self/uid_map";
        assert_string_equal(
                nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf),
                "user namespaces do not work here (write /proc/self/uid_map: Permission denied): use "
                "--isolate bare");

        p->userns = 0;
        assert_null(nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf));
        p->pidns = -EPERM;
        p->pidns_step = "mount proc";
        assert_non_null(strstr(nano_probe_reason(p, NANO_PROBE_PIDNS, buf, sizeof buf),
                               "a pid namespace does not work here (mount proc: Operation not permitted;"));

        p->built_namespaces = false;
        p->userns = -EOPNOTSUPP;
        assert_string_equal(nano_probe_reason(p, NANO_PROBE_USERNS, buf, sizeof buf),
                            "nano was built without namespace support: use --isolate bare");

        p->seccomp = -EOPNOTSUPP;
        p->built_seccomp = false;
        assert_non_null(strstr(nano_probe_reason(p, NANO_PROBE_SECCOMP, buf, sizeof buf),
                               "nano was built without seccomp support"));
        p->built_seccomp = true;
        p->seccomp = -ENOSYS;
        assert_non_null(
                strstr(nano_probe_reason(p, NANO_PROBE_SECCOMP, buf, sizeof buf), "CONFIG_SECCOMP_FILTER"));

        p->built_namespaces = true;
        p->landlock = -EOPNOTSUPP;
        assert_non_null(strstr(nano_probe_reason(p, NANO_PROBE_LANDLOCK, buf, sizeof buf), "lsm="));
        p->landlock = -ENOSYS;
        assert_non_null(strstr(nano_probe_reason(p, NANO_PROBE_LANDLOCK, buf, sizeof buf), "Linux 5.13"));

        /* A tiny buffer cuts the line, it does not overflow. */
        assert_string_equal(nano_probe_reason(p, NANO_PROBE_LANDLOCK, buf, 9), "Landlock");
}

static void test_cgroup_reasons(void **state)
{
        _cleanup_free_ NanoProbe *p = facts();
        char buf[2048];

        p->cgroup_v2 = -ENOMEDIUM;
        strcpy(p->cgroup_v2_mount, "/sys/fs/cgroup/unified");
        assert_string_equal(
                nano_probe_reason(p, NANO_PROBE_CGROUP_V2, buf, sizeof buf),
                "the cgroup2 mount at /sys/fs/cgroup/unified has no memory, pids or cpu controller "
                "(they are on cgroup v1 hierarchies)");
        p->cgroup_v2 = -EACCES;
        strcpy(p->cgroup_v2_dir, "/sys/fs/cgroup/user.slice");
        assert_non_null(
                strstr(nano_probe_reason(p, NANO_PROBE_CGROUP_V2, buf, sizeof buf),
                       "cgroup '/sys/fs/cgroup/user.slice' is not delegated to uid 1000 (owner: uid 0)"));

        for (int c = 0; c < _NANO_CGROUP_CONTROLLER_MAX; c++)
                p->cgroup_v1_dirs[c].error = -ENOENT;
        p->cgroup_v1 = -ENOENT;
        assert_string_equal(nano_probe_reason(p, NANO_PROBE_CGROUP_V1, buf, sizeof buf),
                            "no cgroup v1 hierarchy is mounted for memory, pids or cpu");

        p->cgroup_v1_dirs[NANO_CGROUP_MEMORY].error = 0;
        strcpy(p->cgroup_v1_dirs[NANO_CGROUP_MEMORY].mount, "/sys/fs/cgroup/memory");
        p->cgroup_v1_dirs[NANO_CGROUP_PIDS].error = -EACCES;
        strcpy(p->cgroup_v1_dirs[NANO_CGROUP_PIDS].mount, "/sys/fs/cgroup/pids");
        strcpy(p->cgroup_v1_dirs[NANO_CGROUP_PIDS].dir, "/sys/fs/cgroup/pids/x");
        p->cgroup_v1 = -EACCES;
        assert_non_null(strstr(nano_probe_reason(p, NANO_PROBE_CGROUP_V1, buf, sizeof buf),
                               "cgroup '/sys/fs/cgroup/pids/x' is not writable by uid 1000"));

        p->cgroup.version = NANO_CGROUP_NONE;
        assert_non_null(strstr(nano_probe_reason(p, NANO_PROBE_LIMITS, buf, sizeof buf),
                               "no delegated cgroup for --memory, --cpus and --pids (v2: cgroup"));
        p->cgroup.version = NANO_CGROUP_V1;
        assert_null(nano_probe_reason(p, NANO_PROBE_LIMITS, buf, sizeof buf));
}

/* ---- Discovery, in a fake /proc and a fake cgroup tree. */

#if HAVE_CGROUPS

static void test_fake_proc(void **state)
{
        _cleanup_free_ NanoProbe *p = probe_new();
        char mountinfo[4096], proc[PATH_MAX], want[PATH_MAX];

        /* The environment's choice would override our own cgroup's, which is what is tested here. */
        unsetenv("NANO_CGROUP_V1_ROOT");
        unsetenv("NANO_CGROUP_V2_ROOT");

        /* A v2 mount, and v1 hierarchies with cpu co-mounted with cpuacct; one mount point has a space. */
        PATHF(mountinfo,
              "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
              "30 22 0:26 / %s/cg2 rw,nosuid shared:2 - cgroup2 cgroup2 rw,nsdelegate\n"
              "31 22 0:27 / %s/v1/memory rw - cgroup cgroup rw,memory\n"
              "32 22 0:28 / %s/v1/pi\\040ds rw - cgroup cgroup rw,pids\n"
              "33 22 0:29 / %s/v1/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
              tmpdir, tmpdir, tmpdir, tmpdir);
        put("proc/self/mountinfo", mountinfo);
        put("proc/self/cgroup",
            "5:cpu,cpuacct:/user/alice\n4:pids:/\n3:memory:/user/alice\n0::/user/alice\n");
        put("proc/self/status", "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n");
        put("proc/sys/kernel/unprivileged_userns_clone", "0\n");
        put("proc/sys/user/max_user_namespaces", "31231\n");
        put("cg2/user/alice/cgroup.controllers", "cpuset cpu io memory pids\n");
        put("cg2/user/alice/cgroup.subtree_control", "memory\n");
        put("cg2/user/alice/cgroup.procs", "");
        put("v1/memory/user/alice/cgroup.procs", "");
        put("v1/pi ds/cgroup.procs", "");
        put("v1/cpu,cpuacct/user/alice/cgroup.procs", "");
        PATHF(proc, "%s/proc", tmpdir);

        assert_int_equal(nano_probe(&(NanoProbeConfig){.proc = proc, .no_fork = true}, p), 0);
        assert_int_equal(p->unprivileged_userns_clone, 0);
        assert_int_equal(p->max_user_namespaces, 31231);
        assert_int_equal(p->apparmor_restrict_userns, -1);
        assert_int_equal(p->seccomp_mode, 2);

        assert_int_equal(p->cgroup_v2, 0);
        PATHF(want, "%s/cg2", tmpdir);
        assert_string_equal(p->cgroup_v2_mount, want);
        PATHF(want, "%s/cg2/user/alice", tmpdir);
        assert_string_equal(p->cgroup_v2_dir, want);
        assert_int_equal(p->cgroup_v2_available, NANO_CGROUP_MASK_ALL);
        assert_int_equal(p->cgroup_v2_enabled, NANO_CGROUP_MASK(NANO_CGROUP_MEMORY));
        assert_int_equal(p->cgroup.version, NANO_CGROUP_V2);
        assert_string_equal(p->cgroup.v2, want);

        assert_int_equal(p->cgroup_v1, 0);
        PATHF(want, "%s/v1/memory/user/alice", tmpdir);
        assert_string_equal(p->cgroup_v1_dirs[NANO_CGROUP_MEMORY].dir, want);
        PATHF(want, "%s/v1/pi ds", tmpdir); /* our pids cgroup is the hierarchy's root */
        assert_string_equal(p->cgroup_v1_dirs[NANO_CGROUP_PIDS].dir, want);
        PATHF(want, "%s/v1/cpu,cpuacct/user/alice", tmpdir);
        assert_string_equal(p->cgroup_v1_dirs[NANO_CGROUP_CPU].dir, want);

        /* A v2 without controllers (this host's /sys/fs/cgroup/unified): v1 is chosen. */
        put("cg2/user/alice/cgroup.controllers", "\n");
        assert_int_equal(nano_probe(&(NanoProbeConfig){.proc = proc, .no_fork = true}, p), 0);
        assert_int_equal(p->cgroup_v2, -ENOMEDIUM);
        assert_int_equal(p->cgroup.version, NANO_CGROUP_V1);
        PATHF(want, "%s/v1/memory/user/alice", tmpdir);
        assert_string_equal(p->cgroup.v1[NANO_CGROUP_MEMORY], want);

        /* NANO_CGROUP_V1_ROOT (here the config): the same path inside every hierarchy. */
        put("v1/memory/nano/bob/cgroup.procs", "");
        put("v1/cpu,cpuacct/nano/bob/cgroup.procs", "");
        assert_int_equal(
                nano_probe(&(NanoProbeConfig){.proc = proc, .no_fork = true, .cgroup_v1_root = "/nano/bob"},
                           p),
                0);
        PATHF(want, "%s/v1/memory/nano/bob", tmpdir);
        assert_string_equal(p->cgroup.v1[NANO_CGROUP_MEMORY], want);
        PATHF(want, "%s/v1/cpu,cpuacct/nano/bob", tmpdir);
        assert_string_equal(p->cgroup.v1[NANO_CGROUP_CPU], want);
        assert_int_equal(p->cgroup_v1_dirs[NANO_CGROUP_PIDS].error, -ENOENT); /* no pi ds/nano/bob */
        assert_int_equal(p->cgroup.v1[NANO_CGROUP_PIDS][0], 0);
        assert_int_equal(p->cgroup_v1, -ENOENT);

        /* Not delegated: only meaningful when we are not root, whom access() never refuses. */
        if (geteuid() != 0) {
                PATHF(want, "%s/v1/memory/user/alice", tmpdir);
                assert_int_equal(chmod(want, 0555), 0);
                assert_int_equal(nano_probe(&(NanoProbeConfig){.proc = proc, .no_fork = true}, p), 0);
                assert_int_equal(p->cgroup_v1_dirs[NANO_CGROUP_MEMORY].error, -EACCES);
                assert_int_equal(p->cgroup.v1[NANO_CGROUP_MEMORY][0], 0);
                assert_int_equal(chmod(want, 0755), 0);
        }

        /* No cgroup mounts at all. */
        put("proc/self/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n");
        assert_int_equal(nano_probe(&(NanoProbeConfig){.proc = proc, .no_fork = true}, p), 0);
        assert_int_equal(p->cgroup_v2, -ENOENT);
        assert_int_equal(p->cgroup.version, NANO_CGROUP_NONE);
}

static void test_fake_proc_mount_root(void **state)
{
        _cleanup_free_ NanoProbe *p = probe_new();
        char mountinfo[2048], proc[PATH_MAX], want[PATH_MAX];

        unsetenv("NANO_CGROUP_V2_ROOT");
        /* A cgroup2 mount showing only a subtree (a container's view): paths are relative to it. */
        PATHF(mountinfo, "30 22 0:26 /user %s/sub rw - cgroup2 cgroup2 rw\n", tmpdir);
        put("proc2/self/mountinfo", mountinfo);
        put("proc2/self/cgroup", "0::/user/carol/app\n");
        put("sub/carol/app/cgroup.controllers", "pids\n");
        put("sub/carol/app/cgroup.subtree_control", "");
        put("sub/carol/app/cgroup.procs", "");
        PATHF(proc, "%s/proc2", tmpdir);

        assert_int_equal(nano_probe(&(NanoProbeConfig){.proc = proc, .no_fork = true}, p), 0);
        PATHF(want, "%s/sub/carol/app", tmpdir);
        assert_string_equal(p->cgroup_v2_dir, want);
        assert_int_equal(p->cgroup_v2_available, NANO_CGROUP_MASK(NANO_CGROUP_PIDS));
        assert_int_equal(p->cgroup_v2, 0);

        /* Our cgroup outside what the mount shows. */
        put("proc2/self/cgroup", "0::/elsewhere\n");
        assert_int_equal(nano_probe(&(NanoProbeConfig){.proc = proc, .no_fork = true}, p), 0);
        assert_int_equal(p->cgroup_v2, -ENOENT);
}

#endif

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_real_probe),
                cmocka_unit_test(test_reasons),
                cmocka_unit_test(test_cgroup_reasons),
#if HAVE_CGROUPS
                cmocka_unit_test(test_fake_proc),
                cmocka_unit_test(test_fake_proc_mount_root),
#endif
        };

        return cmocka_run_group_tests(tests, group_setup, tmpdir_teardown);
}
