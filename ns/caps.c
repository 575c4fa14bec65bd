/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Dropping every capability before exec. Inside our user namespace we hold the full set (of that
 * namespace) until then; as root on the host we hold it for real.
 *
 * No allocation: this runs in the child of a clone(CLONE_VM | CLONE_VFORK), which shares its parent's
 * heap. So libcap only for what wraps a prctl (securebits, the bounding set, the ambient set); the
 * three sets go through capget(2)/capset(2) on a struct of our own rather than cap_get_proc(). */
#include "config.h"

#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "ns-internal.h"

typedef struct CapSets {
        struct __user_cap_header_struct header;
        struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
} CapSets;

static int caps_get(CapSets *c)
{
        *c = (CapSets){ .header = { .version = _LINUX_CAPABILITY_VERSION_3 } };
        return syscall(SYS_capget, &c->header, c->data) < 0 ? -errno : 0;
}

int nano_caps_drop_all(NanoError *e)
{
        CapSets now, none = { .header = { .version = _LINUX_CAPABILITY_VERSION_3 } };
        int n, r;

        r = caps_get(&now);
        if (r < 0)
                return nano_error_set(e, r, "read our capabilities: %m");

        if (now.data[CAP_TO_INDEX(CAP_SETPCAP)].effective & CAP_TO_MASK(CAP_SETPCAP)) {
                /* uid 0 (also 0 inside our user namespace, with NANO_NS_MAP_ROOT) gets the bounding set
                 * back as permitted at every execve(), whatever we drop now: SECBIT_NOROOT stops that,
                 * locked so that nothing can undo it. The ambient set gets the same treatment. */
                unsigned bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                                SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

                if (cap_set_secbits(bits) < 0)
                        return nano_error_set(e, errno, "set the securebits 0x%x: %m", bits);

                /* The bounding set caps what any later execve() can grant: empty it. Dropping one
                 * that is out already succeeds; EINVAL is a number this kernel has no capability for.
                 * (No cap_get_bound() first: one prctl() per capability, not two.) */
                n = cap_max_bits();
                for (int c = 0; c < n; c++)
                        if (prctl(PR_CAPBSET_DROP, (unsigned long)c, 0, 0, 0) < 0 && errno != EINVAL)
                                return nano_error_set(e, errno,
                                                      "drop capability %d from the bounding set: %m", c);
        }
        /* Without CAP_SETPCAP we cannot touch the bounding set, and need not: we hold no capability, and
         * no_new_privs keeps file capabilities and setuid bits from granting any at execve(). */

        /* One call, where libcap's cap_reset_ambient() asks about each capability first. EINVAL: a
         * kernel before 4.3, with no ambient set. */
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                return nano_error_set(e, errno, "clear the ambient capabilities: %m");

        if (syscall(SYS_capset, &none.header, none.data) < 0)
                return nano_error_set(e, errno,
                                      "drop the effective, permitted and inheritable capabilities: %m");

        /* Trust, but verify: a silently partial drop is worse than a failed start. */
        r = caps_get(&now);
        if (r < 0)
                return nano_error_set(e, r, "read our capabilities: %m");
        for (size_t i = 0; i < ELEMENTSOF(now.data); i++)
                if (now.data[i].effective || now.data[i].permitted || now.data[i].inheritable)
                        return nano_error_set(e, EPERM, "capabilities are still held after dropping them all");
        return 0;
}
