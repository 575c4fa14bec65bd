/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Refs: refs/<name>/<version> holds "sha256:<hex>\n", the id of a release's manifest. The ref is the
 * commit point of an import: it is written last, after the store was synced. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>

#include "store.h"
#include "util.h"

#define REF_SIZE (NANO_ID_STRING_SIZE) /* "sha256:" + 64 hex + "\n" */

int nano_release_parse(const char *release, char name[NANO_RELEASE_NAME_MAX + 1],
                       char version[NANO_RELEASE_NAME_MAX + 1])
{
        const char *at = strchr(release, '@');
        size_t n;

        if (!at)
                return -EINVAL;
        n = (size_t)(at - release);
        if (n == 0 || n > NANO_RELEASE_NAME_MAX || strlen(at + 1) > NANO_RELEASE_NAME_MAX)
                return -EINVAL;
        memcpy(name, release, n);
        name[n] = '\0';
        strcpy(version, at + 1);
        if (!nano_name_is_valid(name) || !nano_name_is_valid(version))
                return -EINVAL;
        return 0;
}

static int ref_path(const char *name, const char *version, char *buf, size_t size)
{
        if (!nano_name_is_valid(name) || !nano_name_is_valid(version))
                return -EINVAL;
        snprintf(buf, size, "%s/%s", name, version);
        return 0;
}

int nano_ref_read(NanoStore *s, const char *name, const char *version, uint8_t ret[32])
{
        char path[2 * NANO_RELEASE_NAME_MAX + 2], buf[REF_SIZE + 1];
        _cleanup_close_ int fd = -EBADF;
        ssize_t n;
        int r;

        r = ref_path(name, version, path, sizeof path);
        if (r < 0)
                return r;
        fd = openat(s->refs_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        n = read_full(fd, buf, sizeof buf);
        if (n < 0)
                return (int)n;
        if (n != REF_SIZE || buf[REF_SIZE - 1] != '\n')
                return -EBADMSG;
        buf[REF_SIZE - 1] = '\0';
        return nano_id_parse(buf, ret) < 0 ? -EBADMSG : 0;
}

int nano_ref_write(NanoStore *s, const char *name, const char *version, const uint8_t id[32])
{
        char path[2 * NANO_RELEASE_NAME_MAX + 2], buf[REF_SIZE], tmp[64];
        _cleanup_close_ int fd = -EBADF, dfd = -EBADF;
        uint8_t old[32];
        int r;

        r = ref_path(name, version, path, sizeof path);
        if (r < 0)
                return r;
        if (nano_name_is_reserved(name))
                return -EINVAL; /* the mount would hide it; nano_store_add() says why */
        r = nano_ref_read(s, name, version, old);
        if (r >= 0)
                return memcmp(old, id, 32) == 0 ? 0 : -EEXIST;

        /* The ref is the commit point: everything it names must be on disk first. */
        if (syncfs(s->store_fd) < 0)
                return -errno;

        r = mkdirat_ok(s->refs_fd, name, 0755);
        if (r < 0)
                return r;
        dfd = openat(s->refs_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dfd < 0)
                return -errno;

        nano_id_format(id, buf);
        buf[REF_SIZE - 1] = '\n';
        fd = nano_store_tmpfile(s, tmp);
        if (fd < 0)
                return fd;
        r = write_all(fd, buf, REF_SIZE);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0) {
                (void)unlinkat(s->tmp_fd, tmp, 0);
                return r;
        }
        r = nano_store_publish(s, tmp, dfd, version, -1);
        if (r < 0)
                return r;
        if (r == 0) {
                /* A concurrent import of the same release won the race. */
                r = nano_ref_read(s, name, version, old);
                if (r < 0)
                        return r;
                return memcmp(old, id, 32) == 0 ? 0 : -EEXIST;
        }
        (void)fsync(dfd);
        return 1;
}

