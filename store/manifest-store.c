/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Manifests in the store: opening them (a canonical file is mapped, a packed one decoded through its
 * bases) and writing them (packed against another version of the same release where that pays).
 * doc/store.md, "Packed manifests", says why. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "store.h"
#include "util.h"

/* A stored manifest is at most a canonical one, or a packed header and a zstd frame of one (zstd
 * expands incompressible input by less than 1/128). */
#define STORED_SIZE_MAX                                                                                     \
        (NANO_MANIFEST_PACK_HEADER_SIZE + NANO_MANIFEST_SIZE_MAX + NANO_MANIFEST_SIZE_MAX / 128 + 4096)

/* Packing must save at least this much to pay for a decode at every open: one block of most
 * filesystems. Below that the canonical file is kept, and mapped as it is. */
#define PACK_MIN_SAVING 4096u

/* Versions of a release tried as a base before giving up on one (each try decodes a manifest). */
#define BASE_TRIES 4u

static int load_file(void *userdata, const uint8_t id[32], void **ret_map, size_t *ret_size)
{
        NanoStore *s = userdata;
        char path[NANO_FANOUT_PATH_SIZE];

        nano_fanout_path(id, path);
        return nano_manifest_map_at(s->manifests_fd, path, STORED_SIZE_MAX, ret_map, ret_size);
}

int nano_store_open_manifest_chain(NanoStore *s, const uint8_t id[32], NanoManifest **ret, NanoManifestChain *chain)
{
        return nano_manifest_load(load_file, s, id, ret, chain);
}

int nano_store_open_manifest_by_checksum(NanoStore *s, const uint8_t id[32], NanoManifest **ret)
{
        return nano_manifest_load_flags(load_file, s, id, NANO_MANIFEST_LOAD_BY_CHECKSUM, ret, NULL);
}

int nano_store_open_manifest(NanoStore *s, const uint8_t id[32], NanoManifest **ret)
{
        /* A manifest is small next to its tree, and a flipped byte in it would change modes or names
         * silently: it is checked against its id every time it is opened, its bases too. */
        return nano_store_open_manifest_chain(s, id, ret, NULL);
}

typedef struct Candidate {
        char version[NANO_RELEASE_NAME_MAX + 1];
        struct timespec mtime;
} Candidate;

/* Newest ref first; the higher version first among refs written within the same tick. */
static int candidate_cmp(const void *a, const void *b)
{
        const Candidate *x = a, *y = b;

        if (x->mtime.tv_sec != y->mtime.tv_sec)
                return x->mtime.tv_sec < y->mtime.tv_sec ? 1 : -1;
        if (x->mtime.tv_nsec != y->mtime.tv_nsec)
                return x->mtime.tv_nsec < y->mtime.tv_nsec ? 1 : -1;
        return -strverscmp(x->version, y->version);
}

/* The versions of release `name` other than `version`, newest first. A ref's mtime is when it was
 * added (refs are written once). */
static int other_versions(NanoStore *s, const char *name, const char *version, Candidate **ret, size_t *ret_n)
{
        _cleanup_free_ Candidate *list = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        DIR *d;
        int fd;

        *ret_n = 0;
        fd = openat(s->refs_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        while ((de = readdir(d))) {
                struct stat st;

                if (!nano_name_is_valid(de->d_name) || streq(de->d_name, version))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 16;
                        Candidate *nl = reallocarray(list, ncap, sizeof *nl);
                        if (!nl) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        list = nl;
                        cap = ncap;
                }
                snprintf(list[n].version, sizeof list[n].version, "%.128s", de->d_name);
                list[n].mtime = st.st_mtim;
                n++;
        }
        closedir(d);
        if (n > 0)
                qsort(list, n, sizeof *list, candidate_cmp);
        *ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}

/* Opens manifest id as ret's, with the depth of its chain of bases. */
static int open_as_previous(NanoStore *s, const uint8_t id[32], NanoPrevious *ret)
{
        NanoManifestChain chain;
        int r = nano_store_open_manifest_chain(s, id, &ret->manifest, &chain);

        if (r < 0)
                return r;
        memcpy(ret->id, id, 32);
        ret->depth = chain.n - 1;
        return 1;
}

/* The previous version of name@version: the release itself if it is there (added again), else its
 * most recently added other version. Versions are added in the order they are made, so the last
 * one added is usually the nearest to the new one (it is the one the new one replaces), and finding
 * it costs one readdir; measuring every version's similarity would cost a decode of each. A version
 * whose manifest cannot be read (missing, damaged, its own base gone) is passed over, among the
 * BASE_TRIES newest: a base must decode now, which also keeps a manifest from becoming the base of
 * one of its own bases. */
