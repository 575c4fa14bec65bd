/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ns/cgroup.c: the v2 and v1 writers against fake cgroupfs trees (regular files named like the
 * controllers' files): values written, read back, events parsed, rollback, refusals. Then, where this
 * user has a delegated cgroup, the same on the real one, with a process in it. */

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "config.h"
#include "../../ns/ns.h"
#include "util.h"

#include "test-tmpdir.h"


/* snprintf into an array, failing the test rather than cutting a path. */
static int group_setup(void **state)
{
        return tmpdir_create("test-ns-cgroup");
}

_unused_ static void put(const char *dir, const char *name, const char *content)
{
        char path[PATH_MAX];
        int fd;

        mkdir_p(dir);
        PATHF(path, "%s/%s", dir, name);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write_all(fd, content, strlen(content)), 0);
        close(fd);
}

/* Content of dir/name, in a static buffer. */
_unused_ static const char *get(const char *dir, const char *name)
{
        static char buf[4096];
        char path[PATH_MAX];
        int fd;
        ssize_t n;

        PATHF(path, "%s/%s", dir, name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        n = read_full(fd, buf, sizeof buf - 1);
        assert_true(n >= 0);
        buf[n] = 0;
        close(fd);
        return buf;
}

_unused_ static bool exists(const char *dir, const char *name)
{
        char path[PATH_MAX];

        PATHF(path, "%s/%s", dir, name);
        return access(path, F_OK) == 0;
}

#if HAVE_CGROUPS

/* A v2 instance cgroup as the kernel would create it (mkdir makes the files in cgroupfs; here we do). */
static void fake_v2_child(const char *dir)
{
        put(dir, "cgroup.procs", "");
        put(dir, "memory.max", "max\n");
        put(dir, "memory.swap.max", "max\n");
        put(dir, "memory.current", "12345\n");
        put(dir, "memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n");
        put(dir, "cpu.max", "max 100000\n");
        put(dir, "pids.max", "max\n");
        put(dir, "pids.current", "3\n");
        put(dir, "pids.events", "max 5\n");
}

static void test_v2_fake(void **state)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL, *again = NULL;
        NanoCgroupPlace place = {.version = NANO_CGROUP_V2};
        NanoCgroupLimits l = {.memory_max = 256u << 20, .cpu_quota_us = 50000, .pids_max = 64};
        char parent[PATH_MAX], child[PATH_MAX + 8];
        NanoCgroupState s;
        NanoError e = {};

        PATHF(parent, "%s/v2", tmpdir);
        PATHF(child, "%s/inst", parent);
        put(parent, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
        put(parent, "cgroup.subtree_control", "");
        put(parent, "cgroup.procs", "");
        fake_v2_child(child);
        snprintf(place.v2, sizeof place.v2, "%s", parent);

        assert_int_equal(nano_cgroup_create(&place, "inst", &l, &cg, &e), 0);
        assert_int_equal(e.error, 0);
        /* The controllers the limits need were enabled for the children of the parent. */
        assert_string_equal(get(parent, "cgroup.subtree_control"), "+memory +pids +cpu");
        assert_string_equal(get(child, "memory.max"), "268435456");
        assert_string_equal(get(child, "memory.swap.max"), "0");
        assert_string_equal(get(child, "cpu.max"), "50000 100000");
        assert_string_equal(get(child, "pids.max"), "64");
        assert_true(nano_cgroup_fd(cg) >= 0);

        assert_int_equal(nano_cgroup_read(cg, &s, &e), 0);
        assert_int_equal(s.version, NANO_CGROUP_V2);
        assert_int_equal(s.present, NANO_CGROUP_MASK_ALL);
        assert_int_equal(s.memory_max, 256u << 20);
        assert_int_equal(s.memory_swap_max, 0);
        assert_int_equal(s.memory_current, 12345);
        assert_int_equal(s.cpu_quota_us, 50000);
        assert_int_equal(s.cpu_period_us, 100000);
        assert_int_equal(s.pids_max, 64);
        assert_int_equal(s.pids_current, 3);
        assert_int_equal(s.memory_oom, 2);
        assert_int_equal(s.memory_oom_kill, 1);
        assert_int_equal(s.pids_max_events, 5);

        assert_int_equal(nano_cgroup_attach(cg, 1234, &e), 0);
        assert_string_equal(get(child, "cgroup.procs"), "1234");

        /* A cgroup of that name with processes is someone else's. */
        assert_int_equal(nano_cgroup_create(&place, "inst", &l, &again, &e), -EBUSY);
        assert_non_null(strstr(e.message, "exists and has processes"));
        assert_null(again);

        /* Unlimited reads back as such. */
        put(child, "memory.max", "max\n");
        put(child, "cpu.max", "max 100000\n");
        assert_int_equal(nano_cgroup_read(cg, &s, NULL), 0);
        assert_int_equal(s.memory_max, NANO_CGROUP_UNLIMITED);
        assert_int_equal(s.cpu_quota_us, NANO_CGROUP_UNLIMITED);
}

static void test_v2_refusals(void **state)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        NanoCgroupPlace place = {.version = NANO_CGROUP_V2};
        NanoCgroupLimits mem = {.memory_max = 1 << 20};
        char parent[PATH_MAX];
        NanoError e = {};

        PATHF(parent, "%s/v2-pids-only", tmpdir);
        put(parent, "cgroup.controllers", "pids\n");
        put(parent, "cgroup.subtree_control", "pids\n");
        snprintf(place.v2, sizeof place.v2, "%s", parent);

        /* A limit whose controller the parent does not have. */
        assert_int_equal(nano_cgroup_create(&place, "a", &mem, &cg, &e), -EOPNOTSUPP);
        assert_non_null(strstr(e.message, "the memory limit needs the memory controller"));
        assert_false(exists(parent, "a"));

        /* Names are checked: nothing escapes the parent. */
        e = (NanoError){};
        assert_int_equal(nano_cgroup_create(&place, "../x", NULL, &cg, &e), -EINVAL);
        assert_int_equal(nano_cgroup_create(&place, "", NULL, &cg, NULL), -EINVAL);
        assert_int_equal(nano_cgroup_create(&place, ".hidden", NULL, &cg, NULL), -EINVAL);

        /* A write that fails rolls back what create made: here mkdir makes an empty directory (no
         * pids.max in it, unlike cgroupfs), so the write fails and the directory must go. */
        e = (NanoError){};
        assert_int_equal(nano_cgroup_create(&place, "b", &(NanoCgroupLimits){.pids_max = 5}, &cg, &e),
                         -ENOENT);
        assert_non_null(strstr(e.message, "/b/pids.max' (5): No such file or directory"));
        assert_false(exists(parent, "b"));

        /* Without limits: created, then removed. */
        assert_int_equal(nano_cgroup_create(&place, "c", NULL, &cg, &e), 0);
        assert_true(exists(parent, "c"));
        assert_int_equal(nano_cgroup_remove(cg, &e), 0);
        assert_false(exists(parent, "c"));
        assert_int_equal(nano_cgroup_remove(cg, &e), 0); /* twice is fine */

        /* Nowhere to put it. */
        cg = nano_cgroup_free(cg);
        e = (NanoError){};
        assert_int_equal(nano_cgroup_create(&(NanoCgroupPlace){}, "d", NULL, &cg, &e), -EOPNOTSUPP);
        assert_string_equal(e.message, "no delegated cgroup is available for resource limits");
}

