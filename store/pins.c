/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Pins: GC roots other than refs. store/pins/<pin> holds "sha256:<hex>\n", the id of a manifest that
 * gc must keep even when no ref names it any more (an instance runs it: `nano store rm` of its
 * release must not pull its files from under it). Written like refs: under the store lock shared,
 * so a concurrent gc (which holds it exclusively) sees either no pin or the whole of it. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "store.h"
#include "util.h"

bool nano_pin_name_is_valid(const char *s)
{
        size_t n;

        if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= '0' && s[0] <= '9')))
                return false;
        n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+:-");
        return s[n] == 0 && n <= NANO_RELEASE_NAME_MAX;
}

static int open_pins_dir(NanoStore *s, int *ret)
{
        int r, fd;

        r = mkdirat_ok(s->store_fd, "pins", 0755);
        if (r < 0)
                return r;
        fd = openat(s->store_fd, "pins", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        *ret = fd;
        return 0;
}

int nano_store_pin(NanoStore *s, const char *pin, const uint8_t id[32], NanoError *err)
{
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        char buf[NANO_ID_STRING_SIZE + 1], tmp[NAME_MAX + 1], path[NANO_FANOUT_PATH_SIZE];
        struct stat st;
        int r;

        if (!nano_pin_name_is_valid(pin))
                return nano_error_set(err, EINVAL, "invalid pin name '%s'", pin ? pin : "");
        r = nano_store_lock(s, LOCK_SH);
        if (r < 0)
                return nano_error_set(err, r, "cannot lock the store: %m");

        /* Under the lock: a gc that ran before us may have taken the manifest already. */
        nano_fanout_path(id, path);
        if (fstatat(s->manifests_fd, path, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                r = nano_error_set(err, errno, "cannot pin release %s: its manifest is not in the store: %m",
                                   nano_id_format(id, buf));
                goto out;
        }
        r = open_pins_dir(s, &dfd);
        if (r < 0) {
                r = nano_error_set(err, r, "cannot open the store's pins/: %m");
                goto out;
        }
        nano_id_format(id, buf);
        strcat(buf, "\n");
        snprintf(tmp, sizeof tmp, ".tmp.%s.%ld", pin, (long)getpid());
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
                r = nano_error_set(err, errno, "cannot write the pin '%s': %m", pin);
                goto out;
        }
        r = write_all(fd, buf, strlen(buf));
        if (r >= 0 && renameat(dfd, tmp, dfd, pin) < 0)
                r = -errno;
        if (r < 0) {
                (void)unlinkat(dfd, tmp, 0);
                r = nano_error_set(err, r, "cannot write the pin '%s': %m", pin);
                goto out;
        }
        r = 0;
out:
        nano_store_unlock(s);
        return r;
}

int nano_store_unpin(NanoStore *s, const char *pin, NanoError *err)
{
        _cleanup_close_ int dfd = -EBADF;
        int r;

        if (!nano_pin_name_is_valid(pin))
                return nano_error_set(err, EINVAL, "invalid pin name '%s'", pin ? pin : "");
        dfd = openat(s->store_fd, "pins", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dfd < 0)
                return errno == ENOENT ? 0 : nano_error_set(err, errno, "cannot open the store's pins/: %m");
        r = unlinkat(dfd, pin, 0) < 0 ? -errno : 1;
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return nano_error_set(err, r, "cannot remove the pin '%s': %m", pin);
        return 1;
}

int nano_store_pins_foreach(NanoStore *s, int (*cb)(const char *pin, const uint8_t id[32], void *userdata),
                            void *userdata)
{
        _cleanup_close_ int dfd = -EBADF;
        struct dirent *de;
        DIR *d;
        int r = 0;

        dfd = openat(s->store_fd, "pins", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dfd < 0)
                return errno == ENOENT ? 0 : -errno;
        d = fdopendir(dfd);
        if (!d)
                return -errno;
        dfd = -EBADF;
        while (r >= 0 && (de = readdir(d))) {
                char buf[NANO_ID_STRING_SIZE + 8];
                uint8_t id[32];
                ssize_t n;
                int fd;

                if (de->d_name[0] == '.' || !nano_pin_name_is_valid(de->d_name))
                        continue;
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                        continue;
                n = read_full(fd, buf, sizeof buf - 1);
                safe_close(fd);
                if (n < 0)
                        continue;
                buf[n] = 0;
                buf[strcspn(buf, "\n")] = 0;
                /* A malformed pin protects nothing: fsck's business, not gc's. */
                if (nano_id_parse(buf, id) < 0)
                        continue;
                r = cb(de->d_name, id, userdata);
        }
        closedir(d);
        return r;
}
