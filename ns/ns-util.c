/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "ns-internal.h"

int ns_format(char *buf, size_t size, const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        if ((size_t)n >= size)
                return -ENAMETOOLONG;
        return n;
}

int ns_write_at(int dirfd, const char *path, const char *s, bool trunc)
{
        _cleanup_close_ int fd = -EBADF;
        size_t len = strlen(s);
        ssize_t n;

        fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | (trunc ? O_TRUNC : 0));
        if (fd < 0)
                return -errno;
        do
                n = write(fd, s, len);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        /* A kernel interface file takes the whole value or nothing: a short write is a refusal. */
        if ((size_t)n != len)
                return -EIO;
        return 0;
}

ssize_t ns_read_at(int dirfd, const char *path, char *buf, size_t size)
{
        _cleanup_close_ int fd = -EBADF;
        ssize_t n;

        if (size == 0)
                return -ENOBUFS;
        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        n = read_full(fd, buf, size - 1);
        if (n < 0)
                return n;
        buf[n] = 0;
        return n;
}

int ns_parse_u64(const char *s, uint64_t *ret)
{
        uint64_t v = 0;
        const char *p = s;

        while (*p == ' ' || *p == '\t')
                p++;
        if (*p < '0' || *p > '9')
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                unsigned d = (unsigned)(*p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        if (*p != 0 && *p != '\n' && *p != ' ' && *p != '\t')
                return -EINVAL;
        *ret = v;
        return 0;
}

int ns_read_long_at(int dirfd, const char *path, long *ret)
{
        char buf[64];
        ssize_t n;
        uint64_t v;
        int r;

        n = ns_read_at(dirfd, path, buf, sizeof buf);
        if (n == -ENOENT) {
                *ret = -1;
                return 0;
        }
        if (n < 0)
                return (int)n;
        r = ns_parse_u64(buf, &v);
        if (r < 0)
                return r;
        *ret = v > LONG_MAX ? LONG_MAX : (long)v;
        return 0;
}

int ns_keyed_u64(const char *text, const char *key, uint64_t *ret)
{
        size_t klen = strlen(key);

        for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                if (strncmp(p, key, klen) == 0 && (p[klen] == ' ' || p[klen] == '\t'))
                        return ns_parse_u64(p + klen, ret);
        return -ENOENT;
}

static bool is_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool ns_name_is_valid(const char *name)
{
        if (!name || !is_alnum(name[0]))
                return false;
        for (size_t n = 0; name[n]; n++) {
                char c = name[n];
                if (n >= 128)
                        return false;
                if (!is_alnum(c) && c != '.' && c != '_' && c != '+' && c != '-')
                        return false;
        }
        return true;
}

void ns_unescape_octal(char *s)
{
        char *w = s;

        for (char *r = s; *r; r++) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
                    r[3] >= '0' && r[3] <= '7') {
                        *w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
                        r += 3;
                } else
                        *w++ = *r;
        }
        *w = 0;
}

int ns_read_alloc_at(int dirfd, const char *path, size_t max, char **ret)
{
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, len = 0;

        /* procfs and cgroupfs files say they are empty: read until EOF, growing the buffer. */
        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t n;

                if (len + 1 >= size) {
                        size_t nsize = size ? size * 2 : 16384;
                        char *nbuf;

                        if (size > max)
                                return -EFBIG;
                        nbuf = realloc(buf, nsize);
                        if (!nbuf)
                                return -ENOMEM;
                        buf = nbuf;
                        size = nsize;
                }
                n = read(fd, buf + len, size - len - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = 0;
        *ret = TAKE_PTR(buf);
        return 0;
}
