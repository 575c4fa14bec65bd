/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* fsck: verifies the whole store. It holds the store lock exclusively, so no import is running and
 * every file of tmp/ is a leftover of an interrupted write. */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "store.h"
#include "util.h"

typedef struct Fsck {
        NanoStore *store;
        bool repair;
        void (*cb)(const NanoProblem *p, void *userdata);
        void *userdata;
        NanoFsckResult res;
        DigestSet good_manifests, good_objects, bad_objects;
        DigestSet missing_bases; /* reported once each */
        DigestSet good_bases, bad_bases; /* objects verified as the base of a delta object */
        DigestSet roots;                 /* releases checked (a ref and a pin may name the same) */
        DigestSet delta_bases;           /* sound, but deltas themselves (and not stored whole) */
        EVP_MD_CTX *sha;
        uint8_t *chunk;
        int error;
        NanoError *err;
} Fsck;

static void report(Fsck *f, NanoProblemKind kind, const char *file, const char *release, const char *path,
                   const char *detail, bool repaired)
{
        NanoProblem p = { kind, file, release, path, detail, repaired };

        f->res.problems++;
        if (repaired)
                f->res.repaired++;
        if (f->cb)
                f->cb(&p, f->userdata);
}

static bool remove_bad(Fsck *f, int dirfd, const char *file)
{
        return f->repair && unlinkat(dirfd, file, 0) == 0;
}

static void manifest_where(const uint8_t id[32], char buf[NANO_FANOUT_PATH_SIZE + 10])
{
        memcpy(buf, "manifests/", 10);
        nano_fanout_path(id, buf + 10);
}

static int check_manifest(const uint8_t *digest, int dirfd, const char *dir, const char *file, void *userdata)
{
        Fsck *f = userdata;
        NanoManifest *m = NULL;
        NanoManifestChain chain;
        char where[128];
        int r;

        snprintf(where, sizeof where, "manifests/%s/%s", dir, file);
        if (!digest) {
                report(f, NANO_PROBLEM_STRAY_FILE, where, NULL, NULL, "not a name the store writes", false);
                return 0;
        }
        f->res.manifests++;
        /* Canonical or packed, the same load as every reader's: sha256, structure, and for a packed
         * manifest its frame and its whole chain of bases, each checked against its id. */
        r = nano_store_open_manifest_chain(f->store, digest, &m, &chain);
        if (r == -ENOMEM)
                return r;
        if (r >= 0) {
                nano_manifest_free(m);
                return digest_set_add(&f->good_manifests, digest) < 0 ? -ENOMEM : 0;
        }
        if (chain.failed == 0) {
                report(f, NANO_PROBLEM_CORRUPT_MANIFEST, where, NULL, NULL, chain.detail ?: "unreadable",
                       remove_bad(f, dirfd, file));
                return 0;
        }
        /* This file is sound as far as can be told, but a base below it is missing or corrupt. The
         * file stays (adding the base's release again makes it readable, and --repair never removes
         * a base that others need unless it is corrupt itself); a corrupt base is reported where it is
         * checked, a missing one here, once; the releases that need it name it (check_release). */
        if (chain.error == -ENOENT &&
            digest_set_add(&f->missing_bases, chain.ids[chain.failed]) > 0) {
                char base_where[NANO_FANOUT_PATH_SIZE + 10], detail[256];
                manifest_where(chain.ids[chain.failed], base_where);
                snprintf(detail, sizeof detail, "missing: it is a base of %s", where);
                report(f, NANO_PROBLEM_MISSING_MANIFEST, base_where, NULL, NULL, detail, false);
        }
        return 0;
}

