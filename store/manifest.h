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
