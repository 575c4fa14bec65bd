/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <xxhash.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "store.h"
#include "util.h"

bool nano_name_is_valid(const char *s)
{
        size_t n = 0;

        if (!s)
                return false;
        for (const char *p = s; *p; p++, n++) {
                char c = *p;
                bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
                if (!alnum && (n == 0 || !strchr("._+-", c)))
                        return false;
        }
        return n >= 1 && n <= NANO_RELEASE_NAME_MAX;
}

bool nano_name_is_reserved(const char *s)
{
        return s && streq(s, "by-id");
}

int nano_id_parse(const char *s, uint8_t ret[32])
{
        uint8_t d[32];

        if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != 7 + 64)
                return -EINVAL;
        if (hex_decode(s + 7, d, 32) < 0)
                return -EINVAL;
        memcpy(ret, d, 32);
        return 0;
}

char *nano_id_format(const uint8_t id[32], char buf[NANO_ID_STRING_SIZE])
{
        memcpy(buf, "sha256:", 7);
        hex_encode(id, 32, buf + 7);
        return buf;
}

void nano_sha256(const void *data, size_t len, uint8_t ret[32])
{
        unsigned n = 32;

        EVP_Digest(data, len, ret, &n, EVP_sha256(), NULL);
}

void nano_fanout_path(const uint8_t digest[32], char buf[NANO_FANOUT_PATH_SIZE])
{
        char hex[65];

        hex_encode(digest, 32, hex);
        buf[0] = hex[0];
        buf[1] = hex[1];
        buf[2] = '/';
        memcpy(buf + 3, hex + 2, 63);
}

int nano_fanout_parse(const char *dir, const char *file, uint8_t ret[32])
{
        char hex[65];

        if (strlen(dir) != 2 || strlen(file) != 62)
                return -EINVAL;
        memcpy(hex, dir, 2);
        memcpy(hex + 2, file, 63);
        return hex_decode(hex, ret, 32);
}

