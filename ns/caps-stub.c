/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Built instead of caps.c without libcap (-Dlibcap=disabled, not installed, or not Linux). */
#include "config.h"

#include "ns-internal.h"

int nano_caps_drop_all(NanoError *e)
{
        return nano_error_set(e, EOPNOTSUPP, "nano was built without libcap support");
}
