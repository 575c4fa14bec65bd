/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Garbage collection and space accounting. gc holds the store lock exclusively, so no import is
 * running: every temporary file is a leftover, and no object is about to be referenced. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "store.h"
#include "util.h"

typedef struct Reachable {
        DigestSet manifests; /* manifest files to keep: the roots' and their bases */
        DigestSet roots;     /* manifests whose objects were marked */
        DigestSet objects;
        uint64_t logical_bytes, unique_bytes, releases;
        uint64_t unreadable; /* roots whose manifest file is there but cannot be read */
        uint64_t unknown;    /* malformed refs and pins: roots whose release cannot be known */
} Reachable;

static int mark_release(NanoStore *s, const NanoRelease *rel, Reachable *m, NanoError *err)
{
        _cleanup_(nano_manifest_freep) NanoManifest *man = NULL;
        NanoManifestChain chain;
        int r, q;

        r = nano_store_open_manifest_chain(s, rel->id, &man, &chain);
        if (r == -ENOMEM)
                return nano_error_set(err, r, "out of memory");
        /* A packed manifest needs the files of its chain of bases (not the bases' objects): keep every
         * file the load read, also when it failed on the way, so that fsck reports the damage and
         * adding the missing release again repairs it rather than gc making it worse. */
        for (unsigned i = 0; i < chain.n; i++) {
                q = digest_set_add(&m->manifests, chain.ids[i]);
                if (q < 0)
                        return nano_error_set(err, q, "out of memory");
        }
        if (r < 0) {
                /* The objects of an unreadable manifest cannot be known: fsck reports it, and gc keeps
                 * every object meanwhile, so that restoring a missing base makes the releases packed
                 * against it whole again. A ref whose manifest file is gone (fsck --repair keeps it)
                 * needs nothing that adding the release again would not restore. */
                if (chain.failed > 0 || r != -ENOENT)
                        m->unreadable++;
                return 0;
        }
        r = digest_set_add(&m->roots, rel->id);
        if (r < 0)
                return nano_error_set(err, r, "out of memory");
        m->releases++;
        for (uint32_t i = 0, n = nano_manifest_count(man); i < n; i++) {
                NanoEntry e;
                nano_manifest_entry(man, i, &e);
                if (e.type != NANO_ENTRY_REGULAR)
                        continue;
                m->logical_bytes += e.size;
                r = digest_set_add(&m->objects, e.digest);
                if (r < 0)
                        return nano_error_set(err, r, "out of memory");
                if (r > 0)
                        m->unique_bytes += e.size;
        }
        return 0;
}

typedef struct MarkPin {
        NanoStore *s;
        Reachable *m;
        NanoError *err;
} MarkPin;

static int mark_pin(const char *pin, const uint8_t id[32], void *userdata)
{
        MarkPin *mp = userdata;
        NanoRelease rel = {};

        (void)pin;
        if (!id) {
                mp->m->unknown++;
                return 0;
        }
        /* Not `manifests`: a pinned release may be kept so far only as another one's base. */
        if (digest_set_contains(&mp->m->roots, id))
                return 0;
        memcpy(rel.id, id, 32);
        return mark_release(mp->s, &rel, mp->m, mp->err);
}

/* Roots: every ref, and every pin (the releases of existing instances). One that cannot be read
 * stops gc; a malformed one (what did it name?) makes it keep every object and manifest. */
static int mark(NanoStore *s, Reachable *m, NanoError *err)
{
        _cleanup_free_ NanoRelease *list = NULL;
        MarkPin mp = { s, m, err };
        uint64_t malformed = 0;
        size_t n;
        int r;

        r = nano_store_list_roots(s, &list, &n, &malformed, err);
        if (r < 0)
                return r;
        m->unknown += malformed;
        for (size_t i = 0; i < n; i++) {
                r = mark_release(s, &list[i], m, err);
                if (r < 0)
                        return r;
        }
        r = nano_store_pins_foreach(s, mark_pin, &mp);
        if (r < 0)
                return err && err->error ? r : nano_error_set(err, r, "cannot read the store's pins/: %m");
        return 0;
}

static void reachable_done(Reachable *m)
{
        digest_set_done(&m->manifests);
        digest_set_done(&m->roots);
        digest_set_done(&m->objects);
}