/* A child that sleeps until killed; its pid. */
static pid_t sleeper(void)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                for (;;)
                        pause();
        }
        return pid;
}

static void assert_killed(pid_t pid)
{
        int status;

        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void test_v2_kill_fake(void **state)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        NanoCgroupPlace place = {.version = NANO_CGROUP_V2};
        char parent[PATH_MAX], child[PATH_MAX + 8], procs[64];
        int fds[_NANO_CGROUP_CONTROLLER_MAX];
        NanoError e = {};
        pid_t pid;

        PATHF(parent, "%s/v2-kill", tmpdir);
        PATHF(child, "%s/inst", parent);
        put(parent, "cgroup.controllers", "memory pids\n");
        put(parent, "cgroup.subtree_control", "memory pids\n");
        fake_v2_child(child);
        snprintf(place.v2, sizeof place.v2, "%s", parent);
        assert_int_equal(nano_cgroup_open(&place, "inst", &cg, &e), 0);
        assert_int_equal(nano_cgroup_dir_fds(cg, fds), 1);
        assert_int_equal(fds[0], nano_cgroup_fd(cg));
        assert_int_equal(nano_cgroup_dir_fds(NULL, fds), 0);

        /* Empty: nothing to do, at once. */
        assert_int_equal(nano_cgroup_kill(cg, 1000, &e), 0);
        assert_false(exists(child, "cgroup.kill"));

        /* With cgroup.kill (Linux 5.14), one write kills them all; the kernel then empties
         * cgroup.procs, which a fake tree does not: the deadline passes. */
        put(child, "cgroup.kill", "");
        put(child, "cgroup.procs", "1\n");
        assert_int_equal(nano_cgroup_kill(cg, 30, &e), -EBUSY);
        assert_string_equal(get(child, "cgroup.kill"), "1");
        assert_non_null(strstr(e.message, "/inst' are still there 30 ms after SIGKILL"));
        put(child, "cgroup.procs", "");
        assert_int_equal(nano_cgroup_kill(cg, 30, &e), 0);
        assert_int_equal(unlink(strcat(strcpy((char[PATH_MAX + 32]){0}, child), "/cgroup.kill")), 0);

        /* Without: SIGKILL to each process listed (ourselves excepted), until none is. */
        pid = sleeper();
        snprintf(procs, sizeof procs, "%d\n%d\n", (int)getpid(), (int)pid);
        put(child, "cgroup.procs", procs);
        e = (NanoError){};
        assert_int_equal(nano_cgroup_kill(cg, 30, &e), -EBUSY);
        assert_int_equal(e.error, EBUSY);
        assert_killed(pid);
        put(child, "cgroup.procs", "");
        assert_int_equal(nano_cgroup_kill_at(nano_cgroup_fd(cg), 30), 0);

        /* A cgroup removed meanwhile has nothing in it. */
        assert_int_equal(unlink(strcat(strcpy((char[PATH_MAX + 32]){0}, child), "/cgroup.procs")), 0);
        assert_int_equal(nano_cgroup_kill(cg, 30, &e), 0);
        put(child, "cgroup.procs", "");
}

