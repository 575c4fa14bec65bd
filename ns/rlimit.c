/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Resource limits: POSIX, so this file is built on every system. */
#include "config.h"

#include <strings.h>

#include "ns-internal.h"

static const struct {
        int resource;
        const char *name;
} rlimit_table[] = {
        {RLIMIT_AS, "as"},
        {RLIMIT_CORE, "core"},
        {RLIMIT_CPU, "cpu"},
        {RLIMIT_DATA, "data"},
        {RLIMIT_FSIZE, "fsize"},
        {RLIMIT_NOFILE, "nofile"},
        {RLIMIT_STACK, "stack"},
#ifdef RLIMIT_NPROC
        {RLIMIT_NPROC, "nproc"},
#endif
#ifdef RLIMIT_MEMLOCK
        {RLIMIT_MEMLOCK, "memlock"},
#endif
#ifdef RLIMIT_LOCKS
        {RLIMIT_LOCKS, "locks"},
#endif
#ifdef RLIMIT_SIGPENDING
        {RLIMIT_SIGPENDING, "sigpending"},
#endif
#ifdef RLIMIT_MSGQUEUE
        {RLIMIT_MSGQUEUE, "msgqueue"},
#endif
#ifdef RLIMIT_NICE
        {RLIMIT_NICE, "nice"},
#endif
#ifdef RLIMIT_RTPRIO
        {RLIMIT_RTPRIO, "rtprio"},
#endif
#ifdef RLIMIT_RTTIME
        {RLIMIT_RTTIME, "rttime"},
#endif
#ifdef RLIMIT_RSS
        {RLIMIT_RSS, "rss"},
#endif
};

int nano_rlimit_from_string(const char *s)
{
        if (!s)
                return -EINVAL;
        if (strncasecmp(s, "RLIMIT_", 7) == 0)
                s += 7;
        for (size_t i = 0; i < ELEMENTSOF(rlimit_table); i++)
                if (strcasecmp(s, rlimit_table[i].name) == 0)
                        return rlimit_table[i].resource;
        return -EINVAL;
}

const char *nano_rlimit_to_string(int resource)
{
        for (size_t i = 0; i < ELEMENTSOF(rlimit_table); i++)
                if (rlimit_table[i].resource == resource)
                        return rlimit_table[i].name;
        return NULL;
}

static int parse_rlim(const char *s, size_t len, rlim_t *ret)
{
        char buf[32];
        uint64_t v;
        int r;

        if (len == 0 || len >= sizeof buf)
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = 0;
        if (strcmp(buf, "unlimited") == 0 || strcmp(buf, "infinity") == 0) {
                *ret = RLIM_INFINITY;
                return 0;
        }
        r = ns_parse_u64(buf, &v);
        if (r < 0 || buf[0] == ' ' || strchr(buf, ' '))
                return -EINVAL;
        if ((rlim_t)v != v || (rlim_t)v == RLIM_INFINITY)
                return -ERANGE;
        *ret = (rlim_t)v;
        return 0;
}

int nano_rlimit_parse(const char *s, NanoRlimit *ret, NanoError *e)
{
        const char *eq, *colon;
        char name[32];
        NanoRlimit l;
        int r;

        eq = s ? strchr(s, '=') : NULL;
        if (!eq || (size_t)(eq - s) >= sizeof name)
                return nano_error_set(e, EINVAL, "rlimit '%s': expected NAME=SOFT[:HARD]", s ? s : "");
        memcpy(name, s, (size_t)(eq - s));
        name[eq - s] = 0;
        r = nano_rlimit_from_string(name);
        if (r < 0)
                return nano_error_set(e, EINVAL, "rlimit '%s': unknown resource '%s'", s, name);
        l.resource = r;

        colon = strchr(eq + 1, ':');
        r = parse_rlim(eq + 1, colon ? (size_t)(colon - eq - 1) : strlen(eq + 1), &l.soft);
        if (r >= 0)
                r = colon ? parse_rlim(colon + 1, strlen(colon + 1), &l.hard) : 0;
        if (r < 0)
                return nano_error_set(e, r, "rlimit '%s': expected a number or 'unlimited'", s);
        if (!colon)
                l.hard = l.soft;
        if (l.hard != RLIM_INFINITY && (l.soft == RLIM_INFINITY || l.soft > l.hard))
                return nano_error_set(e, EINVAL, "rlimit '%s': the soft limit is above the hard one", s);
        *ret = l;
        return 0;
}

static const char *format_rlim(rlim_t v, char buf[static 24])
{
        if (v == RLIM_INFINITY)
                return "unlimited";
        snprintf(buf, 24, "%llu", (unsigned long long)v);
        return buf;
}

int nano_rlimits_apply(const NanoRlimit *l, size_t n, NanoError *e)
{
        for (size_t i = 0; i < n; i++) {
                struct rlimit rl = {.rlim_cur = l[i].soft, .rlim_max = l[i].hard};
                const char *name = nano_rlimit_to_string(l[i].resource);
                char soft[24], hard[24];

                if (setrlimit(l[i].resource, &rl) < 0)
                        return nano_error_set(e, errno, "setrlimit %s %s:%s: %m", name ? name : "?",
                                              format_rlim(l[i].soft, soft), format_rlim(l[i].hard, hard));
        }
        return 0;
}