/* Delta objects need their base: the objects to keep are the reachable ones and the bases of those.
 * Finding the bases opens every reachable object's header, so it is done only when some object is
 * not reachable (gc with nothing to remove costs a listing). */
struct bases {
        const DigestSet *reachable;
        DigestSet bases;
        uint64_t garbage;    /* objects not reachable */
        uint64_t unreadable; /* reachable delta objects whose base cannot be read from their file */
        int error;
};

static int count_garbage(const uint8_t *digest, int dirfd, const char *dir, const char *file, void *userdata)
{
        struct bases *b = userdata;

        (void)dirfd;
        (void)dir;
        (void)file;
        if (digest && !digest_set_contains(b->reachable, digest))
                b->garbage++;
        return 0;
}

/* An fd on dirfd/file if it is a delta container (by its magic alone), else -1. */
static int open_if_delta(int dirfd, const char *file)
{
        char magic[NANO_BLOB_HEADER_SIZE];
        int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd >= 0 && (pread_full(fd, magic, sizeof magic, 0) != (ssize_t)sizeof magic ||
                        memcmp(magic, NANO_BLOB_MAGIC_DELTA, sizeof magic) != 0))
                fd = safe_close(fd);
        return fd < 0 ? -1 : fd;
}

static int mark_base(const uint8_t *digest, int dirfd, const char *dir, const char *file, void *userdata)
{
        _cleanup_(nano_blob_freep) NanoBlob *blob = NULL;
        struct bases *b = userdata;
        uint8_t id[32];
        int fd, r;

        (void)dir;
        if (!digest || !digest_set_contains(b->reachable, digest))
                return 0;
        fd = open_if_delta(dirfd, file);
        if (fd < 0)
                return 0; /* gone, or plain: nothing of it to keep */
        /* The base id is taken from a container that passes every check of its table and trailer. */
        r = nano_blob_open_fd(fd, &blob);
        if (r < 0) {
                safe_close(fd);
                if (r == -ENOMEM)
                        return r;
                b->unreadable++;
                return 0;
        }
        (void)nano_blob_is_delta(blob, id);
        r = digest_set_add(&b->bases, id);
        return r < 0 ? r : 0;
}

struct sweep {
        const DigestSet *keep, *keep_too;
        bool deltas_only; /* remove only delta containers */
        uint64_t files, bytes;
        int error;
};

static int sweep_one(const uint8_t *digest, int dirfd, const char *dir, const char *file, void *userdata)
{
        struct sweep *sw = userdata;
        struct stat st;

        if (digest && (digest_set_contains(sw->keep, digest) ||
                       (sw->keep_too && digest_set_contains(sw->keep_too, digest))))
                return 0;
        if (!digest)
                /* Not a name the store writes: leave it to the user (fsck reports it). */
                return 0;
        if (sw->deltas_only) {
                int fd = open_if_delta(dirfd, file);
                if (fd < 0)
                        return 0;
                safe_close(fd);
        }
        if (fstatat(dirfd, file, &st, AT_SYMLINK_NOFOLLOW) < 0 || unlinkat(dirfd, file, 0) < 0) {
                if (errno != ENOENT && sw->error == 0)
                        sw->error = -errno;
                return 0;
        }
        sw->files++;
        sw->bytes += (uint64_t)st.st_size;
        (void)dir;
        return 0;
}

