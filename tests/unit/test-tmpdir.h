/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the unit tests that need files share: a private directory for the whole group (under
 * $TMPDIR), removed at the end, and checked path formatting. Include after <cmocka.h>. */

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "macros.h"

/* snprintf into an array, failing the test if the path does not fit. */
#define PATHF(buf, ...) assert_true((size_t)snprintf((buf), sizeof(buf), __VA_ARGS__) < sizeof(buf))

static char tmpdir[256];

static int tmpdir_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(path) < 0 ? -1 : 0;
}

/* Creates tmpdir as $TMPDIR/<name>.XXXXXX; for a cmocka group setup. */
static inline int tmpdir_create(const char *name)
{
        const char *base = getenv("TMPDIR");

        if ((size_t)snprintf(tmpdir, sizeof tmpdir, "%s/%s.XXXXXX", base && *base ? base : "/tmp", name) >=
            sizeof tmpdir)
                return -1;
        return mkdtemp(tmpdir) ? 0 : -1;
}

/* Removes tmpdir and everything in it. */
static inline void tmpdir_remove(void)
{
        if (tmpdir[0])
                nftw(tmpdir, tmpdir_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* tmpdir_remove() as a cmocka group teardown. */
_unused_ static int tmpdir_teardown(void **state)
{
        tmpdir_remove();
        return 0;
}

/* mkdir -p, failing the test on any error but EEXIST. */
_unused_ static void mkdir_p(const char *path)
{
        char buf[PATH_MAX];

        PATHF(buf, "%s", path);
        for (char *p = buf + 1; *p; p++)
                if (*p == '/') {
                        *p = 0;
                        (void)mkdir(buf, 0755);
                        *p = '/';
                }
        assert_true(mkdir(buf, 0755) == 0 || errno == EEXIST);
}
