/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <string.h>
#include <strings.h>

#include "log.h"

static int max_level = LOG_LEVEL_NOTICE;

void log_set_max_level(int level)
{
        max_level = level;
}

int log_get_max_level(void)
{
        return max_level;
}

int log_level_from_string(const char *s)
{
        static const char *const names[] = {
                [LOG_LEVEL_ERROR] = "error", [LOG_LEVEL_WARNING] = "warning", [LOG_LEVEL_NOTICE] = "notice",
                [LOG_LEVEL_INFO] = "info",   [LOG_LEVEL_DEBUG] = "debug",
        };
        for (size_t i = LOG_LEVEL_ERROR; i < ELEMENTSOF(names); i++)
                if (strcasecmp(s, names[i]) == 0)
                        return (int)i;
        if (s[0] >= '3' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        return -EINVAL;
}

void log_parse_environment(void)
{
        const char *e = getenv("NANO_LOG_LEVEL");
        int l;

        if (e && (l = log_level_from_string(e)) >= 0)
                max_level = l;
}

int log_internal(int level, int error, const char *file, int line, const char *fmt, ...)
{
        int saved = errno;
        char buf[4096];
        va_list ap;

        if (error < 0)
                error = -error;
        if (level > max_level)
                return -error;

        /* "%m" in fmt names `error`, as glibc's printf reads errno for it. */
        errno = error;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);

        if (max_level >= LOG_LEVEL_DEBUG)
                fprintf(stderr, "nano: %s:%d: %s\n", file, line, buf);
        else
                fprintf(stderr, "nano: %s%s\n", level <= LOG_LEVEL_ERROR ? "" :
                        level == LOG_LEVEL_WARNING ? "warning: " : "", buf);
        errno = saved;
        return -error;
}
