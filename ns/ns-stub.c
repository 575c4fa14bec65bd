/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Built instead of userns.c, mount.c and landlock.c without namespace support (-Dnamespaces=disabled,
 * or not Linux): every entry point fails clearly, so that a config asking for isolation is refused
 * rather than silently run bare. */
#include "config.h"

#include "ns-internal.h"

#define NO_NAMESPACES "nano was built without namespace support"

int nano_ns_unshare(const NanoNsConfig *c, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_NAMESPACES);
}

int nano_ns_clone_flags(const NanoNsConfig *c)
{
        return -EOPNOTSUPP;
}

int nano_ns_setup_entered(const NanoNsConfig *c, uid_t uid, gid_t gid, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_NAMESPACES);
}

int nano_ns_setup_root(const NanoNsConfig *c, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_NAMESPACES);
}

int nano_ns_root_skeleton(const char *cache_dir, const char *staging_dir, char *ret, size_t size,
                          NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_NAMESPACES);
}

int nano_ns_loopback_up(NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_NAMESPACES);
}

int nano_no_new_privs(NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_NAMESPACES " (no_new_privs)");
}

int nano_landlock_abi(void)
{
        return -EOPNOTSUPP;
}

int nano_landlock_apply(const NanoLandlockConfig *c, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_NAMESPACES " (Landlock)");
}

void ns_probe_namespaces(NanoProbe *p, bool trial)
{
        p->userns = p->pidns = p->netns = -EOPNOTSUPP;
        p->userns_step = p->pidns_step = p->netns_step = "not built";
}