/* Decompresses every chunk of b (each checks its own checksum) and hashes the whole content. */
static int verify_content(Fsck *f, NanoBlob *b, const uint8_t digest[32], const char **ret_detail)
{
        uint8_t got[32];
        unsigned n = 32;

        EVP_DigestInit_ex(f->sha, EVP_sha256(), NULL);
        for (uint64_t i = 0; i < nano_blob_n_chunks(b); i++) {
                ssize_t len = nano_blob_read_chunk(b, i, f->chunk);
                if (len < 0) {
                        *ret_detail = len == -EBADMSG ? "a chunk fails its checksum" : "unreadable";
                        return (int)len;
                }
                EVP_DigestUpdate(f->sha, f->chunk, (size_t)len);
        }
        EVP_DigestFinal_ex(f->sha, got, &n);
        if (memcmp(got, digest, 32) != 0) {
                *ret_detail = "content does not match its sha256";
                return -EBADMSG;
        }
        return 0;
}

/* Stores base, a sound object that is a delta itself, whole in place: a delta of it reads only with
 * a plain base. The new file is checked against the object's id before it replaces the old one. */
static int store_whole(Fsck *f, NanoBlob *base, const uint8_t id[32], unsigned chunk_shift)
{
        _cleanup_(nano_chunk_compressor_freep) NanoChunkCompressor *c = NULL;
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_close_ int fd = -EBADF;
        char name[64], path[NANO_FANOUT_PATH_SIZE];
        const char *detail;
        size_t chunk = (size_t)1 << chunk_shift;
        int r;

        fd = nano_store_tmpfile(f->store, name);
        if (fd < 0)
                return fd;
        r = nano_chunk_compressor_new(NANO_BLOB_LEVEL_DEFAULT, &c);
        if (r >= 0)
                r = nano_blob_writer_new(fd, chunk_shift, &w);
        for (uint64_t off = 0; r >= 0 && off < nano_blob_size(base); off += chunk) {
                ssize_t n = nano_blob_pread(base, f->chunk, chunk, off);
                r = n < 0 ? (int)n : nano_blob_writer_add_chunk(w, c, f->chunk, (size_t)n);
        }
        if (r >= 0) {
                int64_t size = nano_blob_writer_finish(w);
                r = size < 0 ? (int)size : 0;
        }
        /* Synced first: the rename must never leave an empty file where a sound one was. */
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0) {
                r = nano_blob_open_fd(fd, &b);
                if (r >= 0)
                        fd = -EBADF; /* b owns it */
                if (r >= 0 && nano_blob_is_delta(b, NULL))
                        r = -EBADMSG;
                if (r >= 0)
                        r = verify_content(f, b, id, &detail);
        }
        nano_fanout_path(id, path);
        if (r >= 0 && renameat(f->store->tmp_fd, name, f->store->objects_fd, path) < 0)
                r = -errno;
        if (r < 0)
                (void)unlinkat(f->store->tmp_fd, name, 0);
        return r;
}

/* Verifies the base of a delta object on its own, once (its own check, where the walk meets it,
 * reports what is wrong with it). 0 if it is sound, -ENOENT if it is missing, -EMLINK if it is sound
 * but a delta itself (an import stored its content again as a delta after --repair removed it
 * damaged), -EBADMSG otherwise. --repair stores such a base whole, with the chunk size of the deltas
 * made against it, and returns 1. */
static int verify_base(Fsck *f, const uint8_t id[32], unsigned chunk_shift)
{
        _cleanup_(nano_blob_freep) NanoBlob *base = NULL;
        const char *detail;
        bool delta;
        int r;

        if (digest_set_contains(&f->good_bases, id))
                return 0;
        if (digest_set_contains(&f->bad_bases, id))
                return -EBADMSG;
        if (digest_set_contains(&f->delta_bases, id))
                return -EMLINK;
        r = nano_store_open_plain_blob(f->store, id, &base);
        if (r == -ENOENT || r == -ENOMEM)
                return r;
        delta = r >= 0 && nano_blob_is_delta(base, NULL);
        if (delta)
                r = nano_store_blob_set_base(f->store, base);
        if (r >= 0)
                r = verify_content(f, base, id, &detail);
        if (r == -ENOMEM)
                return r;
        if (r >= 0 && delta) {
                r = f->repair ? store_whole(f, base, id, chunk_shift) : -EMLINK;
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        r = digest_set_add(&f->delta_bases, id);
                        return r < 0 ? r : -EMLINK;
                }
                /* The walk may have passed its directory entry, old or new, already. */
                if (digest_set_add(&f->good_objects, id) < 0 || digest_set_add(&f->good_bases, id) < 0)
                        return -ENOMEM;
                return 1;
        }
        if (digest_set_add(r < 0 ? &f->bad_bases : &f->good_bases, id) < 0)
                return -ENOMEM;
        return r < 0 ? -EBADMSG : 0;
}

