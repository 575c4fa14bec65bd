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

typedef struct PinSeek {
        const uint8_t *id;
        bool found;
} PinSeek;

static int pin_names(const char *pin, const uint8_t id[32], void *userdata)
{
        PinSeek *p = userdata;

        (void)pin;
        if (id && memcmp(id, p->id, 32) == 0) {
                p->found = true;
                return -ECANCELED; /* found: stop */
        }
        return 0;
}

/* Whether the release with manifest id is whole in the store, under the store lock: a ref or a pin
 * names it (gc keeps all they need), or every object of its files is there. gc keeps the manifest
 * file of a removed release as long as another version's manifest is packed against it, and
 * removes the release's own objects: its manifest being there says nothing of its files. release
 * is what the user named (name@version, or sha256:<id>), to check that ref first. Returns the
 * number of files whose object is missing, or a negative errno. */
static int64_t release_missing(NanoStore *s, const uint8_t id[32], const char *release)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ NanoRelease *list = NULL;
        char name[NANO_RELEASE_NAME_MAX + 1], version[NANO_RELEASE_NAME_MAX + 1];
        PinSeek seek = { .id = id };
        uint8_t ref[32];
        int64_t missing = 0;
        size_t n;
        int r;

        if (release && nano_release_parse(release, name, version) >= 0 &&
            nano_ref_read(s, name, version, ref) >= 0 && memcmp(ref, id, 32) == 0)
                return 0;
        /* Named by id, or its ref moved meanwhile: any ref, any pin. */
        if (nano_store_list(s, &list, &n, NULL) >= 0)
                for (size_t i = 0; i < n; i++)
                        if (memcmp(list[i].id, id, 32) == 0)
                                return 0;
        r = nano_store_pins_foreach(s, pin_names, &seek);
        if (seek.found)
                return 0;
        if (r < 0)
                return r;
        r = nano_store_open_manifest(s, id, &m);
        if (r < 0)
                return r;
        for (uint32_t i = 0, count = nano_manifest_count(m); i < count; i++) {
                char path[NANO_FANOUT_PATH_SIZE];
                NanoEntry e;
                nano_manifest_entry(m, i, &e);
                if (e.type != NANO_ENTRY_REGULAR)
                        continue;
                nano_fanout_path(e.digest, path);
                if (faccessat(s->objects_fd, path, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT)
                                return -errno;
                        missing++;
                }
        }
        return missing;
}

int nano_store_pin(NanoStore *s, const char *pin, const uint8_t id[32], const char *release, unsigned flags,
                   NanoError *err)
{
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        char buf[NANO_ID_STRING_SIZE + 1], tmp[NAME_MAX + 1], path[NANO_FANOUT_PATH_SIZE];
        struct stat st;
        int64_t missing;
        int r;

        if (!nano_pin_name_is_valid(pin))
                return nano_error_set(err, EINVAL, "invalid pin name '%s'", pin ? pin : "");
        r = nano_store_lock(s, LOCK_SH);
        if (r < 0)
                return nano_error_set(err, r, "cannot lock the store: %m");

        /* Under the lock: a gc that ran before us may have taken the manifest already, or the
         * release's files while keeping its manifest. */
        nano_id_format(id, buf);
        nano_fanout_path(id, path);
        if (fstatat(s->manifests_fd, path, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                r = nano_error_set(err, errno, "cannot pin release %s: its manifest is not in the store: %m",
                                   buf);
                goto out;
        }
        missing = release_missing(s, id, release);
        if (missing < 0) {
                r = nano_error_set(err, (int)missing, "cannot pin release %s: cannot read it: %m", buf);
                goto out;
        }
        if (missing > 0) {
                r = nano_error_set(err, ENOENT,
                                   "release %s is no longer whole in the store: no ref names it, and %lld "
                                   "of its files were removed by 'nano store gc'; add it again",
                                   release ? release : buf, (long long)missing);
                goto out;
        }
        r = open_pins_dir(s, &dfd);
        if (r < 0) {
                r = nano_error_set(err, r, "cannot open the store's pins/: %m");
                goto out;
        }
        strcat(buf, "\n");
        snprintf(tmp, sizeof tmp, ".tmp.%s.%ld", pin, (long)getpid());
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
                r = nano_error_set(err, errno, "cannot write the pin '%s': %m", pin);
                goto out;
        }
        /* NANO_PIN_SYNC: durable before it counts, like a ref, for an instance that outlives a power
         * cut (a pin lost then would let gc take its files). */
        r = write_all(fd, buf, strlen(buf));
        if (r >= 0 && (flags & NANO_PIN_SYNC) && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && renameat(dfd, tmp, dfd, pin) < 0)
                r = -errno;
        if (r >= 0 && (flags & NANO_PIN_SYNC) && fsync(dfd) < 0)
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
        for (;;) {
                char buf[NANO_ID_STRING_SIZE + 8];
                uint8_t id[32];
                ssize_t n;
                int fd;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        r = -errno;
                        break;
                }
                if (de->d_name[0] == '.' || !nano_pin_name_is_valid(de->d_name))
                        continue;
                /* A pin that cannot be read is an error, never "no pin": gc would take the files of
                 * the instance it protects. */
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0) {
                        if (errno == ENOENT) /* unpinned meanwhile */
                                continue;
                        r = -errno;
                        break;
                }
                n = read_full(fd, buf, sizeof buf - 1);
                safe_close(fd);
                if (n < 0) {
                        r = (int)n;
                        break;
                }
                buf[n] = 0;
                buf[strcspn(buf, "\n")] = 0;
                r = cb(de->d_name, nano_id_parse(buf, id) < 0 ? NULL : id, userdata);
                if (r < 0)
                        break;
        }
        closedir(d);
        return r;
}
