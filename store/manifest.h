/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Manifests: one canonical, mmap-able, binary description of a whole tree (doc/formats.md).
 * All functions return >= 0 on success or -errno; -EBADMSG means malformed input. Nothing logs. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define NANO_MANIFEST_MAGIC "NANOMAN\x01"
#define NANO_MANIFEST_HEADER_SIZE 64u
#define NANO_MANIFEST_ENTRY_SIZE 80u
#define NANO_MANIFEST_ENTRIES_MAX (UINT32_C(1) << 24)
#define NANO_MANIFEST_STRINGS_MAX (UINT64_C(1) << 31)
#define NANO_NAME_MAX 255u
#define NANO_SYMLINK_MAX 4095u
#define NANO_PATH_DEPTH_MAX 256u
#define NANO_PATH_MAX 4096u

typedef enum NanoEntryType {
        NANO_ENTRY_REGULAR = 1,
        NANO_ENTRY_DIRECTORY = 2,
        NANO_ENTRY_SYMLINK = 3,
} NanoEntryType;

/* A decoded entry: what the builder takes and what the reader returns. */
typedef struct NanoEntry {
        NanoEntryType type;
        uint32_t mode;       /* permission bits, <= 0777 */
        uint64_t size;       /* regular: content size; directory: number of children; symlink: target length */
        int64_t mtime_sec;
        uint32_t mtime_nsec;
        uint8_t digest[32];  /* regular only */
        const char *target;  /* symlink only; not NUL-terminated in a reader's answer: use size */
        /* Reader only: */
        uint32_t parent;
        uint32_t first_child; /* directory only */
        const char *name;     /* not NUL-terminated: use name_len */
        uint32_t name_len;
} NanoEntry;

/* ---- Building a manifest from entries in any order (importers). */

typedef struct NanoManifestBuilder NanoManifestBuilder;

int nano_manifest_builder_new(NanoManifestBuilder **ret);
NanoManifestBuilder *nano_manifest_builder_free(NanoManifestBuilder *b);

/* Normalises a relative path in place: drops leading "./", repeated and trailing slashes and "."
 * components. Returns -EINVAL for an absolute path, a ".." component, an empty name after
 * normalisation where one is needed, a component longer than NANO_NAME_MAX, a path longer than
 * NANO_PATH_MAX or deeper than NANO_PATH_DEPTH_MAX. "" and "." become "" (the root). */
int nano_path_normalize(char *path);

/* Adds or replaces the entry at path (normalised by the builder; "" is the root directory, which
 * only takes a directory). Missing parent directories are created with mode 0755 and mtime 0, and
 * take the attributes of a later explicit entry. A non-directory over an existing entry replaces it
 * (a directory it replaces loses its subtree); a directory over an existing directory keeps its
 * children and takes the new attributes; a directory over a non-directory replaces it. Mode bits
 * above 0777 are cleared (the caller warns). `e->target` must be NUL-terminated for symlinks;
 * size is taken from strlen(target). For directories, e->size is ignored.
 * Errors: -EINVAL (bad path, type, target), -ENOTDIR (a parent is not a directory), -E2BIG (limits). */
int nano_manifest_builder_add(NanoManifestBuilder *b, const char *path, const NanoEntry *e);

/* Makes `path` a hard link of the regular file already added at `target` (both normalised): a
 * regular entry with the same content, mode and mtime. -ENOENT if target is missing, -EINVAL if it
 * is not a regular file. */
int nano_manifest_builder_link(NanoManifestBuilder *b, const char *path, const char *target);

uint32_t nano_manifest_builder_count(const NanoManifestBuilder *b);

/* Serialises the canonical manifest. *ret is malloc'ed; ret_digest gets its sha256. */
int nano_manifest_builder_finish(NanoManifestBuilder *b, uint8_t **ret, size_t *ret_size, uint8_t ret_digest[32]);

/* ---- Reading (zero-copy over a buffer or an mmap). */

typedef struct NanoManifest NanoManifest;

/* Validates buf completely (every rule of doc/formats.md, including canonical form) and wraps it.
 * The buffer is borrowed and must outlive the manifest. */
int nano_manifest_parse(const void *buf, size_t size, NanoManifest **ret);
/* mmaps the file at path (relative to dirfd), validates it and owns the mapping. */
int nano_manifest_open_at(int dirfd, const char *path, NanoManifest **ret);
/* Maps the manifest file at path read-only, populated: -EISDIR for a directory, -EBADMSG for
 * anything but a regular file of 1..size_max bytes. munmap() it. */
int nano_manifest_map_at(int dirfd, const char *path, uint64_t size_max, void **ret_map, size_t *ret_size);
NanoManifest *nano_manifest_free(NanoManifest *m);

uint32_t nano_manifest_count(const NanoManifest *m);
const void *nano_manifest_data(const NanoManifest *m, size_t *ret_size);
/* Decodes entry idx (< count) into *ret: O(1). */
void nano_manifest_entry(const NanoManifest *m, uint32_t idx, NanoEntry *ret);
/* Finds `name` (len bytes) among the children of directory dir: O(log n). -ENOENT, -ENOTDIR. */
int nano_manifest_lookup(const NanoManifest *m, uint32_t dir, const char *name, size_t len, uint32_t *ret);
/* Resolves a relative path from the root without following symlinks ("" or "/" is the root). */
int nano_manifest_resolve(const NanoManifest *m, const char *path, uint32_t *ret);
/* Writes the path of entry idx ("" for the root) into buf; -ENAMETOOLONG if it does not fit. */
int nano_manifest_path(const NanoManifest *m, uint32_t idx, char *buf, size_t size);