/* Verifies an object: its container, and for a delta object its base, then every chunk and the
 * sha256 of the whole. *ret_keep is set when the object's own bytes are sound but its base is
 * missing or damaged: --repair keeps it, since restoring the base makes it whole again. Returns 1
 * when the object is sound once --repair stored its base whole, with what was wrong in *ret_detail. */
static int verify_object(Fsck *f, int dirfd, const char *file, const uint8_t digest[32], const char **ret_detail,
                         bool *ret_keep)
{
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        static __thread char detail[160];
        uint8_t base_id[32];
        int fd, r, based = 0;

        fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                *ret_detail = "unreadable";
                return -errno;
        }
        r = nano_blob_open_fd(fd, &b);
        if (r < 0) {
                safe_close(fd);
                *ret_detail = r == -EBADMSG ? "malformed container (header, chunk table or trailer)" : "unreadable";
                return r;
        }
        if (nano_blob_is_delta(b, base_id)) {
                char id[NANO_ID_STRING_SIZE];
                const char *what;
                r = based = verify_base(f, base_id, nano_blob_chunk_shift(b));
                if (r == -ENOMEM)
                        return r;
                if (r >= 0)
                        r = nano_store_blob_set_base(f->store, b);
                /* What was wrong, also when --repair stored the base whole (r >= 0). */
                what = r == -ENOENT || r == -ENOLINK ? "missing"
                       : r == -EMLINK || r >= 0      ? "itself stored as a delta"
                                                     : "corrupt";
                snprintf(detail, sizeof detail, "it is a delta of object %s, which is %s", nano_id_format(base_id, id),
                         what);
                if (r < 0) {
                        *ret_detail = detail;
                        *ret_keep = true;
                        return -EBADMSG;
                }
        }
        r = verify_content(f, b, digest, ret_detail);
        if (r < 0)
                return r;
        f->res.bytes += nano_blob_size(b);
        if (based > 0) {
                *ret_detail = detail;
                return 1;
        }
        return 0;
}

static int check_object(const uint8_t *digest, int dirfd, const char *dir, const char *file, void *userdata)
{
        Fsck *f = userdata;
        const char *detail = NULL;
        bool keep = false;
        char where[128];
        int r;

        snprintf(where, sizeof where, "objects/%s/%s", dir, file);
        if (!digest) {
                report(f, NANO_PROBLEM_STRAY_FILE, where, NULL, NULL, "not a name the store writes", false);
                return 0;
        }
        f->res.objects++;
        r = verify_object(f, dirfd, file, digest, &detail, &keep);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                report(f, NANO_PROBLEM_CORRUPT_OBJECT, where, NULL, NULL, detail, !keep && remove_bad(f, dirfd, file));
                return digest_set_add(&f->bad_objects, digest) < 0 ? -ENOMEM : 0;
        }
        if (r > 0)
                report(f, NANO_PROBLEM_CORRUPT_OBJECT, where, NULL, NULL, detail, true);
        return digest_set_add(&f->good_objects, digest) < 0 ? -ENOMEM : 0;
}

/* Checks that a root (a ref, or a pin) names a release that is whole: its manifest and the manifests
 * it is packed against are there and sound, and so are the objects of its files. */
