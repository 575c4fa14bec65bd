/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The store's internals, shared by its files (import, gc, fsck, checkout). Not public. */

#include <sys/stat.h>

#include "blob.h"
#include "error.h"
#include "macros.h"
#include "manifest.h"
#include "nano.h"

struct NanoStore {
        unsigned n_ref;
        char *home;
        int store_fd;     /* $NANO_HOME/store */
        int objects_fd;   /* store/objects */
        int manifests_fd; /* store/manifests */
        int refs_fd;      /* store/refs */
        int tmp_fd;       /* store/tmp */
        int lock_fd;      /* store/lock */
        int anon_files;   /* O_TMPFILE + linkat through /proc works: 1, does not: 0, unknown: -1 */
};

/* "ab/cdef…" for a digest: the fan-out path under objects/ or manifests/ (68 bytes with NUL). */
#define NANO_FANOUT_PATH_SIZE 66
void nano_fanout_path(const uint8_t digest[32], char buf[NANO_FANOUT_PATH_SIZE]);
/* Parses a fan-out directory name and file name back into a digest; -EINVAL if they are not one. */
int nano_fanout_parse(const char *dir, const char *file, uint8_t ret[32]);

/* Removes every file of tmp/, adding to the counters: only with the store lock held exclusively. */
int nano_store_clean_tmp(NanoStore *s, uint64_t *ret_files, uint64_t *ret_bytes);

/* Store-wide lock: LOCK_SH for writers, LOCK_EX for gc and fsck. Blocks. */
int nano_store_lock(NanoStore *s, int operation);
void nano_store_unlock(NanoStore *s);

/* A new temporary file in tmp/ (O_RDWR, mode 0444 once finished); name gets its name. */
int nano_store_tmpfile(NanoStore *s, char name[64]);
/* A new file for an object, opened O_RDWR. Where the filesystem allows, it is anonymous (O_TMPFILE:
 * name[0] is then '\0'), so a crash leaves nothing behind and publishing it is one link; else it is
 * named tmp/<name>. */
int nano_store_objfile(NanoStore *s, char name[64]);
/* Publishes a file from nano_store_objfile() as dirfd/path, like nano_store_publish(). The fd is not
 * closed; a named file is removed from tmp/ either way. */
int nano_store_publish_fd(NanoStore *s, int fd, const char *name, int dirfd, const char *path,
                          int64_t object_size);

/* Moves tmp/<name> to dirfd/<path> without replacing a sound file; 1 if it landed, 0 if the target
 * existed (the temporary file is then removed), -errno on failure (the temporary file is removed
 * too). For an object (object_size >= 0: its content size), an existing target that is not an intact
 * container of that many bytes is damaged and is replaced; a sound one is kept, whatever its size (a
 * delta and a plain container of the same content differ). Other files (-1) are never replaced.
 * Creates the fan-out directory when needed. */
int nano_store_publish(NanoStore *s, const char *name, int dirfd, const char *path, int64_t object_size);

/* True when an object with that digest is present, with an intact trailer for `size` content bytes. */
bool nano_store_has_object(NanoStore *s, const uint8_t digest[32], uint64_t size);
/* A read-only descriptor on the object file with that digest (its blob container), or -errno. */
int nano_store_open_object(NanoStore *s, const uint8_t digest[32]);
/* Opens the object's container as it is: a delta one without its base (nano_blob_open_fd()). */
int nano_store_open_plain_blob(NanoStore *s, const uint8_t digest[32], NanoBlob **ret);
/* Gives a delta container its base object (nothing to do for a plain one): -ENOLINK if the base is
 * missing, -EBADMSG if it is damaged or cannot be a base. */
int nano_store_blob_set_base(NanoStore *s, NanoBlob *b);
/* nano_store_open_blob() of an object file already open (from nano_store_open_object()): fd is the
 * blob's on success, closed on failure. */
int nano_store_open_blob_fd(NanoStore *s, int fd, NanoBlob **ret);
/* The previous version of a release being imported (manifest-store.c), opened once: its files are
 * the bases of the new version's changed files, its manifest the base the new one is packed against. */
typedef struct NanoPrevious {
        NanoManifest *manifest; /* NULL: there is none */
        uint8_t id[32];
        unsigned depth; /* bases below its manifest */
} NanoPrevious;
/* The release itself if it is there (added again), else the version of name added most recently.
 * 1 and it, 0 if there is none that can be read. */