static void fake_v1(const char *root, bool memsw)
{
        char d[PATH_MAX];

        PATHF(d, "%s/memory/inst", root);
        put(d, "cgroup.procs", "");
        put(d, "memory.limit_in_bytes", "9223372036854771712\n");
        if (memsw)
                put(d, "memory.memsw.limit_in_bytes", "9223372036854771712\n");
        put(d, "memory.usage_in_bytes", "4096\n");
        put(d, "memory.failcnt", "7\n");
        put(d, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        PATHF(d, "%s/pids/inst", root);
        put(d, "cgroup.procs", "");
        put(d, "pids.max", "max\n");
        put(d, "pids.current", "1\n");
        put(d, "pids.events", "max 4\n");
        PATHF(d, "%s/cpu/inst", root);
        put(d, "cgroup.procs", "");
        put(d, "cpu.cfs_quota_us", "-1\n");
        put(d, "cpu.cfs_period_us", "100000\n");
}

static void v1_place(NanoCgroupPlace *p, const char *root)
{
        *p = (NanoCgroupPlace){.version = NANO_CGROUP_V1};
        assert_true(snprintf(p->v1[NANO_CGROUP_MEMORY], PATH_MAX, "%s/memory", root) < PATH_MAX);
        assert_true(snprintf(p->v1[NANO_CGROUP_PIDS], PATH_MAX, "%s/pids", root) < PATH_MAX);
        assert_true(snprintf(p->v1[NANO_CGROUP_CPU], PATH_MAX, "%s/cpu", root) < PATH_MAX);
}

static void test_v1_fake(void **state)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        NanoCgroupLimits l = {.memory_max = 1u << 30, .cpu_quota_us = 150000, .pids_max = 100};
        _cleanup_free_ NanoCgroupPlace *place = calloc(1, sizeof *place);
        char root[PATH_MAX], d[PATH_MAX + 16];
        NanoCgroupState s;
        NanoError e = {};

        PATHF(root, "%s/v1", tmpdir);
        fake_v1(root, true);
        v1_place(place, root);

        /* Before: everything unlimited, in v1's spellings. */
        assert_int_equal(nano_cgroup_open(place, "inst", &cg, &e), 0);
        assert_int_equal(nano_cgroup_read(cg, &s, &e), 0);
        assert_int_equal(s.version, NANO_CGROUP_V1);
        assert_int_equal(s.present, NANO_CGROUP_MASK_ALL);
        assert_int_equal(s.memory_max, NANO_CGROUP_UNLIMITED);
        assert_int_equal(s.memory_swap_max, NANO_CGROUP_UNLIMITED);
        assert_int_equal(s.cpu_quota_us, NANO_CGROUP_UNLIMITED);
        assert_int_equal(s.pids_max, NANO_CGROUP_UNLIMITED);
        assert_int_equal(nano_cgroup_fd(cg), -EBADF);
        cg = nano_cgroup_free(cg);

        assert_int_equal(nano_cgroup_create(place, "inst", &l, &cg, &e), 0);
        PATHF(d, "%s/memory/inst", root);
        assert_string_equal(get(d, "memory.limit_in_bytes"), "1073741824");
        assert_string_equal(get(d, "memory.memsw.limit_in_bytes"), "1073741824");
        PATHF(d, "%s/cpu/inst", root);
        assert_string_equal(get(d, "cpu.cfs_period_us"), "100000");
        assert_string_equal(get(d, "cpu.cfs_quota_us"), "150000");
        PATHF(d, "%s/pids/inst", root);
        assert_string_equal(get(d, "pids.max"), "100");

        assert_int_equal(nano_cgroup_read(cg, &s, &e), 0);
        assert_int_equal(s.memory_max, 1u << 30);
        assert_int_equal(s.memory_swap_max, 1u << 30);
        assert_int_equal(s.memory_current, 4096);
        assert_int_equal(s.memory_oom, 7);      /* failcnt */
        assert_int_equal(s.memory_oom_kill, 2); /* oom_control's oom_kill */
        assert_int_equal(s.cpu_quota_us, 150000);
        assert_int_equal(s.cpu_period_us, 100000);
        assert_int_equal(s.pids_max, 100);
        assert_int_equal(s.pids_current, 1);
        assert_int_equal(s.pids_max_events, 4);

        /* Attach writes every hierarchy. */
        assert_int_equal(nano_cgroup_attach(cg, 4321, &e), 0);
        assert_string_equal(get(d, "cgroup.procs"), "4321");
        PATHF(d, "%s/memory/inst", root);
        assert_string_equal(get(d, "cgroup.procs"), "4321");
        PATHF(d, "%s/cpu/inst", root);
        assert_string_equal(get(d, "cgroup.procs"), "4321");
}