int nano_store_open_previous(NanoStore *s, const char *name, const char *version, NanoPrevious *ret)
{
        _cleanup_free_ Candidate *list = NULL;
        uint8_t id[32];
        size_t n;
        int r;

        *ret = (NanoPrevious){};
        if (nano_ref_read(s, name, version, id) >= 0) {
                r = open_as_previous(s, id, ret);
                if (r != -ENOMEM && r < 0)
                        r = 0;
                if (r != 0)
                        return r;
        }
        r = other_versions(s, name, version, &list, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && i < BASE_TRIES; i++) {
                if (nano_ref_read(s, name, list[i].version, id) < 0)
                        continue;
                r = open_as_previous(s, id, ret);
                if (r == -ENOMEM || r > 0)
                        return r;
        }
        return 0;
}

void nano_previous_done(NanoPrevious *p)
{
        p->manifest = nano_manifest_free(p->manifest);
}

int nano_store_put_manifest(NanoStore *s, const void *data, size_t size, const uint8_t id[32],
                            const NanoPrevious *prev, uint64_t *ret_stored)
{
        _cleanup_(nano_manifest_freep) NanoManifest *old = NULL;
        _cleanup_free_ uint8_t *packed = NULL;
        char tmp[64], path[NANO_FANOUT_PATH_SIZE];
        _cleanup_close_ int fd = -EBADF;
        const void *out = data, *base_data = NULL;
        size_t out_size = size, packed_size = 0, base_size = 0;
        static const uint8_t no_base[32];
        const uint8_t *base_id = no_base;
        unsigned base_depth = 0;
        bool replace;
        int r;

        /* The same tree added again, or under another version: a sound copy is all it needs. */
        r = nano_store_open_manifest(s, id, &old);
        if (r >= 0) {
                *ret_stored = 0;
                return 0;
        }
        if (r == -ENOMEM)
                return r;
        /* A copy that is there but cannot be read (the empty file of an unsynced rename after a power
         * cut, damage, a base gone missing) is replaced, and by one without a base: a manifest written
         * again may be the base of others, and without a base of its own it can neither lengthen their
         * chains nor close a cycle with them. */
        replace = r != -ENOENT;

        /* The base: the previous version's manifest. When its chain of bases is already at the depth
         * limit, the new manifest starts a new chain (no base) rather than taking an older, less
         * similar base: so a release's chain restarts every NANO_MANIFEST_PACK_DEPTH_MAX + 1
         * versions. */
        if (!replace && prev && prev->manifest && memcmp(prev->id, id, 32) != 0 &&
            prev->depth < NANO_MANIFEST_PACK_DEPTH_MAX) {
                base_data = nano_manifest_data(prev->manifest, &base_size);
                if ((uint64_t)base_size + size > (UINT64_C(1) << NANO_MANIFEST_PACK_WINDOW_LOG_MAX)) {
                        base_data = NULL;
                        base_size = 0;
                } else {
                        base_id = prev->id;
                        base_depth = prev->depth;
                }
        }
        r = nano_manifest_pack(data, size, base_data, base_size, base_id, base_depth, NANO_MANIFEST_PACK_LEVEL,
                               &packed, &packed_size);
        if (r == -ENOMEM)
                return r;
        if (r >= 0 && packed_size + PACK_MIN_SAVING <= size) {
                out = packed;
                out_size = packed_size;
        }

        fd = nano_store_tmpfile(s, tmp);
        if (fd < 0)
                return fd;
        r = write_all(fd, out, out_size);
        if (r < 0) {
                (void)unlinkat(s->tmp_fd, tmp, 0);
                return r;
        }
        nano_fanout_path(id, path);
        if (replace) {
                /* Readers that mapped the old file keep it; new ones get the new one. */
                if (renameat(s->tmp_fd, tmp, s->manifests_fd, path) < 0) {
                        r = -errno;
                        (void)unlinkat(s->tmp_fd, tmp, 0);
                        return r;
                }
                r = 1;
        } else {
                /* Never replaces: a concurrent import that stored the same id first stored the same
                 * canonical bytes, perhaps packed against another base, which is as good. */
                r = nano_store_publish(s, tmp, s->manifests_fd, path, -1);
                if (r < 0)
                        return r;
        }
        *ret_stored = r > 0 ? out_size : 0;
        return r;
}
