/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One cgroup per instance, written directly in cgroupfs: a delegated v2 subtree, or delegated v1
 * directories (memory, pids, cpu). Not libcgroup: its 2.0.2 fails unprivileged in a delegated v2
 * subtree, and the files we need are a handful (doc/security.md).
 *
 * Every path is relative to the parent directories the caller passes (NanoCgroupPlace), so the unit
 * tests run against a fake tree of regular files named like the controllers' files. */
#include "config.h"

#include <sys/stat.h>

#include "ns-internal.h"
#include "util.h"

static const char *const controller_names[_NANO_CGROUP_CONTROLLER_MAX] = {
        [NANO_CGROUP_MEMORY] = "memory",
        [NANO_CGROUP_PIDS] = "pids",
        [NANO_CGROUP_CPU] = "cpu",
};

const char *nano_cgroup_controller_to_string(NanoCgroupController c)
{
        return (unsigned)c < _NANO_CGROUP_CONTROLLER_MAX ? controller_names[c] : NULL;
}

/* Mask of our controllers in a list like "cpuset cpu io memory pids" (or comma-separated). */
static unsigned parse_controllers(const char *s)
{
        unsigned mask = 0;

        while (*s) {
                size_t n = strcspn(s, " ,\n\t");
                for (unsigned c = 0; c < _NANO_CGROUP_CONTROLLER_MAX; c++)
                        if (n == strlen(controller_names[c]) && memcmp(s, controller_names[c], n) == 0)
                                mask |= NANO_CGROUP_MASK(c);
                s += n;
                s += strspn(s, " ,\n\t");
        }
        return mask;
}

struct NanoCgroup {
        NanoCgroupVersion version;
        char name[NANO_RELEASE_NAME_MAX + 1];
        /* v2: slot 0 only. v1: one per controller, -EBADF where the place has none. */
        int parent_fd[_NANO_CGROUP_CONTROLLER_MAX];
        int fd[_NANO_CGROUP_CONTROLLER_MAX];
        bool created[_NANO_CGROUP_CONTROLLER_MAX];
        char parent[_NANO_CGROUP_CONTROLLER_MAX][PATH_MAX]; /* for messages */
};

NanoCgroup *nano_cgroup_free(NanoCgroup *cg)
{
        if (!cg)
                return NULL;
        for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++) {
                safe_close(cg->fd[i]);
                safe_close(cg->parent_fd[i]);
        }
        free(cg);
        return NULL;
}

int nano_cgroup_fd(const NanoCgroup *cg)
{
        return cg && cg->version == NANO_CGROUP_V2 ? cg->fd[0] : -EBADF;
}

static unsigned slots(const NanoCgroup *cg)
{
        return cg->version == NANO_CGROUP_V2 ? 1 : _NANO_CGROUP_CONTROLLER_MAX;
}

static int cg_write(const NanoCgroup *cg, unsigned slot, const char *file, const char *value, NanoError *e)
{
        int r = ns_write_at(cg->fd[slot], file, value, true);
        if (r < 0)
                return nano_error_set(e, r, "write '%s/%s/%s' (%s): %m", cg->parent[slot], cg->name, file,
                                      value);
        return 0;
}

static int cg_write_u64(const NanoCgroup *cg, unsigned slot, const char *file, uint64_t v, NanoError *e)
{
        char buf[32];

        (void)ns_format(buf, sizeof buf, "%llu", (unsigned long long)v);
        return cg_write(cg, slot, file, buf, e);
}

