/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The hardening every mode gets, in the one order that works. Built everywhere: the steps that a
 * build or a system lacks fail through their stubs, and the config says which may be skipped. */
#include "config.h"

#include "ns-internal.h"

int nano_harden(const NanoHardenConfig *c, NanoError *e)
{
        static const NanoHardenConfig defaults = {};
        int r;

        if (!c)
                c = &defaults;

        /* Limits first: raising a hard limit needs CAP_SYS_RESOURCE, which goes below. */
        r = nano_rlimits_apply(c->rlimits, c->n_rlimits, e);
        if (r < 0)
                return r;

        if (!c->allow_new_privs) {
                r = nano_no_new_privs(e);
                if (r < 0)
                        return r;
        }

        if (c->landlock) {
                /* A separate record: a host without Landlock is only an error when asked for. */
                NanoError ll = {};

                r = nano_landlock_apply(c->landlock, &ll);
                if (r < 0 && (c->landlock_required || (r != -ENOSYS && r != -EOPNOTSUPP)))
                        return nano_error_set(e, r, "%s", ll.message);
        }

        /* Securebits and the bounding set need CAP_SETPCAP: after this, nothing can be changed back. */
        if (!c->keep_caps) {
                r = nano_caps_drop_all(e);
                if (r < 0)
                        return r;
        }

        /* Last: the filter denies mount() and friends, which nothing above needs, but it could deny
         * something a future step needs, and the earlier steps need no protection from themselves. */
        if (c->seccomp) {
                r = c->seccomp_kept_fd ? nano_seccomp_install_kept(c->seccomp, c->seccomp_kept_fd, e) :
                                         nano_seccomp_install(c->seccomp, e);
                if (r < 0)
                        return r;
        }
        return 0;
}
