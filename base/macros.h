/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small macros every layer uses: cleanup attributes, ownership transfer, sizes. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _noreturn_ __attribute__((noreturn))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(x, y) (((x) + (y) - 1) / (y))

/* Take ownership of a pointer or fd: the variable is reset so its cleanup does nothing. */
#define TAKE_PTR(p)                                  \
        ({                                           \
                __typeof__(p) _tp_ = (p);            \
                (p) = NULL;                          \
                _tp_;                                \
        })
#define TAKE_FD(fd)                                  \
        ({                                           \
                int _tf_ = (fd);                     \
                (fd) = -EBADF;                       \
                _tf_;                                \
        })

static inline void freep(void *p)
{
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd)
{
        if (fd >= 0) {
                int saved = errno;
                (void)close(fd);
                errno = saved;
        }
        return -EBADF;
}
static inline void closep(int *fd)
{
        *fd = safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Returns -errno of the last failing libc call, never 0 (EIO if errno was not set). */
static inline int negative_errno(void)
{
        return errno > 0 ? -errno : -EIO;
}

/* Little-endian fixed-width accessors for on-disk formats (unaligned-safe). */
static inline uint16_t le16_read(const void *p)
{
        const uint8_t *b = p;
        return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t le32_read(const void *p)
{
        const uint8_t *b = p;
        return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t le64_read(const void *p)
{
        return (uint64_t)le32_read(p) | (uint64_t)le32_read((const uint8_t *)p + 4) << 32;
}
static inline void le16_write(void *p, uint16_t v)
{
        uint8_t *b = p;
        b[0] = (uint8_t)v;
        b[1] = (uint8_t)(v >> 8);
}
static inline void le32_write(void *p, uint32_t v)
{
        uint8_t *b = p;
        for (int i = 0; i < 4; i++)
                b[i] = (uint8_t)(v >> (8 * i));
}
static inline void le64_write(void *p, uint64_t v)
{
        le32_write(p, (uint32_t)v);
        le32_write((uint8_t *)p + 4, (uint32_t)(v >> 32));
}