/* Allocates a handle and opens the parents named by place. */
static int cg_new(const NanoCgroupPlace *place, const char *name, NanoCgroup **ret, NanoError *e)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;

        if (!place || place->version == NANO_CGROUP_NONE)
                return nano_error_set(e, EOPNOTSUPP, "no delegated cgroup is available for resource limits");
        if (!ns_name_is_valid(name))
                return nano_error_set(e, EINVAL, "'%s' is not a valid cgroup name", name ? name : "");

        cg = calloc(1, sizeof *cg);
        if (!cg)
                return nano_error_set(e, ENOMEM, "cgroup '%s': %m", name);
        for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++)
                cg->fd[i] = cg->parent_fd[i] = -EBADF;
        cg->version = place->version;
        (void)ns_format(cg->name, sizeof cg->name, "%s", name);

        for (unsigned i = 0; i < slots(cg); i++) {
                const char *dir = cg->version == NANO_CGROUP_V2 ? place->v2 : place->v1[i];
                if (!dir[0])
                        continue;
                (void)ns_format(cg->parent[i], sizeof cg->parent[i], "%s", dir);
                cg->parent_fd[i] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (cg->parent_fd[i] < 0)
                        return nano_error_set(e, errno, "open the cgroup '%s': %m", dir);
        }
        if (cg->version == NANO_CGROUP_V2 && cg->parent_fd[0] < 0)
                return nano_error_set(e, EOPNOTSUPP, "no delegated cgroup v2 directory is set");
        *ret = TAKE_PTR(cg);
        return 0;
}

