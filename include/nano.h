/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* libnano: the public API of nano's store, for agents that link it instead of parsing `nano` output.
 *
 * Conventions: a function returns >= 0 on success and -errno on failure; results come back through
 * ret parameters, which are left untouched on failure. Where a failure has more to say than an errno
 * (which file of an archive, which release), the function fills the NanoError passed to it. The
 * library never prints, never exits and never calls abort() on bad input. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "sha256:" + 64 hex digits + NUL */
#define NANO_ID_STRING_SIZE 72
/* Names and versions: [A-Za-z0-9][A-Za-z0-9._+-]{0,127} */
#define NANO_RELEASE_NAME_MAX 128

typedef struct NanoError {
        int error;          /* positive errno, 0 when no error was recorded */
        char message[1024]; /* what failed, naming the file or release and the cause */
} NanoError;

typedef struct NanoStore NanoStore;
typedef struct NanoManifest NanoManifest;
typedef struct NanoBlob NanoBlob;

/* ---- Ids and names. */

/* Parses "sha256:<64 lowercase hex>". -EINVAL otherwise. */
int nano_id_parse(const char *s, uint8_t ret[32]);
/* Formats an id as "sha256:<hex>" into buf (NANO_ID_STRING_SIZE bytes); returns buf. */
char *nano_id_format(const uint8_t id[32], char buf[NANO_ID_STRING_SIZE]);
/* True if s is a valid release name or version. */
bool nano_name_is_valid(const char *s);
/* True if s is a reserved release name: "by-id", the mount's /by-id view, which a release of that
 * name would be hidden by. Valid (a store written by an older nano may have one: it can be read and
 * removed), but no new ref is written under it. */
bool nano_name_is_reserved(const char *s);

/* ---- The store. */

/* Opens (creating its folders if needed) the store of home, or of $NANO_HOME, or of
 * ${XDG_DATA_HOME:-$HOME/.local/share}/nano when home is NULL. */
int nano_store_open(const char *home, NanoStore **ret, NanoError *err);
NanoStore *nano_store_unref(NanoStore *s);
const char *nano_store_home(const NanoStore *s);

typedef struct NanoImportProgress {
        uint64_t files;       /* entries processed */
        uint64_t bytes;       /* content bytes read */
        uint64_t elapsed_ns;
        bool done;
} NanoImportProgress;

typedef struct NanoAddOptions {
        int level;            /* zstd level; 0 means the default (3) */
        unsigned chunk_shift; /* log2 of the chunk size; 0 means the default (17: 128 KiB) */
        unsigned threads;     /* compression threads; 0 means one per CPU */
        bool no_delta;        /* compress every file on its own, never against the previous version's */
        /* Called from the importing thread at most every 100 ms, and once at the end. */
        void (*progress)(const NanoImportProgress *p, void *userdata);
        /* Non-fatal notes about the input (a setuid bit stripped…). */
        void (*warning)(const char *message, void *userdata);
        void *userdata;
} NanoAddOptions;

typedef struct NanoAddResult {
        uint8_t id[32];         /* the manifest id */
        uint64_t files, directories, symlinks;
        uint64_t bytes;         /* content bytes of all regular files */
        uint64_t new_objects;   /* objects this import stored */
        uint64_t new_bytes;     /* bytes those objects take in the store */
        bool existed;           /* the release already named this very tree: nothing changed */
} NanoAddResult;

/* Imports a directory, a tarball (any format and compression libarchive reads) or a Debian .deb as
 * release name@version. -EEXIST if the release exists with other content. */
int nano_store_add(NanoStore *s, const char *source, const char *name, const char *version,
                   const NanoAddOptions *opts, NanoAddResult *ret, NanoError *err);

typedef struct NanoRelease {
        char name[NANO_RELEASE_NAME_MAX + 1];
        char version[NANO_RELEASE_NAME_MAX + 1];
        uint8_t id[32];
} NanoRelease;