static void test_v1_kill_fake(void **state)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        _cleanup_free_ NanoCgroupPlace *place = calloc(1, sizeof *place);
        char root[PATH_MAX], d[PATH_MAX + 16], procs[32];
        int fds[_NANO_CGROUP_CONTROLLER_MAX];
        NanoError e = {};
        pid_t a, b;

        PATHF(root, "%s/v1-kill", tmpdir);
        fake_v1(root, false);
        v1_place(place, root);
        assert_int_equal(nano_cgroup_open(place, "inst", &cg, &e), 0);
        assert_int_equal(nano_cgroup_dir_fds(cg, fds), 3);

        /* A process in one hierarchy only is found too: each is read. */
        a = sleeper();
        b = sleeper();
        PATHF(d, "%s/memory/inst", root);
        snprintf(procs, sizeof procs, "%d", (int)a); /* no newline at the end */
        put(d, "cgroup.procs", procs);
        PATHF(d, "%s/cpu/inst", root);
        snprintf(procs, sizeof procs, "%d\n", (int)b);
        put(d, "cgroup.procs", procs);
        assert_int_equal(nano_cgroup_kill(cg, 20, &e), -EBUSY);
        assert_non_null(strstr(e.message, "/memory/inst' are still there")); /* the first one listing any */
        assert_killed(a);
        PATHF(d, "%s/memory/inst", root);
        put(d, "cgroup.procs", "");
        assert_int_equal(nano_cgroup_kill(cg, 20, &e), -EBUSY);
        assert_killed(b);
        PATHF(d, "%s/cpu/inst", root);
        put(d, "cgroup.procs", "");
        assert_int_equal(nano_cgroup_kill(cg, 20, &e), 0);
}