int nano_store_open_previous(NanoStore *s, const char *name, const char *version, NanoPrevious *ret);
void nano_previous_done(NanoPrevious *p);

/* Manifests (manifest-store.c). Opens manifest id like nano_store_open_manifest(), and says which
 * files it read (a packed manifest reads its chain of bases) and, on failure, which one is at fault. */
int nano_store_open_manifest_chain(NanoStore *s, const uint8_t id[32], NanoManifest **ret, NanoManifestChain *chain);
/* Like nano_store_open_manifest(), with NANO_MANIFEST_LOAD_BY_CHECKSUM (manifest.h): for the mount. */
int nano_store_open_manifest_by_checksum(NanoStore *s, const uint8_t id[32], NanoManifest **ret);
/* Stores the canonical manifest data (whose id is id), packed against the manifest of prev (the
 * release's previous version, or NULL) where that pays (doc/store.md). 1 and the bytes written in
 * *ret_stored if it wrote a file, 0 if a sound copy was there. An existing copy that cannot be read
 * (damaged, or its base is) is replaced by one without a base. */
int nano_store_put_manifest(NanoStore *s, const void *data, size_t size, const uint8_t id[32],
                            const NanoPrevious *prev, uint64_t *ret_stored);

/* Refs. */
int nano_release_parse(const char *release, char name[NANO_RELEASE_NAME_MAX + 1],
                       char version[NANO_RELEASE_NAME_MAX + 1]);
/* Reads refs/name/version: 0 and the id, -ENOENT, or -EBADMSG for a malformed ref. */
int nano_ref_read(NanoStore *s, const char *name, const char *version, uint8_t ret[32]);
/* Writes the ref atomically, after syncing the store. 1 if written, 0 if it already named id,
 * -EEXIST if it names another id. */
int nano_ref_write(NanoStore *s, const char *name, const char *version, const uint8_t id[32]);

/* A set of digests (open addressing; grows). */
typedef struct DigestSet {
        uint8_t (*slots)[32];
        uint8_t *used;
        size_t n, cap;
} DigestSet;
/* 1 if added, 0 if it was there, -ENOMEM. */
int digest_set_add(DigestSet *s, const uint8_t d[32]);
bool digest_set_contains(const DigestSet *s, const uint8_t d[32]);
void digest_set_done(DigestSet *s);

/* Iterates over the files of a fan-out tree (objects/ or manifests/): calls cb with the digest
 * (or NULL for a stray name), the fan-out dir fd and the file name. Stops on a negative return. */
int nano_fanout_foreach(int dirfd, int (*cb)(const uint8_t *digest, int subdir_fd, const char *dir,
                                              const char *file, void *userdata),
                        void *userdata);

/* Sha256 of a buffer. */
void nano_sha256(const void *data, size_t len, uint8_t ret[32]);

/* nano_store_list() for gc: an unreadable folder or ref is an error instead of being skipped, and
 * malformed refs (whose release cannot be known) are counted in *ret_malformed. */
int nano_store_list_roots(NanoStore *s, NanoRelease **ret, size_t *ret_n, uint64_t *ret_malformed,
                          NanoError *err);

/* Pins (pins.c): GC roots besides refs. store/pins/<pin> names a manifest that gc keeps; the runtime
 * pins the release of each instance as "instance:<name>". Pin names: [A-Za-z0-9][A-Za-z0-9._+:-]{0,127}. */
bool nano_pin_name_is_valid(const char *s);
/* Writes the pin atomically, under the store lock (shared), after checking that the release is
 * whole: its manifest is there, and a ref or another pin names it or every object of its files is
 * there (-ENOENT otherwise: gc took it). release (may be NULL) is what the user named it,
 * name@version or sha256:<id>. Replaces an existing pin of that name. With NANO_PIN_SYNC the pin is
 * fsync'ed, and its folder, before this returns. */
#define NANO_PIN_SYNC 1u
int nano_store_pin(NanoStore *s, const char *pin, const uint8_t id[32], const char *release, unsigned flags,
                   NanoError *err);
/* Removes the pin: 1 if it was there, 0 if not. */
int nano_store_unpin(NanoStore *s, const char *pin, NanoError *err);
/* Calls cb for every pin, with id NULL for a malformed one; stops on a negative return, which it
 * returns, and on a pin or the folder that cannot be read (-errno). */
int nano_store_pins_foreach(NanoStore *s, int (*cb)(const char *pin, const uint8_t id[32], void *userdata),
                            void *userdata);
