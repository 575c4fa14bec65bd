/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Built instead of cgroup.c without cgroup support (-Dcgroups=disabled, or not Linux). */
#include "config.h"

#include "ns-internal.h"

#define NO_CGROUPS "nano was built without cgroup support"

const char *nano_cgroup_controller_to_string(NanoCgroupController c)
{
        static const char *const names[] = {"memory", "pids", "cpu"};
        return (unsigned)c < ELEMENTSOF(names) ? names[c] : NULL;
}

int nano_cgroup_create(const NanoCgroupPlace *place, const char *name, const NanoCgroupLimits *l,
                       NanoCgroup **ret, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_CGROUPS);
}

int nano_cgroup_open(const NanoCgroupPlace *place, const char *name, NanoCgroup **ret, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_CGROUPS);
}

int nano_cgroup_attach(const NanoCgroup *cg, pid_t pid, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_CGROUPS);
}

int nano_cgroup_read(const NanoCgroup *cg, NanoCgroupState *ret, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_CGROUPS);
}

int nano_cgroup_remove(NanoCgroup *cg, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_CGROUPS);
}

int nano_cgroup_kill(const NanoCgroup *cg, unsigned timeout_ms, NanoError *e)
{
        return cg ? nano_error_set(e, EOPNOTSUPP, NO_CGROUPS) : 0;
}

unsigned nano_cgroup_dir_fds(const NanoCgroup *cg, int ret[static _NANO_CGROUP_CONTROLLER_MAX])
{
        return 0;
}

int nano_cgroup_fd(const NanoCgroup *cg)
{
        return -EBADF;
}

NanoCgroup *nano_cgroup_free(NanoCgroup *cg)
{
        return NULL;
}

void ns_probe_cgroups(NanoProbe *p, const NanoProbeConfig *c, int procfd)
{
        p->cgroup_v2 = p->cgroup_v1 = -EOPNOTSUPP;
        for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++)
                p->cgroup_v1_dirs[i].error = -EOPNOTSUPP;
        p->cgroup = (NanoCgroupPlace){.version = NANO_CGROUP_NONE};
}