int nano_store_clean_tmp(NanoStore *s, uint64_t *ret_files, uint64_t *ret_bytes)
{
        _cleanup_close_ int fd = openat(s->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct dirent *de;
        DIR *d;

        if (fd < 0 || !(d = fdopendir(fd)))
                return -errno;
        fd = -EBADF;
        while ((de = readdir(d))) {
                struct stat st;
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (fstatat(s->tmp_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                    unlinkat(s->tmp_fd, de->d_name, 0) == 0) {
                        (*ret_files)++;
                        *ret_bytes += (uint64_t)st.st_size;
                }
        }
        closedir(d);
        return 0;
}

/* rm leaves a name's folder when it removes its last version (a concurrent add may be using it);
 * gc runs alone, so it can remove the empty ones. */
static void remove_empty_ref_dirs(NanoStore *s)
{
        _cleanup_close_ int fd = openat(s->refs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct dirent *de;
        DIR *d;

        if (fd < 0 || !(d = fdopendir(fd)))
                return;
        fd = -EBADF;
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        (void)unlinkat(s->refs_fd, de->d_name, AT_REMOVEDIR); /* fails unless empty */
        closedir(d);
}

int nano_store_gc(NanoStore *s, NanoGcResult *ret, NanoError *err)
{
        Reachable m = { 0 };
        NanoGcResult res = { 0 };
        struct bases bases = { .reachable = &m.objects };
        struct sweep sw;
        int r;

        r = nano_store_lock(s, LOCK_EX);
        if (r < 0)
                return nano_error_set(err, r, "cannot lock the store: %m");
        r = mark(s, &m, err);
        if (r < 0)
                goto out;

        r = nano_fanout_foreach(s->objects_fd, count_garbage, &bases);
        if (r >= 0 && bases.garbage > 0 && m.unreadable == 0)
                r = nano_fanout_foreach(s->objects_fd, mark_base, &bases);
        if (r < 0) {
                r = nano_error_set(err, r, "cannot read the store's objects: %m");
                goto out;
        }
        /* A delta object whose header cannot be read hides its base: keep every object, as for an
         * unreadable manifest, and let fsck report it. */
        res.unreadable = m.unreadable;
        res.unreadable_objects = bases.unreadable;
        res.unknown_roots = m.unknown;
        /* Unused deltas go first, then the rest: a gc killed between the two passes leaves no delta
         * without its base (fsck would report it). */
        for (int pass = 0; pass < 2 && m.unreadable == 0 && m.unknown == 0 && bases.unreadable == 0 &&
                            bases.garbage > 0;
             pass++) {
                sw = (struct sweep){ .keep = &m.objects, .keep_too = &bases.bases, .deltas_only = pass == 0 };
                r = nano_fanout_foreach(s->objects_fd, sweep_one, &sw);
                if (r >= 0)
                        r = sw.error;
                if (r < 0) {
                        r = nano_error_set(err, r, "cannot remove unused objects: %m");
                        goto out;
                }
                res.objects += sw.files;
                res.bytes += sw.bytes;
        }

        sw = (struct sweep){ .keep = &m.manifests };
        r = m.unknown > 0 ? 0 : nano_fanout_foreach(s->manifests_fd, sweep_one, &sw);
        if (r >= 0)
                r = sw.error;
        if (r < 0) {
                r = nano_error_set(err, r, "cannot remove unused manifests: %m");
                goto out;
        }
        res.manifests = sw.files;
        res.bytes += sw.bytes;

        r = nano_store_clean_tmp(s, &res.temporaries, &res.bytes);
        if (r < 0) {
                r = nano_error_set(err, r, "cannot clean the store's tmp/: %m");
                goto out;
        }
        remove_empty_ref_dirs(s);
        *ret = res;
        r = 0;
out:
        nano_store_unlock(s);
        reachable_done(&m);
        digest_set_done(&bases.bases);
        return r;
}

struct count {
        uint64_t files, bytes, blocks;
};

static int count_one(const uint8_t *digest, int dirfd, const char *dir, const char *file, void *userdata)
{
        struct count *c = userdata;
        struct stat st;

        (void)digest;
        (void)dir;
        if (fstatat(dirfd, file, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
                c->files++;
                c->bytes += (uint64_t)st.st_size;
                c->blocks += (uint64_t)st.st_blocks * 512;
        }
        return 0;
}

int nano_store_du(NanoStore *s, NanoDuResult *ret, NanoError *err)
{
        Reachable m = { 0 };
        struct count objects = { 0 }, manifests = { 0 };
        int r;

        r = mark(s, &m, err);
        if (r >= 0)
                r = nano_fanout_foreach(s->objects_fd, count_one, &objects);
        if (r >= 0)
                r = nano_fanout_foreach(s->manifests_fd, count_one, &manifests);
        if (r < 0) {
                reachable_done(&m);
                return err && err->error ? -err->error : nano_error_set(err, r, "cannot read the store: %m");
        }
        *ret = (NanoDuResult){
                .releases = m.releases,
                .logical_bytes = m.logical_bytes,
                .unique_bytes = m.unique_bytes,
                .stored_bytes = objects.bytes + manifests.bytes,
                .disk_bytes = objects.blocks + manifests.blocks,
                .objects = objects.files,
                .manifests = manifests.files,
        };
        reachable_done(&m);
        return 0;
}