int nano_store_resolve(NanoStore *s, const char *release, uint8_t ret[32], NanoError *err)
{
        char name[NANO_RELEASE_NAME_MAX + 1], version[NANO_RELEASE_NAME_MAX + 1];
        uint8_t id[32];
        int r;

        if (strncmp(release, "sha256:", 7) == 0) {
                char path[NANO_FANOUT_PATH_SIZE];
                if (nano_id_parse(release, id) < 0)
                        return nano_error_set(err, EINVAL, "'%s' is not a valid id (sha256: and 64 lowercase hex digits)",
                                              release);
                nano_fanout_path(id, path);
                if (faccessat(s->manifests_fd, path, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
                        return nano_error_set(err, ENOENT, "no release with id '%s' in the store", release);
                memcpy(ret, id, 32);
                return 0;
        }
        if (nano_release_parse(release, name, version) < 0)
                return nano_error_set(err, EINVAL,
                                      "'%s' is not a release: expected name@version or sha256:<id>, where name and "
                                      "version match [A-Za-z0-9][A-Za-z0-9._+-]{0,127}",
                                      release);
        r = nano_ref_read(s, name, version, id);
        if (r == -ENOENT)
                return nano_error_set(err, r, "no release '%s' in the store", release);
        if (r < 0)
                return nano_error_set(err, r, "cannot read the ref of '%s': %m", release);
        memcpy(ret, id, 32);
        return 0;
}

int nano_store_remove(NanoStore *s, const char *release, NanoError *err)
{
        char name[NANO_RELEASE_NAME_MAX + 1], version[NANO_RELEASE_NAME_MAX + 1], path[2 * NANO_RELEASE_NAME_MAX + 2];
        int r;

        if (nano_release_parse(release, name, version) < 0)
                return nano_error_set(err, EINVAL, "'%s' is not a release name: expected name@version", release);
        r = nano_store_lock(s, LOCK_SH);
        if (r < 0)
                return nano_error_set(err, r, "cannot lock the store: %m");
        snprintf(path, sizeof path, "%s/%s", name, version);
        if (unlinkat(s->refs_fd, path, 0) < 0) {
                r = -errno;
                nano_store_unlock(s);
                if (r == -ENOENT)
                        return nano_error_set(err, r, "no release '%s' in the store", release);
                return nano_error_set(err, r, "cannot remove the ref of '%s': %m", release);
        }
        /* The name's folder stays, even empty: a concurrent add may be writing a ref into it. gc, which
         * runs alone, removes empty ones. */
        nano_store_unlock(s);
        return 0;
}

static int release_cmp(const void *a, const void *b)
{
        const NanoRelease *x = a, *y = b;
        int c = strcmp(x->name, y->name);
        return c ? c : strverscmp(x->version, y->version);
}

/* Lists the refs. Strict (gc's roots): a folder or a ref that cannot be read is an error, never
 * "no ref" (gc would take that release's files), and a malformed ref is counted in *ret_malformed
 * (what it named cannot be known). Otherwise they are skipped: `store ls` shows what it can. */
static int list_refs(NanoStore *s, bool strict, NanoRelease **ret, size_t *ret_n, uint64_t *ret_malformed,
                     NanoError *err)
{
        _cleanup_free_ NanoRelease *list = NULL;
        size_t n = 0, cap = 0;
        uint64_t malformed = 0;
        DIR *d;
        struct dirent *de;
        int fd, r = 0;

        fd = openat(s->refs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || !(d = fdopendir(fd))) {
                safe_close(fd);
                return nano_error_set(err, errno, "cannot list refs: %m");
        }
        while (r >= 0 && (errno = 0, de = readdir(d))) {
                if (!nano_name_is_valid(de->d_name))
                        continue;
                int sfd = openat(s->refs_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                DIR *sd = sfd >= 0 ? fdopendir(sfd) : NULL;
                struct dirent *ve;
                if (!sd) {
                        int e = errno;
                        safe_close(sfd);
                        if (strict && e != ENOENT && e != ENOTDIR) /* not a folder: fsck's stray file */
                                r = nano_error_set(err, e, "cannot read refs/%s: %m", de->d_name);
                        continue;
                }
                while (r >= 0 && (errno = 0, ve = readdir(sd))) {
                        uint8_t id[32];
                        if (!nano_name_is_valid(ve->d_name))
                                continue;
                        int q = nano_ref_read(s, de->d_name, ve->d_name, id);
                        if (q == -EBADMSG)
                                malformed++;
                        if (q < 0) {
                                if (strict && q != -EBADMSG && q != -ENOENT)
                                        r = nano_error_set(err, q, "cannot read the ref of %s@%s: %m",
                                                           de->d_name, ve->d_name);
                                continue;
                        }
                        if (n == cap) {
                                size_t ncap = cap ? cap * 2 : 16;
                                NanoRelease *nl = reallocarray(list, ncap, sizeof *nl);
                                if (!nl) {
                                        r = nano_error_set(err, ENOMEM, "out of memory");
                                        break;
                                }
                                list = nl;
                                cap = ncap;
                        }
                        snprintf(list[n].name, sizeof list[n].name, "%.128s", de->d_name);
                        snprintf(list[n].version, sizeof list[n].version, "%.128s", ve->d_name);
                        memcpy(list[n].id, id, 32);
                        n++;
                }
                if (r >= 0 && strict && errno != 0)
                        r = nano_error_set(err, errno, "cannot read refs/%s: %m", de->d_name);
                closedir(sd);
        }
        if (r >= 0 && strict && errno != 0)
                r = nano_error_set(err, errno, "cannot list refs: %m");
        closedir(d);
        if (r < 0)
                return r;
        if (n > 0)
                qsort(list, n, sizeof *list, release_cmp);
        *ret = TAKE_PTR(list);
        *ret_n = n;
        if (ret_malformed)
                *ret_malformed = malformed;
        return 0;
}

int nano_store_list(NanoStore *s, NanoRelease **ret, size_t *ret_n, NanoError *err)
{
        return list_refs(s, false, ret, ret_n, NULL, err);
}

int nano_store_list_roots(NanoStore *s, NanoRelease **ret, size_t *ret_n, uint64_t *ret_malformed,
                          NanoError *err)
{
        return list_refs(s, true, ret, ret_n, ret_malformed, err);
}