static void test_v1_partial(void **state)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        _cleanup_free_ NanoCgroupPlace *place = calloc(1, sizeof *place);
        char root[PATH_MAX], d[PATH_MAX + 16];
        NanoCgroupState s;
        NanoError e = {};

        /* No swap accounting (no memsw file), and no pids hierarchy delegated. */
        PATHF(root, "%s/v1-partial", tmpdir);
        fake_v1(root, false);
        v1_place(place, root);
        place->v1[NANO_CGROUP_PIDS][0] = 0;

        assert_int_equal(nano_cgroup_create(place, "inst", &(NanoCgroupLimits){.pids_max = 10}, &cg, &e),
                         -EOPNOTSUPP);
        assert_non_null(strstr(e.message, "the pids limit needs a delegated cgroup v1 directory"));

        e = (NanoError){};
        assert_int_equal(
                nano_cgroup_create(place, "inst", &(NanoCgroupLimits){.memory_max = 1 << 20}, &cg, &e), 0);
        PATHF(d, "%s/memory/inst", root);
        assert_string_equal(get(d, "memory.limit_in_bytes"), "1048576");
        assert_false(exists(d, "memory.memsw.limit_in_bytes"));
        assert_int_equal(nano_cgroup_read(cg, &s, &e), 0);
        assert_int_equal(s.present,
                         NANO_CGROUP_MASK(NANO_CGROUP_MEMORY) | NANO_CGROUP_MASK(NANO_CGROUP_CPU));
        assert_int_equal(s.memory_max, 1 << 20);
        assert_int_equal(s.memory_swap_max, 0);
        assert_int_equal(s.pids_max, 0);
}

/* ---- The real thing, where this user has a delegated cgroup. */