static bool same_dir(int a, int b)
{
        struct stat sa, sb;
        return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Opens (creating if asked) the instance directory in slot i. A v1 controller co-mounted with another
 * (one directory for both) shares its fd. */
static int cg_open_child(NanoCgroup *cg, unsigned i, bool create, NanoError *e)
{
        char procs[64];
        ssize_t n;

        for (unsigned j = 0; j < i; j++)
                if (cg->parent_fd[j] >= 0 && same_dir(cg->parent_fd[i], cg->parent_fd[j])) {
                        cg->fd[i] = fcntl(cg->fd[j], F_DUPFD_CLOEXEC, 3);
                        if (cg->fd[i] < 0)
                                return nano_error_set(e, errno, "cgroup '%s/%s': %m", cg->parent[i],
                                                      cg->name);
                        return 0;
                }

        if (create) {
                if (mkdirat(cg->parent_fd[i], cg->name, 0755) == 0)
                        cg->created[i] = true;
                else if (errno != EEXIST)
                        return nano_error_set(e, errno, "create the cgroup '%s/%s': %m", cg->parent[i],
                                              cg->name);
        }
        cg->fd[i] = openat(cg->parent_fd[i], cg->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (cg->fd[i] < 0)
                return nano_error_set(e, errno, "open the cgroup '%s/%s': %m", cg->parent[i], cg->name);

        /* A cgroup left by a crash is reused when it is empty; one with processes is someone's. */
        if (create && !cg->created[i]) {
                n = ns_read_at(cg->fd[i], "cgroup.procs", procs, sizeof procs);
                if (n < 0)
                        return nano_error_set(e, (int)n, "read '%s/%s/cgroup.procs': %m", cg->parent[i],
                                              cg->name);
                if (procs[strspn(procs, " \n")] != 0)
                        return nano_error_set(e, EBUSY, "the cgroup '%s/%s' exists and has processes",
                                              cg->parent[i], cg->name);
        }
        return 0;
}

/* v2: a child has a controller only if its parent's cgroup.subtree_control enables it. */
static int v2_enable(NanoCgroup *cg, unsigned need, NanoError *e)
{
        char buf[512], add[64] = "";
        unsigned enabled, available;
        ssize_t n;

        n = ns_read_at(cg->parent_fd[0], "cgroup.subtree_control", buf, sizeof buf);
        if (n < 0)
                return nano_error_set(e, (int)n, "read '%s/cgroup.subtree_control': %m", cg->parent[0]);
        enabled = parse_controllers(buf);
        if ((need & ~enabled) == 0)
                return 0;

        n = ns_read_at(cg->parent_fd[0], "cgroup.controllers", buf, sizeof buf);
        if (n < 0)
                return nano_error_set(e, (int)n, "read '%s/cgroup.controllers': %m", cg->parent[0]);
        available = parse_controllers(buf);
        for (unsigned c = 0; c < _NANO_CGROUP_CONTROLLER_MAX; c++) {
                if (!(need & ~enabled & NANO_CGROUP_MASK(c)))
                        continue;
                if (!(available & NANO_CGROUP_MASK(c)))
                        return nano_error_set(e, EOPNOTSUPP,
                                              "the %s limit needs the %s controller, which the "
                                              "cgroup '%s' does not have",
                                              controller_names[c], controller_names[c], cg->parent[0]);
                strcat(add, add[0] ? " +" : "+");
                strcat(add, controller_names[c]);
        }
        n = ns_write_at(cg->parent_fd[0], "cgroup.subtree_control", add, false);
        if (n == -EBUSY)
                return nano_error_set(e, EBUSY,
                                      "enable '%s' in '%s/cgroup.subtree_control': %m (the cgroup has "
                                      "processes of its own: nano needs a delegated cgroup without)",
                                      add, cg->parent[0]);
        if (n < 0)
                return nano_error_set(e, (int)n, "enable '%s' in '%s/cgroup.subtree_control': %m", add,
                                      cg->parent[0]);
        return 0;
}

static int v2_limits(NanoCgroup *cg, const NanoCgroupLimits *l, NanoError *e)
{
        char buf[64];
        int r;

        if (l->memory_max) {
                r = cg_write_u64(cg, 0, "memory.max", l->memory_max, e);
                if (r < 0)
                        return r;
                /* --memory is RAM and swap together, as with v1's memsw: no swap beyond it. */
                r = ns_write_at(cg->fd[0], "memory.swap.max", "0", true);
                if (r < 0 && r != -ENOENT)
                        return nano_error_set(e, r, "write '%s/%s/memory.swap.max' (0): %m", cg->parent[0],
                                              cg->name);
        }
        if (l->cpu_quota_us) {
                (void)ns_format(buf, sizeof buf, "%llu %llu", (unsigned long long)l->cpu_quota_us,
                                (unsigned long long)(l->cpu_period_us ? l->cpu_period_us : 100000));
                r = cg_write(cg, 0, "cpu.max", buf, e);
                if (r < 0)
                        return r;
        }
        if (l->pids_max) {
                r = cg_write_u64(cg, 0, "pids.max", l->pids_max, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int v1_limits(NanoCgroup *cg, const NanoCgroupLimits *l, NanoError *e)
{
        int r;

        if (l->memory_max) {
                r = cg_write_u64(cg, NANO_CGROUP_MEMORY, "memory.limit_in_bytes", l->memory_max, e);
                if (r < 0)
                        return r;
                /* memsw (RAM + swap) exists only with swap accounting; set after the RAM limit, which
                 * it may not be below. */
                r = ns_write_at(cg->fd[NANO_CGROUP_MEMORY], "memory.memsw.limit_in_bytes", "", false);
                if (r != -ENOENT) {
                        r = cg_write_u64(cg, NANO_CGROUP_MEMORY, "memory.memsw.limit_in_bytes",
                                         l->memory_max, e);
                        if (r < 0)
                                return r;
                }
        }
        if (l->cpu_quota_us) {
                /* The period first: the quota is checked against it. */
                r = cg_write_u64(cg, NANO_CGROUP_CPU, "cpu.cfs_period_us",
                                 l->cpu_period_us ? l->cpu_period_us : 100000, e);
                if (r >= 0)
                        r = cg_write_u64(cg, NANO_CGROUP_CPU, "cpu.cfs_quota_us", l->cpu_quota_us, e);
                if (r < 0)
                        return r;
        }
        if (l->pids_max) {
                r = cg_write_u64(cg, NANO_CGROUP_PIDS, "pids.max", l->pids_max, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Removes what cg_open_child() created: the rollback of a failed create. */
static void cg_rollback(NanoCgroup *cg)
{
        for (unsigned i = 0; i < slots(cg); i++)
                if (cg->created[i]) {
                        cg->fd[i] = safe_close(cg->fd[i]);
                        (void)unlinkat(cg->parent_fd[i], cg->name, AT_REMOVEDIR);
                        cg->created[i] = false;
                }
}

int nano_cgroup_create(const NanoCgroupPlace *place, const char *name, const NanoCgroupLimits *l,
                       NanoCgroup **ret, NanoError *e)
{
        static const NanoCgroupLimits none = {};
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        unsigned need = 0;
        int r;

        if (!l)
                l = &none;
        if (l->memory_max)
                need |= NANO_CGROUP_MASK(NANO_CGROUP_MEMORY);
        if (l->cpu_quota_us)
                need |= NANO_CGROUP_MASK(NANO_CGROUP_CPU);
        if (l->pids_max)
                need |= NANO_CGROUP_MASK(NANO_CGROUP_PIDS);

        r = cg_new(place, name, &cg, e);
        if (r < 0)
                return r;

        if (cg->version == NANO_CGROUP_V1)
                for (unsigned c = 0; c < _NANO_CGROUP_CONTROLLER_MAX; c++)
                        if ((need & NANO_CGROUP_MASK(c)) && cg->parent_fd[c] < 0)
                                return nano_error_set(e, EOPNOTSUPP,
                                                      "the %s limit needs a delegated cgroup v1 "
                                                      "directory for the %s controller, and there is none",
                                                      controller_names[c], controller_names[c]);
        if (cg->version == NANO_CGROUP_V2 && need) {
                r = v2_enable(cg, need, e);
                if (r < 0)
                        return r;
        }

        for (unsigned i = 0; i < slots(cg); i++) {
                if (cg->parent_fd[i] < 0)
                        continue;
                r = cg_open_child(cg, i, true, e);
                if (r < 0)
                        goto fail;
        }
        r = cg->version == NANO_CGROUP_V2 ? v2_limits(cg, l, e) : v1_limits(cg, l, e);
        if (r < 0)
                goto fail;

        *ret = TAKE_PTR(cg);
        return 0;
fail:
        cg_rollback(cg);
        return r;
}

int nano_cgroup_open(const NanoCgroupPlace *place, const char *name, NanoCgroup **ret, NanoError *e)
{
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        int r;

        r = cg_new(place, name, &cg, e);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < slots(cg); i++) {
                if (cg->parent_fd[i] < 0)
                        continue;
                r = cg_open_child(cg, i, false, e);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(cg);
        return 0;
}

int nano_cgroup_attach(const NanoCgroup *cg, pid_t pid, NanoError *e)
{
        char buf[32];
        int r;

        if (!cg || pid < 0)
                return nano_error_set(e, EINVAL, "attach to a cgroup: bad arguments");
        (void)ns_format(buf, sizeof buf, "%d", (int)pid);
        for (unsigned i = 0; i < slots(cg); i++) {
                if (cg->fd[i] < 0)
                        continue;
                /* cgroup.procs moves the whole process (all threads); v1's tasks only one thread. */
                r = cg_write(cg, i, "cgroup.procs", buf, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- Reading back. */

/* "max" (v2), "-1" (v1 cfs_quota) and v1's "unlimited" page-rounded LONG_MAX are all "no limit". */
static int parse_limit(const char *s, uint64_t *ret)
{
        uint64_t v;
        int r;

        s += strspn(s, " \t");
        if (strncmp(s, "max", 3) == 0 || strncmp(s, "-1", 2) == 0) {
                *ret = NANO_CGROUP_UNLIMITED;
                return 0;
        }
        r = ns_parse_u64(s, &v);
        if (r < 0)
                return r;
        *ret = v >= UINT64_C(0x7ffffffffffff000) ? NANO_CGROUP_UNLIMITED : v;
        return 0;
}

/* Reads a one-value file; returns 0 and leaves *ret alone when it does not exist. */
static int read_value(const NanoCgroup *cg, unsigned slot, const char *file, bool limit, uint64_t *ret,
                      NanoError *e)
{
        char buf[128];
        ssize_t n;
        int r;

        if (cg->fd[slot] < 0)
                return 0;
        n = ns_read_at(cg->fd[slot], file, buf, sizeof buf);
        if (n == -ENOENT)
                return 0;
        if (n < 0)
                return nano_error_set(e, (int)n, "read '%s/%s/%s': %m", cg->parent[slot], cg->name, file);
        r = limit ? parse_limit(buf, ret) : ns_parse_u64(buf, ret);
        if (r < 0)
                return nano_error_set(e, r, "read '%s/%s/%s': unexpected content", cg->parent[slot],
                                      cg->name, file);
        return 1;
}

/* Reads "key value" lines of a flat-keyed file (memory.events, pids.events, memory.oom_control). */
static int read_keyed(const NanoCgroup *cg, unsigned slot, const char *file, const char *const *keys,
                      uint64_t *const *rets, size_t n, NanoError *e)
{
        char buf[1024];
        ssize_t got;

        if (cg->fd[slot] < 0)
                return 0;
        got = ns_read_at(cg->fd[slot], file, buf, sizeof buf);
        if (got == -ENOENT)
                return 0;
        if (got < 0)
                return nano_error_set(e, (int)got, "read '%s/%s/%s': %m", cg->parent[slot], cg->name, file);
        for (size_t i = 0; i < n; i++) {
                int r = ns_keyed_u64(buf, keys[i], rets[i]);
                if (r < 0 && r != -ENOENT)
                        return nano_error_set(e, r, "read '%s/%s/%s': bad '%s' line", cg->parent[slot],
                                              cg->name, file, keys[i]);
        }
        return 0;
}

static int v2_read(const NanoCgroup *cg, NanoCgroupState *s, NanoError *e)
{
        char buf[128];
        ssize_t n;
        int r;

        r = read_value(cg, 0, "memory.max", true, &s->memory_max, e);
        if (r > 0)
                s->present |= NANO_CGROUP_MASK(NANO_CGROUP_MEMORY);
        if (r >= 0)
                r = read_value(cg, 0, "memory.swap.max", true, &s->memory_swap_max, e);
        if (r >= 0)
                r = read_value(cg, 0, "memory.current", false, &s->memory_current, e);
        if (r >= 0)
                r = read_keyed(cg, 0, "memory.events", (const char *const[]){"oom", "oom_kill"},
                               (uint64_t *const[]){&s->memory_oom, &s->memory_oom_kill}, 2, e);
        if (r >= 0)
                r = read_value(cg, 0, "pids.max", true, &s->pids_max, e);
        if (r > 0)
                s->present |= NANO_CGROUP_MASK(NANO_CGROUP_PIDS);
        if (r >= 0)
                r = read_value(cg, 0, "pids.current", false, &s->pids_current, e);
        if (r >= 0)
                r = read_keyed(cg, 0, "pids.events", (const char *const[]){"max"},
                               (uint64_t *const[]){&s->pids_max_events}, 1, e);
        if (r < 0)
                return r;

        /* cpu.max: "max 100000" or "150000 100000". */
        n = ns_read_at(cg->fd[0], "cpu.max", buf, sizeof buf);
        if (n >= 0) {
                const char *sp = strchr(buf, ' ');
                if (!sp || parse_limit(buf, &s->cpu_quota_us) < 0 ||
                    ns_parse_u64(sp + 1, &s->cpu_period_us) < 0)
                        return nano_error_set(e, EINVAL, "read '%s/%s/cpu.max': unexpected content",
                                              cg->parent[0], cg->name);
                s->present |= NANO_CGROUP_MASK(NANO_CGROUP_CPU);
        } else if (n != -ENOENT)
                return nano_error_set(e, (int)n, "read '%s/%s/cpu.max': %m", cg->parent[0], cg->name);
        return 0;
}

static int v1_read(const NanoCgroup *cg, NanoCgroupState *s, NanoError *e)
{
        const unsigned M = NANO_CGROUP_MEMORY, P = NANO_CGROUP_PIDS, C = NANO_CGROUP_CPU;
        int r;

        r = read_value(cg, M, "memory.limit_in_bytes", true, &s->memory_max, e);
        if (r > 0)
                s->present |= NANO_CGROUP_MASK(M);
        if (r >= 0)
                r = read_value(cg, M, "memory.memsw.limit_in_bytes", true, &s->memory_swap_max, e);
        if (r >= 0)
                r = read_value(cg, M, "memory.usage_in_bytes", false, &s->memory_current, e);
        /* v1 has no count of OOM situations; failcnt (times the limit was hit) is the closest. */
        if (r >= 0)
                r = read_value(cg, M, "memory.failcnt", false, &s->memory_oom, e);
        if (r >= 0)
                r = read_keyed(cg, M, "memory.oom_control", (const char *const[]){"oom_kill"},
                               (uint64_t *const[]){&s->memory_oom_kill}, 1, e);
        if (r >= 0)
                r = read_value(cg, P, "pids.max", true, &s->pids_max, e);
        if (r > 0)
                s->present |= NANO_CGROUP_MASK(P);
        if (r >= 0)
                r = read_value(cg, P, "pids.current", false, &s->pids_current, e);
        if (r >= 0)
                r = read_keyed(cg, P, "pids.events", (const char *const[]){"max"},
                               (uint64_t *const[]){&s->pids_max_events}, 1, e);
        if (r >= 0)
                r = read_value(cg, C, "cpu.cfs_quota_us", true, &s->cpu_quota_us, e);
        if (r > 0)
                s->present |= NANO_CGROUP_MASK(C);
        if (r >= 0)
                r = read_value(cg, C, "cpu.cfs_period_us", false, &s->cpu_period_us, e);
        return r < 0 ? r : 0;
}

int nano_cgroup_read(const NanoCgroup *cg, NanoCgroupState *ret, NanoError *e)
{
        NanoCgroupState s = {};
        int r;

        if (!cg || !ret)
                return nano_error_set(e, EINVAL, "read a cgroup: bad arguments");
        s.version = cg->version;
        r = cg->version == NANO_CGROUP_V2 ? v2_read(cg, &s, e) : v1_read(cg, &s, e);
        if (r < 0)
                return r;
        *ret = s;
        return 0;
}

int nano_cgroup_remove(NanoCgroup *cg, NanoError *e)
{
        if (!cg)
                return 0;
        for (unsigned i = 0; i < slots(cg); i++) {
                if (cg->parent_fd[i] < 0)
                        continue;
                cg->fd[i] = safe_close(cg->fd[i]);
                if (unlinkat(cg->parent_fd[i], cg->name, AT_REMOVEDIR) < 0) {
                        if (errno == ENOENT) /* gone already, or a co-mounted hierarchy we did first */
                                continue;
                        if (errno == EBUSY)
                                return nano_error_set(e, EBUSY,
                                                      "remove the cgroup '%s/%s': it still has processes",
                                                      cg->parent[i], cg->name);
                        return nano_error_set(e, errno, "remove the cgroup '%s/%s': %m", cg->parent[i],
                                              cg->name);
                }
        }
        return 0;
}

int nano_cgroup_kill(const NanoCgroup *cg, unsigned timeout_ms, NanoError *e)
{
        int found = 0;

        if (!cg)
                return 0;
        for (unsigned i = 0; i < slots(cg); i++) {
                int r;

                if (cg->fd[i] < 0)
                        continue;
                /* Every hierarchy: a process may have joined some and not others. After the first,
                 * the others are usually empty already (the same processes). */
                r = nano_cgroup_kill_at(cg->fd[i], timeout_ms);
                if (r == -EBUSY)
                        return nano_error_set(e, EBUSY,
                                              "the processes of the cgroup '%s/%s' are still there %u ms "
                                              "after SIGKILL",
                                              cg->parent[i], cg->name, timeout_ms);
                if (r < 0)
                        return nano_error_set(e, r, "kill the processes of the cgroup '%s/%s': %m",
                                              cg->parent[i], cg->name);
                if (r > found)
                        found = r;
        }
        return found;
}

unsigned nano_cgroup_dir_fds(const NanoCgroup *cg, int ret[static _NANO_CGROUP_CONTROLLER_MAX])
{
        unsigned n = 0;

        for (unsigned i = 0; cg && i < slots(cg); i++)
                if (cg->fd[i] >= 0)
                        ret[n++] = cg->fd[i];
        return n;
}

/* ---- Probe: which of our cgroups we may write. */

typedef struct MountEntry {
        char root[PATH_MAX], point[PATH_MAX];
} MountEntry;

/* Finds in mountinfo the mount of fstype: "cgroup2", or "cgroup" with controller (>= 0) among its
 * super options ("rw,cpu,cpuacct"). */
static bool find_cgroup_mount(const char *mountinfo, const char *fstype, int controller, MountEntry *ret)
{
        for (const char *next = mountinfo; next && *next;) {
                const char *line = next, *nl = strchr(line, '\n');
                size_t len = nl ? (size_t)(nl - line) : strlen(line);
                char buf[3 * PATH_MAX], *f[5], *dash, *type, *src, *opts, *s;
                int nf = 0;

                next = nl ? nl + 1 : NULL;
                if (len >= sizeof buf)
                        continue;
                memcpy(buf, line, len);
                buf[len] = 0;

                /* "36 35 98:0 /root /mnt rw,noatime master:1 - cgroup cgroup rw,memory" */
                dash = strstr(buf, " - ");
                if (!dash)
                        continue;
                *dash = 0;
                type = dash + 3;
                src = strchr(type, ' ');
                if (!src)
                        continue;
                *src++ = 0;
                opts = strchr(src, ' ');
                if (!streq(type, fstype))
                        continue;
                if (controller >= 0 &&
                    (!opts || !(parse_controllers(opts + 1) & NANO_CGROUP_MASK(controller))))
                        continue;
                for (s = buf; nf < 5 && s; nf++) {
                        f[nf] = s;
                        s = strchr(s, ' ');
                        if (s)
                                *s++ = 0;
                }
                if (nf < 5)
                        continue;
                ns_unescape_octal(f[3]);
                ns_unescape_octal(f[4]);
                (void)ns_format(ret->root, sizeof ret->root, "%s", f[3]);
                (void)ns_format(ret->point, sizeof ret->point, "%s", f[4]);
                return true;
        }
        return false;
}

/* Our cgroup path from /proc/self/cgroup: the "0::" line (controller < 0) or the v1 line listing
 * controller. */
static bool own_cgroup(const char *text, int controller, char *ret, size_t size)
{
        for (const char *line = text; line && *line;) {
                const char *nl = strchr(line, '\n'), *c1, *c2;
                size_t len = nl ? (size_t)(nl - line) : strlen(line);
                bool match;

                c1 = memchr(line, ':', len);
                c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
                if (c2) {
                        char list[256];
                        size_t ll = (size_t)(c2 - c1 - 1);

                        if (controller < 0)
                                match = ll == 0 && c1 - line == 1 && line[0] == '0';
                        else {
                                if (ll >= sizeof list)
                                        ll = sizeof list - 1;
                                memcpy(list, c1 + 1, ll);
                                list[ll] = 0;
                                match = parse_controllers(list) & NANO_CGROUP_MASK(controller);
                        }
                        if (match) {
                                size_t pl = len - (size_t)(c2 + 1 - line);
                                if (pl >= size)
                                        return false;
                                memcpy(ret, c2 + 1, pl);
                                ret[pl] = 0;
                                return true;
                        }
                }
                line = nl ? nl + 1 : NULL;
        }
        return false;
}

/* The directory of a cgroup path in a mount: "/user/alice" in a mount of root "/" at
 * "/sys/fs/cgroup/memory" is "/sys/fs/cgroup/memory/user/alice". */
static int cgroup_dir(const MountEntry *m, const char *path, char *ret, size_t size)
{
        size_t rl = strlen(m->root);

        if (!streq(m->root, "/")) {
                if (strncmp(path, m->root, rl) != 0 || (path[rl] != 0 && path[rl] != '/'))
                        return -ENOENT; /* our cgroup is outside what this mount shows */
                path += rl;
        }
        while (*path == '/')
                path++;
        return ns_format(ret, size, "%s%s%s", m->point, *path ? "/" : "", path);
}

static bool writable(const char *dir, const char *file)
{
        char path[PATH_MAX];

        if (ns_format(path, sizeof path, "%s%s%s", dir, file ? "/" : "", file ? file : "") < 0)
                return false;
        return faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) == 0;
}

static int probe_dir(const char *dir, uid_t *ret_owner)
{
        struct stat st;

        if (stat(dir, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        *ret_owner = st.st_uid;
        return 0;
}

static void probe_v2(NanoProbe *p, const NanoProbeConfig *c, const char *mountinfo, const char *self_cgroup)
{
        const char *root = c && c->cgroup_v2_root ? c->cgroup_v2_root : getenv("NANO_CGROUP_V2_ROOT");
        char path[PATH_MAX], buf[512];
        MountEntry m;
        int r;

        p->cgroup_v2 = -ENOENT;
        if (!mountinfo || !find_cgroup_mount(mountinfo, "cgroup2", -1, &m))
                return;
        (void)ns_format(p->cgroup_v2_mount, sizeof p->cgroup_v2_mount, "%s", m.point);

        if (root && *root)
                r = ns_format(p->cgroup_v2_dir, sizeof p->cgroup_v2_dir, "%s", root);
        else if (self_cgroup && own_cgroup(self_cgroup, -1, path, sizeof path))
                r = cgroup_dir(&m, path, p->cgroup_v2_dir, sizeof p->cgroup_v2_dir);
        else
                r = -ENOENT;
        if (r >= 0)
                r = probe_dir(p->cgroup_v2_dir, &p->cgroup_v2_owner);
        if (r < 0) {
                p->cgroup_v2 = r;
                return;
        }

        if (ns_format(path, sizeof path, "%s/cgroup.controllers", p->cgroup_v2_dir) >= 0 &&
            ns_read_at(AT_FDCWD, path, buf, sizeof buf) >= 0)
                p->cgroup_v2_available = parse_controllers(buf);
        if (ns_format(path, sizeof path, "%s/cgroup.subtree_control", p->cgroup_v2_dir) >= 0 &&
            ns_read_at(AT_FDCWD, path, buf, sizeof buf) >= 0)
                p->cgroup_v2_enabled = parse_controllers(buf);

        if (!(p->cgroup_v2_available & NANO_CGROUP_MASK_ALL))
                p->cgroup_v2 = -ENOMEDIUM;
        else if (!writable(p->cgroup_v2_dir, NULL) || !writable(p->cgroup_v2_dir, "cgroup.procs") ||
                 !writable(p->cgroup_v2_dir, "cgroup.subtree_control"))
                p->cgroup_v2 = -EACCES;
        else
                p->cgroup_v2 = 0;
}

static void probe_v1(NanoProbe *p, const NanoProbeConfig *c, const char *mountinfo, const char *self_cgroup)
{
        const char *root = c && c->cgroup_v1_root ? c->cgroup_v1_root : getenv("NANO_CGROUP_V1_ROOT");

        p->cgroup_v1 = 0;
        for (int i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++) {
                NanoProbeCgroupV1 *v = &p->cgroup_v1_dirs[i];
                char path[PATH_MAX];
                MountEntry m;
                int r;

                if (!mountinfo || !find_cgroup_mount(mountinfo, "cgroup", i, &m))
                        r = -ENOENT;
                else {
                        (void)ns_format(v->mount, sizeof v->mount, "%s", m.point);
                        if (root && *root) {
                                while (*root == '/')
                                        root++;
                                r = ns_format(v->dir, sizeof v->dir, "%s/%s", m.point, root);
                        } else if (self_cgroup && own_cgroup(self_cgroup, i, path, sizeof path))
                                r = cgroup_dir(&m, path, v->dir, sizeof v->dir);
                        else
                                r = -ENOENT;
                        if (r >= 0)
                                r = probe_dir(v->dir, &v->owner);
                        if (r >= 0 && (!writable(v->dir, NULL) || !writable(v->dir, "cgroup.procs")))
                                r = -EACCES;
                }
                v->error = r < 0 ? r : 0;
                if (v->error < 0 && p->cgroup_v1 == 0)
                        p->cgroup_v1 = v->error;
        }
}

void ns_probe_cgroups(NanoProbe *p, const NanoProbeConfig *c, int procfd)
{
        _cleanup_free_ char *mountinfo = NULL, *self_cgroup = NULL;
        bool any_v1 = false;

        (void)ns_read_alloc_at(procfd, "self/mountinfo", 4u << 20, &mountinfo);
        (void)ns_read_alloc_at(procfd, "self/cgroup", 1u << 20, &self_cgroup);

        probe_v2(p, c, mountinfo, self_cgroup);
        probe_v1(p, c, mountinfo, self_cgroup);

        p->cgroup = (NanoCgroupPlace){.version = NANO_CGROUP_NONE};
        if (p->cgroup_v2 == 0) {
                p->cgroup.version = NANO_CGROUP_V2;
                (void)ns_format(p->cgroup.v2, sizeof p->cgroup.v2, "%s", p->cgroup_v2_dir);
                return;
        }
        for (int i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++)
                if (p->cgroup_v1_dirs[i].error == 0) {
                        any_v1 = true;
                        (void)ns_format(p->cgroup.v1[i], sizeof p->cgroup.v1[i], "%s",
                                        p->cgroup_v1_dirs[i].dir);
                }
        if (any_v1)
                p->cgroup.version = NANO_CGROUP_V1;
}
