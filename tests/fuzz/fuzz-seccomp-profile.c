/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The --seccomp FILE parser takes a user's file: it must refuse anything malformed with a message
 * naming the line, never crash, and what it accepts must satisfy its own rules. */
#include <stdlib.h>
#include <string.h>

#include "ns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool valid_name(const char *s)
{
        if (!*s || strlen(s) > NANO_SECCOMP_NAME_MAX)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || *p == '_' || (p != s && *p >= '0' && *p <= '9')))
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static NanoSeccompProfile p; /* large: keep it off the stack */
        NanoError e = { 0 };
        int r;

        r = nano_seccomp_profile_parse((const char *)data, size, "fuzz", &p, &e);
        if (r < 0) {
                if (e.error == 0 || e.message[0] == '\0' || p.n_entries != 0)
                        abort();
                return 0;
        }
        if (p.n_entries > NANO_SECCOMP_PROFILE_MAX_ENTRIES || (p.n_entries == 0 && !p.include_default))
                abort();
        for (size_t i = 0; i < p.n_entries; i++) {
                if (!valid_name(p.entries[i].name) || p.entries[i].line == 0)
                        abort();
                for (size_t j = 0; j < i; j++)
                        if (strcmp(p.entries[i].name, p.entries[j].name) == 0)
                                abort();
        }
        return 0;
}
