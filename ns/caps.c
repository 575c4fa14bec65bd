/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Dropping every capability before exec. Inside our user namespace we hold the full set (of that
 * namespace) until then; as root on the host we hold it for real. */
#include "config.h"

#include <linux/securebits.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include "ns-internal.h"

static void cap_freep(cap_t *c)
{
        if (*c)
                cap_free(*c);
}

int nano_caps_drop_all(NanoError *e)
{
        _cleanup_(cap_freep) cap_t caps = NULL, now = NULL;
        cap_flag_value_t setpcap = CAP_CLEAR;
        int n;

        caps = cap_get_proc();
        if (!caps)
                return nano_error_set(e, errno, "read our capabilities: %m");
        if (cap_get_flag(caps, CAP_SETPCAP, CAP_EFFECTIVE, &setpcap) < 0)
                return nano_error_set(e, errno, "read CAP_SETPCAP: %m");

        if (setpcap == CAP_SET) {
                /* uid 0 (also 0 inside our user namespace, with NANO_NS_MAP_ROOT) gets the bounding set
                 * back as permitted at every execve(), whatever we drop now: SECBIT_NOROOT stops that,
                 * locked so that nothing can undo it. The ambient set gets the same treatment. */
                unsigned bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                                SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

                if (cap_set_secbits(bits) < 0)
                        return nano_error_set(e, errno, "set the securebits 0x%x: %m", bits);

                /* The bounding set caps what any later execve() can grant: empty it. */
                n = cap_max_bits();
                for (int c = 0; c < n; c++) {
                        int b = cap_get_bound((cap_value_t)c);
                        if (b <= 0) /* already out, or not a capability of this kernel */
                                continue;
                        if (cap_drop_bound((cap_value_t)c) < 0)
                                return nano_error_set(e, errno,
                                                      "drop capability %d from the bounding set: %m", c);
                }
        }
        /* Without CAP_SETPCAP we cannot touch the bounding set, and need not: we hold no capability, and
         * no_new_privs keeps file capabilities and setuid bits from granting any at execve(). */

        if (cap_reset_ambient() < 0 && errno != EINVAL) /* EINVAL: kernel before 4.3, no ambient set */
                return nano_error_set(e, errno, "clear the ambient capabilities: %m");

        if (cap_clear(caps) < 0)
                return nano_error_set(e, errno, "clear the capability set: %m");
        if (cap_set_proc(caps) < 0)
                return nano_error_set(e, errno,
                                      "drop the effective, permitted and inheritable capabilities: %m");

        /* Trust, but verify: a silently partial drop is worse than a failed start. */
        now = cap_get_proc();
        if (!now)
                return nano_error_set(e, errno, "read our capabilities: %m");
        if (cap_compare(now, caps) != 0)
                return nano_error_set(e, EPERM, "capabilities are still held after dropping them all");
        return 0;
}
