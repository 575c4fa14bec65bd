/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* checkout: materialises a release into a plain directory, for hosts without FUSE. Entries come in
 * breadth-first order, so every parent exists before its children; paths are relative to the
 * destination's fd and every component below it is a directory this function created, so nothing
 * can lead outside. Directories get their final mode and mtime last, deepest first. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "store.h"
#include "util.h"

static int write_content(NanoStore *s, const NanoEntry *e, int fd, uint8_t *buf)
{
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        int r;

        r = nano_store_open_blob(s, e->digest, &b);
        if (r < 0)
                return r;
        if (nano_blob_size(b) != e->size)
                return -EBADMSG;
        for (uint64_t i = 0; i < nano_blob_n_chunks(b); i++) {
                ssize_t n = nano_blob_read_chunk(b, i, buf);
                if (n < 0)
                        return (int)n;
                r = write_all(fd, buf, (size_t)n);
                if (r < 0)
                        return r;
        }
        return 0;
}

int nano_store_checkout(NanoStore *s, const uint8_t id[32], const char *dir, NanoError *err)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_close_ int root = -EBADF;
        char path[NANO_PATH_MAX + 1];
        NanoEntry e;
        uint32_t n;
        int r;

        r = nano_store_open_manifest(s, id, &m);
        if (r < 0) {
                char idbuf[NANO_ID_STRING_SIZE];
                return nano_error_set(err, r, "cannot open manifest %s: %m", nano_id_format(id, idbuf));
        }
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return nano_error_set(err, errno, "cannot create '%s': %m", dir);
        root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
                return nano_error_set(err, errno, "cannot open '%s': %m", dir);
        {
                _cleanup_close_ int dup = fcntl(root, F_DUPFD_CLOEXEC, 3);
                DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
                struct dirent *de;
                bool empty = true;
                if (!d)
                        return nano_error_set(err, errno, "cannot read '%s': %m", dir);
                dup = -EBADF;
                while ((de = readdir(d)))
                        if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                                empty = false;
                closedir(d);
                if (!empty)
                        return nano_error_set(err, ENOTEMPTY, "'%s' is not empty: checkout needs a new or empty directory",
                                              dir);
        }
        buf = malloc((size_t)1 << NANO_BLOB_CHUNK_SHIFT_MAX);
        if (!buf)
                return nano_error_set(err, ENOMEM, "out of memory");

        n = nano_manifest_count(m);
        for (uint32_t i = 1; i < n; i++) {
                nano_manifest_entry(m, i, &e);
                r = nano_manifest_path(m, i, path, sizeof path);
                if (r < 0)
                        return nano_error_set(err, r, "entry %u: path too long", i);
                switch (e.type) {
                case NANO_ENTRY_DIRECTORY:
                        if (mkdirat(root, path, 0700) < 0)
                                return nano_error_set(err, errno, "cannot create '%s/%s': %m", dir, path);
                        break;
                case NANO_ENTRY_SYMLINK: {
                        char target[NANO_SYMLINK_MAX + 1];
                        struct timespec ts[2] = { { 0, UTIME_OMIT }, { e.mtime_sec, e.mtime_nsec } };
                        memcpy(target, e.target, e.size);
                        target[e.size] = '\0';
                        if (symlinkat(target, root, path) < 0)
                                return nano_error_set(err, errno, "cannot create symlink '%s/%s': %m", dir, path);
                        (void)utimensat(root, path, ts, AT_SYMLINK_NOFOLLOW);
                        break;
                }
                case NANO_ENTRY_REGULAR: {
                        _cleanup_close_ int fd = -EBADF;
                        struct timespec ts[2] = { { 0, UTIME_OMIT }, { e.mtime_sec, e.mtime_nsec } };
                        fd = openat(root, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                        if (fd < 0)
                                return nano_error_set(err, errno, "cannot create '%s/%s': %m", dir, path);
                        r = write_content(s, &e, fd, buf);
                        if (r == -EBADMSG)
                                return nano_error_set(err, r, "'%s' is corrupt in the store (run 'nano store fsck')", path);
                        if (r == -ENOENT)
                                /* A release whose content is missing is a damaged store, as for cat. */
                                return nano_error_set(err, EBADMSG,
                                                      "the content of '%s' is missing from the store (run 'nano store fsck')",
                                                      path);
                        if (r < 0)
                                return nano_error_set(err, r, "cannot write '%s/%s': %m", dir, path);
                        if (fchmod(fd, (mode_t)e.mode) < 0 || futimens(fd, ts) < 0)
                                return nano_error_set(err, errno, "cannot set the attributes of '%s/%s': %m", dir, path);
                        if (close(TAKE_FD(fd)) < 0)
                                return nano_error_set(err, errno, "cannot write '%s/%s': %m", dir, path);
                        break;
                }
                }
        }

        /* Directories last, deepest first (reverse breadth-first order), root included. */
        for (uint32_t i = n; i-- > 0;) {
                nano_manifest_entry(m, i, &e);
                if (e.type != NANO_ENTRY_DIRECTORY)
                        continue;
                struct timespec ts[2] = { { 0, UTIME_OMIT }, { e.mtime_sec, e.mtime_nsec } };
                r = nano_manifest_path(m, i, path, sizeof path);
                if (r < 0)
                        return nano_error_set(err, r, "entry %u: path too long", i);
                const char *p = i == 0 ? "." : path;
                if (fchmodat(root, p, (mode_t)e.mode, 0) < 0 || utimensat(root, p, ts, AT_SYMLINK_NOFOLLOW) < 0)
                        return nano_error_set(err, errno, "cannot set the attributes of '%s/%s': %m", dir, path);
        }
        return 0;
}