/* Like nano_manifest_parse(), over the first `size` bytes of a mapping of map_size bytes that the
 * manifest owns on success (munmap()'ed by nano_manifest_free()); on failure the caller keeps it. */
int nano_manifest_adopt(void *map, size_t map_size, size_t size, NanoManifest **ret);

/* ---- Packed manifests (doc/formats.md, "Packed manifest"): how a manifest may be stored. A packed
 * manifest is one zstd frame of the canonical bytes, compressed with the canonical bytes of a base
 * manifest as prefix (or without one). The id stays the sha256 of the canonical bytes. */

#define NANO_MANIFEST_PACK_MAGIC "NANOMPK\x01"
#define NANO_MANIFEST_PACK_HEADER_SIZE 64u
/* Bases below a packed manifest, at most: decoding one decodes its whole chain first. */
#define NANO_MANIFEST_PACK_DEPTH_MAX 8u
/* A base is used only while base + manifest fit this window (the zstd window must cover both). */
#define NANO_MANIFEST_PACK_WINDOW_LOG_MAX 28u
/* A packed frame decodes to at most its base plus this many times its own size. No real manifest
 * comes near (every entry differs from the one before it, in its name offset at least, and costs
 * the frame a few bits at least: ~40x is the most seen), and the writer stores a manifest that would
 * canonical. It is what bounds the memory a small hostile file can make a reader use. */
#define NANO_MANIFEST_PACK_EXPANSION_MAX 1024u
/* The largest canonical manifest the format allows. */
#define NANO_MANIFEST_SIZE_MAX                                                                              \
        (NANO_MANIFEST_HEADER_SIZE + (uint64_t)NANO_MANIFEST_ENTRY_SIZE * NANO_MANIFEST_ENTRIES_MAX +      \
         NANO_MANIFEST_STRINGS_MAX)
/* zstd level of packed manifests (see doc/store.md). */
#define NANO_MANIFEST_PACK_LEVEL 3

typedef struct NanoManifestPacked {
        uint64_t size;      /* of the canonical manifest */
        uint32_t depth;     /* 0: no base; else the bases below this one when it was written, 1..8 */
        uint8_t base[32];   /* the base's id, when depth > 0 */
        const uint8_t *frame;
        size_t frame_size;
} NanoManifestPacked;

/* True if buf starts with the packed magic (anything else is read as a canonical manifest). */
bool nano_manifest_is_packed(const void *buf, size_t size);
/* Checks the header and the frame's own header (one frame filling the rest, its content size equal
 * to the header's, content checksum on, no dictionary id): -EBADMSG otherwise. */
int nano_manifest_packed_parse(const void *buf, size_t size, NanoManifestPacked *ret);
/* Packs the canonical manifest data. With base (its canonical bytes, id and the depth of its own
 * chain), the frame is compressed against it: -E2BIG if base + data exceed the window or the frame
 * would exceed NANO_MANIFEST_PACK_EXPANSION_MAX, -EINVAL if the base is already at the depth limit.
 * *ret is malloc'ed. */
int nano_manifest_pack(const void *data, size_t size, const void *base, size_t base_size,
                       const uint8_t base_id[32], uint32_t base_depth, int level, uint8_t **ret, size_t *ret_size);

/* Where packed manifests come from: maps the stored file of manifest `id` (canonical or packed) into
 * *ret_map (munmap()'ed by the caller). -ENOENT if there is none. */
typedef int (*NanoManifestLoadFn)(void *userdata, const uint8_t id[32], void **ret_map, size_t *ret_size);

/* The files a load read, for gc (which keeps them all) and fsck (which names the one at fault). */
typedef struct NanoManifestChain {
        unsigned n;         /* ids[0] is the manifest asked for, ids[i + 1] the base of ids[i] */
        uint8_t ids[NANO_MANIFEST_PACK_DEPTH_MAX + 1][32];
        unsigned failed;    /* on failure: the index in ids of the manifest at fault */
        int error;          /* on failure: how, as -errno (-ENOENT: its file is missing) */
        const char *detail; /* on failure: what is wrong with it */
} NanoManifestChain;

/* Opens manifest id through load: a canonical file is mmap'ed as by nano_manifest_open_at(); a packed
 * one is decoded (its bases first, each checked against its id) into anonymous read-only memory.
 * Either way the canonical bytes are checked against id and validated. -EBADMSG for anything
 * malformed, a missing base included; -ENOENT only when id itself is missing. chain may be NULL. */
int nano_manifest_load(NanoManifestLoadFn load, void *userdata, const uint8_t id[32], NanoManifest **ret,
                       NanoManifestChain *chain);

/* The same, with NANO_MANIFEST_LOAD_BY_CHECKSUM: a packed level is checked by its zstd frame's content
 * checksum alone, not also against its sha256 (2 ms per 3.4 MB level). Canonical files, which have
 * no checksum of their own, are still checked against their id. For the mount's daemon, which opens
 * manifests on the first lookup of a release; fsck, gc and the CLI check every id. */
#define NANO_MANIFEST_LOAD_BY_CHECKSUM 1u
int nano_manifest_load_flags(NanoManifestLoadFn load, void *userdata, const uint8_t id[32], unsigned flags,
                             NanoManifest **ret, NanoManifestChain *chain);

static inline void nano_manifest_freep(NanoManifest **m)
{
        if (*m)
                nano_manifest_free(*m);
}
static inline void nano_manifest_builder_freep(NanoManifestBuilder **b)
{
        if (*b)
                nano_manifest_builder_free(*b);
}
