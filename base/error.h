/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* An error record: the errno and a message with context, filled where the context is known (deep in
 * an importer: which file, which archive member) and printed once by the CLI. The first error set
 * wins; later ones keep it. */

#include "macros.h"
#include "nano.h"

/* Records error (a positive or negative errno) with a message; "%m" names the error. Returns -|error|.
 * e may be NULL. */
int nano_error_set(NanoError *e, int error, const char *fmt, ...) _printf_(3, 4);
