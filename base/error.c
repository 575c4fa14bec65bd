/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <string.h>

#include "error.h"

int nano_error_set(NanoError *e, int error, const char *fmt, ...)
{
        int saved = errno;
        va_list ap;

        if (error < 0)
                error = -error;
        if (error == 0)
                error = EIO;
        if (e && e->error == 0) {
                e->error = error;
                errno = error;
                va_start(ap, fmt);
                vsnprintf(e->message, sizeof e->message, fmt, ap);
                va_end(ap);
        }
        errno = saved;
        return -error;
}