static void test_real(void **state)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        _cleanup_free_ NanoProbe *p = calloc(1, sizeof *p);
        NanoCgroupLimits l = {.memory_max = 64u << 20, .cpu_quota_us = 50000, .pids_max = 1};
        char name[64], reason[1024];
        int go[2], status;
        NanoCgroupState s;
        NanoError e = {};
        pid_t pid;

        assert_int_equal(nano_probe(&(NanoProbeConfig){.no_fork = true}, p), 0);
        if (p->cgroup.version == NANO_CGROUP_NONE) {
                print_message("# no real cgroup test: %s\n",
                              nano_probe_reason(p, NANO_PROBE_LIMITS, reason, sizeof reason));
                return;
        }
        if (p->cgroup.version == NANO_CGROUP_V1)
                for (unsigned c = 0; c < _NANO_CGROUP_CONTROLLER_MAX; c++)
                        if (!p->cgroup.v1[c][0]) {
                                print_message("# no %s hierarchy: its limit is not tried\n",
                                              nano_cgroup_controller_to_string(c));
                                if (c == NANO_CGROUP_MEMORY)
                                        l.memory_max = 0;
                                if (c == NANO_CGROUP_PIDS)
                                        l.pids_max = 0;
                                if (c == NANO_CGROUP_CPU)
                                        l.cpu_quota_us = 0;
                        }
        print_message("# real cgroup %s: %s\n", p->cgroup.version == NANO_CGROUP_V2 ? "v2" : "v1",
                      p->cgroup.version == NANO_CGROUP_V2 ? p->cgroup.v2 : p->cgroup.v1[NANO_CGROUP_MEMORY]);

        PATHF(name, "nano-unit-%d", (int)getpid());
        if (nano_cgroup_create(&p->cgroup, name, &l, &cg, &e) < 0) {
                /* v2 under our own cgroup: it has our process, so controllers cannot be enabled. */
                print_message("# no real cgroup test: %s\n", e.message);
                return;
        }

        /* A child that waits for the go, then tries to fork past pids.max = 1. */
        assert_int_equal(pipe2(go, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char c;
                pid_t g;

                close(go[1]);
                if (read(go[0], &c, 1) != 1)
                        _exit(10);
                g = fork();
                if (g == 0)
                        _exit(0);
                if (g > 0) {
                        waitpid(g, NULL, 0);
                        _exit(l.pids_max ? 11 : 0); /* forked past the limit */
                }
                _exit(errno == EAGAIN ? 0 : 12);
        }
        close(go[0]);
        assert_int_equal(nano_cgroup_attach(cg, pid, &e), 0);

        assert_int_equal(nano_cgroup_read(cg, &s, &e), 0);
        if (l.memory_max)
                assert_int_equal(s.memory_max, 64u << 20);
        if (l.pids_max) {
                assert_int_equal(s.pids_max, 1);
                assert_int_equal(s.pids_current, 1);
        }
        if (l.cpu_quota_us) {
                assert_int_equal(s.cpu_quota_us, 50000);
                assert_int_equal(s.cpu_period_us, 100000);
        }

        /* Not removable while it has a process. */
        e = (NanoError){};
        assert_int_equal(nano_cgroup_remove(cg, &e), -EBUSY);
        assert_non_null(strstr(e.message, "still has processes"));

        assert_int_equal(write(go[1], "x", 1), 1);
        close(go[1]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        assert_int_equal(nano_cgroup_read(cg, &s, &e), 0);
        if (l.pids_max)
                assert_true(s.pids_max_events >= 1);

        /* A process that left for a session of its own, with a child: both killed, and the cgroup
         * is empty when nano_cgroup_kill() returns. */
        assert_int_equal(pipe2(go, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char c;

                close(go[1]);
                (void)setsid();
                /* In the cgroup from now on: its child too, if pids.max lets it fork. */
                if (read(go[0], &c, 1) == 1 && fork() == 0)
                        for (;;)
                                pause();
                for (;;)
                        pause();
        }
        close(go[0]);
        assert_int_equal(nano_cgroup_attach(cg, pid, &e), 0);
        assert_int_equal(write(go[1], "x", 1), 1);
        close(go[1]);
        usleep(20000);
        assert_true(nano_cgroup_kill(cg, 5000, &e) >= 1);
        assert_killed(pid);
        assert_int_equal(nano_cgroup_kill(cg, 5000, &e), 0);

        /* Empty now: the kernel may take a moment to notice the exit. */
        for (int i = 0; i < 100; i++) {
                e = (NanoError){};
                if (nano_cgroup_remove(cg, &e) != -EBUSY)
                        break;
                usleep(10000);
        }
        assert_int_equal(e.error, 0);
}

#else

static void test_stub(void **state)
{
        NanoCgroup *cg = NULL;
        NanoError e = {};

        assert_int_equal(
                nano_cgroup_create(&(NanoCgroupPlace){.version = NANO_CGROUP_V2}, "x", NULL, &cg, &e),
                -EOPNOTSUPP);
        assert_string_equal(e.message, "nano was built without cgroup support");
}

#endif

int main(void)
{
        const struct CMUnitTest tests[] = {
#if HAVE_CGROUPS
                cmocka_unit_test(test_v2_fake),
                cmocka_unit_test(test_v2_refusals),
                cmocka_unit_test(test_v2_kill_fake),
                cmocka_unit_test(test_v1_fake),
                cmocka_unit_test(test_v1_kill_fake),
                cmocka_unit_test(test_v1_partial),
                cmocka_unit_test(test_real),
#else
                cmocka_unit_test(test_stub),
#endif
        };

        return cmocka_run_group_tests(tests, group_setup, tmpdir_teardown);
}