static void check_root(Fsck *f, const uint8_t id[32], const char *release, const char *where)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        char path[NANO_PATH_MAX + 1], idbuf[NANO_ID_STRING_SIZE];
        int r;

        if (digest_set_add(&f->roots, id) == 0)
                return; /* checked already: its problems are told once */
        if (!digest_set_contains(&f->good_manifests, id)) {
                NanoManifestChain chain;
                char detail[512];
                r = nano_store_open_manifest_chain(f->store, id, &m, &chain);
                if (r < 0 && chain.failed > 0) {
                        /* Its own file is there: what breaks the release is a base in its chain (its own
                         * base, or a base of that), named by its file. */
                        char base_where[NANO_FANOUT_PATH_SIZE + 10], base_id[NANO_ID_STRING_SIZE];
                        bool missing = chain.error == -ENOENT;
                        manifest_where(chain.ids[chain.failed], base_where);
                        snprintf(detail, sizeof detail, "its manifest %s needs the base manifest %s, which is %s",
                                 nano_id_format(id, idbuf), nano_id_format(chain.ids[chain.failed], base_id),
                                 missing ? "missing" : chain.detail);
                        report(f, missing ? NANO_PROBLEM_MISSING_MANIFEST : NANO_PROBLEM_CORRUPT_MANIFEST,
                               base_where, release, NULL, detail, false);
                        return;
                }
                snprintf(detail, sizeof detail, "manifest %s is missing or corrupt", nano_id_format(id, idbuf));
                report(f, NANO_PROBLEM_MISSING_MANIFEST, where, release, NULL, detail, false);
                return;
        }
        if (nano_store_open_manifest(f->store, id, &m) < 0) {
                report(f, NANO_PROBLEM_MISSING_MANIFEST, where, release, NULL, "manifest unreadable", false);
                return;
        }
        for (uint32_t i = 0, n = nano_manifest_count(m); i < n; i++) {
                NanoEntry e;
                nano_manifest_entry(m, i, &e);
                if (e.type != NANO_ENTRY_REGULAR || digest_set_contains(&f->good_objects, e.digest))
                        continue;
                bool bad = digest_set_contains(&f->bad_objects, e.digest);
                char file_where[NANO_FANOUT_PATH_SIZE + 8];
                memcpy(file_where, "objects/", 8);
                nano_fanout_path(e.digest, file_where + 8);
                if (nano_manifest_path(m, i, path, sizeof path) < 0)
                        snprintf(path, sizeof path, "(entry %u)", i);
                report(f, bad ? NANO_PROBLEM_CORRUPT_OBJECT : NANO_PROBLEM_MISSING_OBJECT, file_where, release, path,
                       bad ? "its object is corrupt" : "its object is missing", false);
        }
}

static void check_release(Fsck *f, const char *name, const char *version, int dirfd, const char *file)
{
        char release[2 * NANO_NAME_MAX + 2], where[2 * NANO_NAME_MAX + 8];
        uint8_t id[32];

        snprintf(release, sizeof release, "%s@%s", name, version);
        snprintf(where, sizeof where, "refs/%s/%s", name, version);
        f->res.refs++;
        if (nano_ref_read(f->store, name, version, id) < 0) {
                report(f, NANO_PROBLEM_BAD_REF, where, release, NULL, "malformed ref",
                       remove_bad(f, dirfd, file));
                return;
        }
        check_root(f, id, release, where);
}

typedef struct PinCheck {
        Fsck *f;
        int dirfd;
} PinCheck;

static int check_pin(const char *pin, const uint8_t id[32], void *userdata)
{
        PinCheck *pc = userdata;
        char where[NANO_NAME_MAX + 16], release[NANO_ID_STRING_SIZE];

        snprintf(where, sizeof where, "pins/%s", pin);
        if (!id) {
                /* It protects nothing (what did it name?), and keeps gc from removing anything. */
                report(pc->f, NANO_PROBLEM_BAD_REF, where, NULL, NULL, "malformed pin",
                       remove_bad(pc->f, pc->dirfd, pin));
                return 0;
        }
        check_root(pc->f, id, nano_id_format(id, release), where);
        return 0;
}

