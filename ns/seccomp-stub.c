/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Built instead of seccomp.c without libseccomp (-Dseccomp=disabled, or not installed). The profile
 * parser (seccomp-profile.c) is still built: a profile is still checked, it just cannot be applied. */
#include "config.h"

#include "ns-internal.h"

#define NO_SECCOMP "nano was built without seccomp support"

int nano_seccomp_prepare(const NanoSeccompProfile *profile, const char *cache_dir, NanoSeccompProgram *ret,
                         NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_SECCOMP);
}

void nano_seccomp_program_done(NanoSeccompProgram *p)
{
        if (!p)
                return;
        free(p->insns);
        *p = (NanoSeccompProgram){};
}

int nano_seccomp_install(const NanoSeccompProgram *p, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_SECCOMP);
}

int nano_seccomp_install_kept(const NanoSeccompProgram *p, int *ret_fd, NanoError *e)
{
        if (ret_fd)
                *ret_fd = -1;
        return nano_error_set(e, EOPNOTSUPP, NO_SECCOMP);
}

int nano_seccomp_rules_text(const NanoSeccompProfile *profile, char *buf, size_t size, NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, NO_SECCOMP);
}

void ns_probe_seccomp(NanoProbe *p, bool trial)
{
        p->seccomp = -EOPNOTSUPP;
}
