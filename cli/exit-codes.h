/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The `nano` command's exit codes. Append only; never renumber (doc/cli.md documents each). */
typedef enum NanoExit {
        NANO_EXIT_OK = 0,
        NANO_EXIT_FAILURE = 1,   /* the operation failed: I/O error, bad input, full disk… */
        NANO_EXIT_USAGE = 2,     /* bad command line */
        NANO_EXIT_NOT_FOUND = 3, /* no such release, path or instance */
        NANO_EXIT_CORRUPT = 4,   /* integrity problems found (fsck) or met (cat, checkout) */
        NANO_EXIT_EXISTS = 5,    /* the release exists with other content */
        /* 125..127 follow the shells' and container runtimes' convention for `nano run`. */
        NANO_EXIT_RUN_FAILED = 125,
        NANO_EXIT_NOT_EXECUTABLE = 126,
        NANO_EXIT_CMD_NOT_FOUND = 127,
} NanoExit;