/* Pins are roots too: an instance runs the release its pin names. */
static int check_pins(Fsck *f)
{
        PinCheck pc = { f, -EBADF };
        int r;

        pc.dirfd = openat(f->store->store_fd, "pins", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (pc.dirfd < 0)
                return errno == ENOENT ? 0 : -errno;
        r = nano_store_pins_foreach(f->store, check_pin, &pc);
        safe_close(pc.dirfd);
        return r;
}

static int check_refs(Fsck *f)
{
        _cleanup_close_ int fd = openat(f->store->refs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct dirent *de;
        DIR *d;

        if (fd < 0 || !(d = fdopendir(fd)))
                return -errno;
        fd = -EBADF;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                int sfd = openat(f->store->refs_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                DIR *sd = sfd >= 0 ? fdopendir(sfd) : NULL;
                struct dirent *ve;
                if (!sd || !nano_name_is_valid(de->d_name)) {
                        char where[NANO_PATH_MAX];
                        snprintf(where, sizeof where, "refs/%s", de->d_name);
                        report(f, NANO_PROBLEM_STRAY_FILE, where, NULL, NULL, "not a name the store writes", false);
                        if (sd)
                                closedir(sd);
                        else
                                safe_close(sfd);
                        continue;
                }
                while ((ve = readdir(sd))) {
                        if (streq(ve->d_name, ".") || streq(ve->d_name, ".."))
                                continue;
                        if (!nano_name_is_valid(ve->d_name)) {
                                char where[NANO_PATH_MAX];
                                snprintf(where, sizeof where, "refs/%s/%s", de->d_name, ve->d_name);
                                report(f, NANO_PROBLEM_STRAY_FILE, where, NULL, NULL, "not a name the store writes",
                                       false);
                                continue;
                        }
                        check_release(f, de->d_name, ve->d_name, dirfd(sd), ve->d_name);
                }
                closedir(sd);
        }
        closedir(d);
        return 0;
}

int nano_store_fsck(NanoStore *s, bool repair, void (*cb)(const NanoProblem *p, void *userdata), void *userdata,
                    NanoFsckResult *ret, NanoError *err)
{
        Fsck f = { .store = s, .repair = repair, .cb = cb, .userdata = userdata, .err = err };
        uint64_t tmp_bytes = 0;
        int r;

        f.sha = EVP_MD_CTX_new();
        f.chunk = malloc((size_t)1 << NANO_BLOB_CHUNK_SHIFT_MAX);
        if (!f.sha || !f.chunk) {
                r = nano_error_set(err, ENOMEM, "out of memory");
                goto out_free;
        }
        r = nano_store_lock(s, LOCK_EX);
        if (r < 0) {
                r = nano_error_set(err, r, "cannot lock the store: %m");
                goto out_free;
        }
        r = nano_store_clean_tmp(s, &f.res.temporaries, &tmp_bytes);
        if (r < 0) {
                r = nano_error_set(err, r, "cannot clean the store's tmp/: %m");
                goto out;
        }
        r = nano_fanout_foreach(s->manifests_fd, check_manifest, &f);
        if (r >= 0)
                r = nano_fanout_foreach(s->objects_fd, check_object, &f);
        if (r >= 0)
                r = check_refs(&f);
        if (r >= 0)
                r = check_pins(&f);
        if (r < 0) {
                r = nano_error_set(err, r, "cannot read the store: %m");
                goto out;
        }
        *ret = f.res;
        r = (int)MIN(f.res.problems - f.res.repaired, (uint64_t)INT32_MAX);
out:
        nano_store_unlock(s);
out_free:
        digest_set_done(&f.good_manifests);
        digest_set_done(&f.missing_bases);
        digest_set_done(&f.good_bases);
        digest_set_done(&f.bad_bases);
        digest_set_done(&f.roots);
        digest_set_done(&f.delta_bases);
        digest_set_done(&f.good_objects);
        digest_set_done(&f.bad_objects);
        EVP_MD_CTX_free(f.sha);
        free(f.chunk);
        return r;
}