/* All releases, sorted by name then version. *ret is malloc'ed. */
int nano_store_list(NanoStore *s, NanoRelease **ret, size_t *ret_n, NanoError *err);
/* Resolves "name@version" through its ref, or "sha256:<hex>" to a manifest present in the store. */
int nano_store_resolve(NanoStore *s, const char *release, uint8_t ret[32], NanoError *err);
/* Removes the ref of name@version (its content goes with the next gc). */
int nano_store_remove(NanoStore *s, const char *release, NanoError *err);
/* Opens (and validates) the manifest with that id. */
int nano_store_open_manifest(NanoStore *s, const uint8_t id[32], NanoManifest **ret);
/* Opens the object with that content digest, and the base of a delta object: -ENOENT if the object is
 * missing, -ENOLINK if its base is, -EBADMSG if either is damaged. */
int nano_store_open_blob(NanoStore *s, const uint8_t digest[32], NanoBlob **ret);

/* Writes release into a new or empty directory: content, permission bits, symlinks and mtimes. */
int nano_store_checkout(NanoStore *s, const uint8_t id[32], const char *dir, NanoError *err);

typedef struct NanoGcResult {
        uint64_t objects, manifests, temporaries; /* files removed */
        uint64_t bytes;                           /* bytes freed */
        /* Releases whose manifest is there but cannot be read (corrupt, or a base of it is missing or
         * corrupt): the objects they need cannot be known, so while there are any, gc removes no
         * object (fsck names them; adding the release, or its base's, again repairs it). */
        uint64_t unreadable;
        /* Delta objects in use whose container cannot be read: which object is their base cannot be
         * known either, so gc removes no object while there are any. */
        uint64_t unreadable_objects;
        /* Malformed refs and pins: what they name cannot be known, so while there are any, gc removes
         * no object and no manifest (fsck names them, --repair removes them). */
        uint64_t unknown_roots;
} NanoGcResult;
/* Removes every object and manifest no ref reaches, and leftovers of interrupted writes. */
int nano_store_gc(NanoStore *s, NanoGcResult *ret, NanoError *err);

typedef enum NanoProblemKind {
        NANO_PROBLEM_CORRUPT_OBJECT,
        NANO_PROBLEM_MISSING_OBJECT,
        NANO_PROBLEM_CORRUPT_MANIFEST,
        NANO_PROBLEM_MISSING_MANIFEST,
        NANO_PROBLEM_BAD_REF,
        NANO_PROBLEM_STRAY_FILE,
} NanoProblemKind;

typedef struct NanoProblem {
        NanoProblemKind kind;
        const char *file;    /* store-relative path of the file concerned */
        const char *release; /* "name@version" that is affected, or NULL */
        const char *path;    /* path inside that release, or NULL */
        const char *detail;  /* what is wrong */
        bool repaired;       /* --repair removed the bad file, or stored whole the base a delta needs */
} NanoProblem;

typedef struct NanoFsckResult {
        uint64_t objects, manifests, refs; /* checked */
        uint64_t bytes;                    /* content bytes verified */
        uint64_t problems, repaired;
        uint64_t temporaries;              /* leftovers of interrupted writes removed */
} NanoFsckResult;

/* Verifies every object's sha256 and every chunk checksum, every manifest and ref, and that every
 * object a release needs is present; removes leftovers of interrupted writes. With repair, corrupt
 * objects, corrupt manifests and malformed refs are removed (a ref whose manifest is missing is kept:
 * adding the release again restores it), and a delta's base stored as a delta itself is stored whole. Each problem is reported through cb: a bad file once, and
 * each release path it breaks once more. Returns the number of problems left unrepaired. */
int nano_store_fsck(NanoStore *s, bool repair, void (*cb)(const NanoProblem *p, void *userdata),
                    void *userdata, NanoFsckResult *ret, NanoError *err);

typedef struct NanoDuResult {
        uint64_t releases;
        uint64_t logical_bytes;  /* sum of all releases' file sizes */
        uint64_t unique_bytes;   /* content bytes of distinct objects the releases use */
        uint64_t stored_bytes;   /* apparent size of objects and manifests in the store */
        uint64_t disk_bytes;     /* blocks they use on disk */
        uint64_t objects, manifests;
} NanoDuResult;
int nano_store_du(NanoStore *s, NanoDuResult *ret, NanoError *err);

#ifdef __cplusplus
}
#endif