static int open_home(const char *home, char **ret)
{
        const char *e;
        char *p = NULL;

        if (home)
                p = strdup(home);
        else if ((e = getenv("NANO_HOME")) && *e)
                p = strdup(e);
        else if ((e = getenv("XDG_DATA_HOME")) && *e) {
                if (asprintf(&p, "%s/nano", e) < 0)
                        p = NULL;
        } else if ((e = getenv("HOME")) && *e) {
                if (asprintf(&p, "%s/.local/share/nano", e) < 0)
                        p = NULL;
        } else
                return -ENOENT;
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

/* mkdir -p for an absolute or relative path (the home may not exist yet). */
static int mkdir_parents(const char *path, mode_t mode)
{
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int open_subdir(int dirfd, const char *name, int *ret)
{
        int r = mkdirat_ok(dirfd, name, 0755);
        if (r < 0)
                return r;
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        *ret = fd;
        return 0;
}

NanoStore *nano_store_unref(NanoStore *s)
{
        if (!s || --s->n_ref > 0)
                return NULL;
        safe_close(s->store_fd);
        safe_close(s->objects_fd);
        safe_close(s->manifests_fd);
        safe_close(s->refs_fd);
        safe_close(s->tmp_fd);
        safe_close(s->lock_fd);
        free(s->home);
        free(s);
        return NULL;
}

static inline void nano_store_unrefp(NanoStore **s)
{
        nano_store_unref(*s);
}

int nano_store_open(const char *home, NanoStore **ret, NanoError *err)
{
        _cleanup_(nano_store_unrefp) NanoStore *s = NULL;
        _cleanup_free_ char *store_path = NULL;
        int r;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->n_ref = 1;
        s->store_fd = s->objects_fd = s->manifests_fd = s->refs_fd = s->tmp_fd = s->lock_fd = -EBADF;
        s->anon_files = -1;

        r = open_home(home, &s->home);
        if (r < 0)
                return nano_error_set(err, r, "cannot find the nano home: set NANO_HOME or HOME");
        if (asprintf(&store_path, "%s/store", s->home) < 0)
                return -ENOMEM;
        r = mkdir_parents(store_path, 0755);
        if (r < 0)
                return nano_error_set(err, r, "cannot create the store '%s': %m", store_path);
        s->store_fd = open(store_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->store_fd < 0)
                return nano_error_set(err, errno, "cannot open the store '%s': %m", store_path);

        struct {
                const char *name;
                int *fd;
        } dirs[] = {
                { "objects", &s->objects_fd },
                { "manifests", &s->manifests_fd },
                { "refs", &s->refs_fd },
                { "tmp", &s->tmp_fd },
        };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                r = open_subdir(s->store_fd, dirs[i].name, dirs[i].fd);
                if (r < 0)
                        return nano_error_set(err, r, "cannot open '%s/%s': %m", store_path, dirs[i].name);
        }
        s->lock_fd = openat(s->store_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (s->lock_fd < 0)
                return nano_error_set(err, errno, "cannot open '%s/lock': %m", store_path);

        *ret = TAKE_PTR(s);
        return 0;
}

const char *nano_store_home(const NanoStore *s)
{
        return s->home;
}

int nano_store_lock(NanoStore *s, int operation)
{
        while (flock(s->lock_fd, operation) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

void nano_store_unlock(NanoStore *s)
{
        (void)flock(s->lock_fd, LOCK_UN);
}

int nano_store_tmpfile(NanoStore *s, char name[64])
{
        static atomic_uint counter;

        for (unsigned attempt = 0; attempt < 100; attempt++) {
                snprintf(name, 64, "t%ld.%u.%llx", (long)getpid(), atomic_fetch_add(&counter, 1),
                         (unsigned long long)now_ns());
                int fd = openat(s->tmp_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
                if (fd >= 0)
                        return fd;
                if (errno != EEXIST)
                        return -errno;
        }
        return -EEXIST;
}

static int rename_noreplace(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
        if (renameat2(olddirfd, oldpath, newdirfd, newpath, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS)
                return -errno;
        /* Filesystems without RENAME_NOREPLACE: link() never replaces either. */
        if (linkat(olddirfd, oldpath, newdirfd, newpath, 0) < 0)
                return -errno;
        (void)unlinkat(olddirfd, oldpath, 0);
        return 0;
}

/* Copies all of src (from offset 0) to dst: the slow way out of an anonymous file. */
static int copy_file(int src, int dst)
{
        uint8_t buf[65536];
        off_t off = 0;

        for (;;) {
                ssize_t n = pread_full(src, buf, sizeof buf, off);
                if (n < 0)
                        return (int)n;
                if (n == 0)
                        return 0;
                int r = write_all(dst, buf, (size_t)n);
                if (r < 0)
                        return r;
                off += n;
        }
}

/* True when fd is an object file with an intact trailer for `size` content bytes: the cheap check
 * that tells a damaged file (empty after a power cut, truncated) from a sound one. */
static bool object_fd_sound(int fd, uint64_t size)
{
        uint8_t trailer[NANO_BLOB_TRAILER_SIZE];
        struct stat st;

        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < (off_t)NANO_BLOB_MIN_SIZE)
                return false;
        if (pread_full(fd, trailer, sizeof trailer, st.st_size - (off_t)sizeof trailer) != (ssize_t)sizeof trailer)
                return false;
        return memcmp(trailer + 32, NANO_BLOB_END_MAGIC, 8) == 0 && le64_read(trailer) == size &&
               le64_read(trailer + 24) == XXH3_64bits(trailer, 24);
}

static bool object_sound_at(int dirfd, const char *path, uint64_t size)
{
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);

        return object_fd_sound(fd, size);
}

int nano_store_publish(NanoStore *s, const char *name, int dirfd, const char *path, int64_t object_size)
{
        int r = rename_noreplace(s->tmp_fd, name, dirfd, path);

        if (r == -ENOENT && strchr(path, '/')) {
                char dir[3] = { path[0], path[1], 0 };
                r = mkdirat_ok(dirfd, dir, 0755);
                if (r >= 0)
                        r = rename_noreplace(s->tmp_fd, name, dirfd, path);
        }
        if (r == -EEXIST) {
                /* A damaged object (a power cut can leave an unsynced rename empty; a disk error can
                 * truncate) is replaced by the new, complete file. */
                if (object_size >= 0 && !object_sound_at(dirfd, path, (uint64_t)object_size) &&
                    renameat(s->tmp_fd, name, dirfd, path) == 0)
                        return 1;
                (void)unlinkat(s->tmp_fd, name, 0);
                return 0;
        }
        if (r < 0) {
                (void)unlinkat(s->tmp_fd, name, 0);
                return r;
        }
        return 1;
}

int nano_store_objfile(NanoStore *s, char name[64])
{
        int fd;

        if (__atomic_load_n(&s->anon_files, __ATOMIC_RELAXED) != 0) {
                fd = openat(s->tmp_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0444);
                if (fd >= 0) {
                        name[0] = '\0';
                        return fd;
                }
                /* Filesystems without O_TMPFILE say so in several ways; fall back to names. */
                if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT)
                        return -errno;
                __atomic_store_n(&s->anon_files, 0, __ATOMIC_RELAXED);
        }
        return nano_store_tmpfile(s, name);
}

/* linkat() of an anonymous file: with AT_EMPTY_PATH where the kernel lets an unprivileged caller
 * link an O_TMPFILE it opened (Linux 6.10 and later), else through its /proc/self/fd path, a walk
 * through procfs for every object. */
static int link_anon(int fd, int dirfd, const char *path)
{
        static int empty_path = -1; /* AT_EMPTY_PATH works: 1, does not: 0, not known yet: -1 */
        int known = __atomic_load_n(&empty_path, __ATOMIC_RELAXED);
        char proc[32];

        if (known != 0) {
                if (linkat(fd, "", dirfd, path, AT_EMPTY_PATH) == 0) {
                        __atomic_store_n(&empty_path, 1, __ATOMIC_RELAXED);
                        return 0;
                }
                /* Where it is refused the error is ENOENT, which is also that of a missing directory. */
                if (known == 1 || (errno != ENOENT && errno != EPERM && errno != EINVAL))
                        return -errno;
        }
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, dirfd, path, AT_SYMLINK_FOLLOW) < 0)
                return -errno;
        __atomic_store_n(&empty_path, 0, __ATOMIC_RELAXED);
        return 0;
}

int nano_store_publish_fd(NanoStore *s, int fd, const char *name, int dirfd, const char *path,
                          int64_t object_size)
{
        char tmp[64];
        int r;

        if (name[0])
                return nano_store_publish(s, name, dirfd, path, object_size);

        r = link_anon(fd, dirfd, path);
        if (r == -ENOENT && strchr(path, '/')) {
                char dir[3] = { path[0], path[1], 0 };
                r = mkdirat_ok(dirfd, dir, 0755);
                if (r >= 0)
                        r = link_anon(fd, dirfd, path);
        }
        if (r == -EEXIST) {
                /* As in nano_store_publish(): a damaged object is replaced, through a name in tmp/
                 * since only rename() replaces atomically. */
                if (object_size < 0 || object_sound_at(dirfd, path, (uint64_t)object_size))
                        return 0;
                snprintf(tmp, sizeof tmp, "r%ld.%llx", (long)getpid(), (unsigned long long)now_ns());
                r = link_anon(fd, s->tmp_fd, tmp);
                if (r < 0)
                        return r;
                return nano_store_publish(s, tmp, dirfd, path, object_size);
        }
        if (r == -ENOENT) {
                /* No /proc here (a bare chroot, a namespace without it): use names from now on. */
                __atomic_store_n(&s->anon_files, 0, __ATOMIC_RELAXED);
                r = nano_store_tmpfile(s, tmp);
                if (r < 0)
                        return r;
                int nfd = r;
                r = copy_file(fd, nfd);
                safe_close(nfd);
                if (r < 0) {
                        (void)unlinkat(s->tmp_fd, tmp, 0);
                        return r;
                }
                return nano_store_publish(s, tmp, dirfd, path, object_size);
        }
        return r < 0 ? r : 1;
}

int nano_store_open_object(NanoStore *s, const uint8_t digest[32])
{
        char path[NANO_FANOUT_PATH_SIZE];
        int fd;

        nano_fanout_path(digest, path);
        fd = openat(s->objects_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        return fd < 0 ? -errno : fd;
}

bool nano_store_has_object(NanoStore *s, const uint8_t digest[32], uint64_t size)
{
        _cleanup_close_ int fd = nano_store_open_object(s, digest);

        /* Cheap checks only, as this runs for every file of an import: the object is there, and its
         * trailer is intact and describes content of this size. fsck verifies the rest. */
        return object_fd_sound(fd, size);
}

int nano_store_open_plain_blob(NanoStore *s, const uint8_t digest[32], NanoBlob **ret)
{
        int fd = nano_store_open_object(s, digest), r;

        if (fd < 0)
                return fd;
        r = nano_blob_open_fd(fd, ret);
        if (r < 0)
                safe_close(fd);
        return r;
}

int nano_store_blob_set_base(NanoStore *s, NanoBlob *b)
{
        NanoBlob *base = NULL;
        uint8_t id[32];
        int r;

        if (!nano_blob_is_delta(b, id))
                return 0;
        r = nano_store_open_plain_blob(s, id, &base);
        if (r < 0)
                return r == -ENOENT ? -ENOLINK : r;
        r = nano_blob_set_base(b, base);
        if (r < 0)
                nano_blob_free(base);
        return r;
}

int nano_store_open_blob_fd(NanoStore *s, int fd, NanoBlob **ret)
{
        NanoBlob *b = NULL;
        int r;

        r = nano_blob_open_fd(fd, &b);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        r = nano_store_blob_set_base(s, b);
        if (r < 0) {
                nano_blob_free(b);
                return r;
        }
        *ret = b;
        return 0;
}

int nano_store_open_blob(NanoStore *s, const uint8_t digest[32], NanoBlob **ret)
{
        int fd = nano_store_open_object(s, digest);

        return fd < 0 ? fd : nano_store_open_blob_fd(s, fd, ret);
}

int nano_fanout_foreach(int top_fd,
                        int (*cb)(const uint8_t *digest, int subdir_fd, const char *dir, const char *file,
                                  void *userdata),
                        void *userdata)
{
        _cleanup_close_ int fd = fcntl(top_fd, F_DUPFD_CLOEXEC, 3);
        DIR *d;
        struct dirent *de;
        int r = 0;

        if (fd < 0)
                return -errno;
        d = fdopendir(TAKE_FD(fd));
        if (!d)
                return -errno;
        rewinddir(d);
        while (r >= 0 && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                int sub = openat(top_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (sub < 0) {
                        r = cb(NULL, top_fd, ".", de->d_name, userdata);
                        continue;
                }
                DIR *sd = fdopendir(sub);
                if (!sd) {
                        r = -errno;
                        safe_close(sub);
                        break;
                }
                struct dirent *fe;
                while (r >= 0 && (fe = readdir(sd))) {
                        uint8_t digest[32];
                        if (streq(fe->d_name, ".") || streq(fe->d_name, ".."))
                                continue;
                        bool ok = nano_fanout_parse(de->d_name, fe->d_name, digest) >= 0;
                        r = cb(ok ? digest : NULL, dirfd(sd), de->d_name, fe->d_name, userdata);
                }
                closedir(sd);
        }
        closedir(d);
        return r < 0 ? r : 0;
}

/* ---- DigestSet: open addressing on the digest's first 8 bytes (already uniformly distributed). */

static size_t slot_of(const uint8_t d[32], size_t cap)
{
        return (size_t)le64_read(d) & (cap - 1);
}

static int digest_set_grow(DigestSet *s)
{
        size_t cap = s->cap ? s->cap * 2 : 1024;
        uint8_t(*slots)[32] = calloc(cap, 32);
        uint8_t *used = calloc(cap, 1);

        if (!slots || !used) {
                free(slots);
                free(used);
                return -ENOMEM;
        }
        for (size_t i = 0; i < s->cap; i++) {
                if (!s->used[i])
                        continue;
                size_t j = slot_of(s->slots[i], cap);
                while (used[j])
                        j = (j + 1) & (cap - 1);
                memcpy(slots[j], s->slots[i], 32);
                used[j] = 1;
        }
        free(s->slots);
        free(s->used);
        s->slots = slots;
        s->used = used;
        s->cap = cap;
        return 0;
}

int digest_set_add(DigestSet *s, const uint8_t d[32])
{
        if ((s->n + 1) * 4 > s->cap * 3) {
                int r = digest_set_grow(s);
                if (r < 0)
                        return r;
        }
        size_t i = slot_of(d, s->cap);
        while (s->used[i]) {
                if (memcmp(s->slots[i], d, 32) == 0)
                        return 0;
                i = (i + 1) & (s->cap - 1);
        }
        memcpy(s->slots[i], d, 32);
        s->used[i] = 1;
        s->n++;
        return 1;
}

bool digest_set_contains(const DigestSet *s, const uint8_t d[32])
{
        if (s->cap == 0)
                return false;
        for (size_t i = slot_of(d, s->cap); s->used[i]; i = (i + 1) & (s->cap - 1))
                if (memcmp(s->slots[i], d, 32) == 0)
                        return true;
        return false;
}

void digest_set_done(DigestSet *s)
{
        free(s->slots);
        free(s->used);
        *s = (DigestSet){ 0 };
}
