/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* fd, string and hex helpers. All fallible functions return >= 0 or -errno. */

#include <sys/types.h>

#include "macros.h"

/* Write all of buf, retrying on EINTR and short writes. */
int write_all(int fd, const void *buf, size_t len);
/* pwrite all of buf at off. */
int pwrite_all(int fd, const void *buf, size_t len, off_t off);
/* Read exactly len bytes unless EOF comes first; returns the byte count read. */
ssize_t read_full(int fd, void *buf, size_t len);
/* pread exactly len bytes at off unless EOF comes first; returns the byte count read. */
ssize_t pread_full(int fd, void *buf, size_t len, off_t off);
/* Read a whole small file (at most max bytes, else -EFBIG) relative to dirfd, NUL-terminated. */
int read_file_at(int dirfd, const char *path, size_t max, char **ret, size_t *ret_size);

/* mkdirat that treats EEXIST as success. */
int mkdirat_ok(int dirfd, const char *path, mode_t mode);

/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void hex_encode(const uint8_t *in, size_t n, char *out);
/* Parse exactly 2n lowercase hex digits; -EINVAL on anything else. */
int hex_decode(const char *in, uint8_t *out, size_t n);

/* "1.2 MiB"-style, into buf of at least 16 bytes; returns buf. */
const char *format_bytes(uint64_t n, char *buf, size_t size);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

/* Parse a size such as "64M", "1G", "4096": powers of 1024. -EINVAL / -ERANGE on bad input. */
int parse_size(const char *s, uint64_t *ret);

static inline bool streq(const char *a, const char *b)
{
        return a && b && __builtin_strcmp(a, b) == 0;
}
