/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The FUSE server's internals, shared by fuse.c (the requests), inode.c (the inode table and the
 * manifest cache) and mount.c (the daemon). */

/* 3.12: the first API whose multi-threaded loop takes a thread cap (--threads). */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>

#include "chunk-cache.h"
#include "fuse.h"
#include "hashmap.h"
#include "manifest.h"
#include "store.h"

/* Content under /<name>/<version>/ and /by-id/<id>/ never changes: the kernel may keep entries,
 * attributes, negative entries, pages and directory listings for as long as it likes. The root and
 * the name directories change when releases are added or removed: short timeouts, no negative
 * caching, so that a new release is visible at once and a removed one within a second. */
#define TIMEOUT_IMMUTABLE 86400.0
#define TIMEOUT_VOLATILE  1.0

/* Most blobs kept open at once (each holds a file descriptor), below half of RLIMIT_NOFILE. */
#define NANO_FUSE_OPEN_BLOBS_MAX 4096u

#define INO_BY_ID         2
#define INO_FIRST_DYNAMIC 16

typedef struct Prefetch Prefetch;

typedef enum NodeKind {
        NODE_ROOT,    /* / */
        NODE_BY_ID,   /* /by-id */
        NODE_NAME,    /* /<name>: key is the name */
        NODE_DIR,     /* a directory of a release tree: key is (tree, entry) */
        NODE_SYMLINK, /* key is (manifest, entry) */
        NODE_FILE,    /* key is (blob digest, mode, mtime): one inode per identical file */
} NodeKind;

/* An open manifest, shared by every tree and symlink that uses it (cache keyed by id). */
typedef struct Mnf {
        HashLink link;
        unsigned n_ref; /* under NanoFuse.lock */
        uint8_t id[32];
        NanoManifest *m;
} Mnf;

/* A manifest seen at one place of the namespace: "name@version" or "sha256:<id>" (by-id). The
 * directories of a release are keyed by their tree, not only by manifest, because the kernel cannot
 * have one directory inode under two parents (it would move dentries between /a/1 and /by-id/…). */
typedef struct Tree {
        HashLink link;
        unsigned n_ref; /* under NanoFuse.lock */
        Mnf *mnf;
        uint64_t hash; /* of (view, manifest id) */
        char view[];   /* "name@version" or "sha256:<hex>": key, and for log messages */
} Tree;

typedef struct Node {
        HashLink by_ino, by_key;
        uint64_t ino;
        uint64_t nlookup; /* under NanoFuse.lock; the kernel's references */
        NodeKind kind;
        uint32_t mode;  /* permission bits */
        uint32_t idx;   /* DIR, SYMLINK: manifest entry; FILE: entry where it was first seen */
        uint32_t nlink; /* DIR: 2 + subdirectories */
        int64_t mtime_sec;
        uint32_t mtime_nsec;
        uint64_t size;
        Tree *tree;                 /* DIR: its tree; FILE: where it was first seen (for log messages) */
        Mnf *mnf;                   /* SYMLINK */
        uint8_t digest[32];         /* FILE */
        atomic_bool corrupt_logged; /* FILE: one log line per corrupt object and inode */
        atomic_bool read_ahead;     /* FILE: its chunks were queued for decompression ahead */
        _Atomic uint64_t read_next; /* FILE: where the last read ended */

        /* FILE: the blob, opened by the first read and kept while the node is on the list of open
         * blobs (bounded, most recently read first: file descriptors are finite). Under lock. */
        NanoBlob *blob;
        unsigned blob_users; /* reads using it now: not closed under them */
        struct Node *blob_prev, *blob_next;

        /* ROOT, NAME, BY_ID: the listing getattr last saw, and the mtime it reported (under lock). */
        uint64_t list_hash;
        struct timespec list_mtime;
        bool list_seen;

        char name[]; /* NAME */
} Node;

struct NanoFuse {
        NanoStore *store;
        NanoFuseOptions opts;
        uid_t uid;
        gid_t gid;

        pthread_mutex_t lock; /* the four tables, every n_ref and nlookup */
        HashTable nodes_by_ino, nodes_by_key, trees, manifests;
        Node *root, *by_id;

        ChunkCache *cache;
        DigestSet logged;
        atomic_bool by_id_logged; /* refs/by-id/ (a release named by-id) was reported hidden */

        /* Open blobs, most recently read first (under lock). n_blobs counts the descriptors they hold
         * (a delta blob holds its base's too), kept under max_blobs: half the descriptor limit. */
        Node *blobs_first, *blobs_last;
        unsigned n_blobs, max_blobs;

        /* The kernel can do without OPEN and OPENDIR requests (Linux 3.14 and 5.1): answered ENOSYS
         * once, it never sends them again. */
        bool no_open, no_opendir;

        Prefetch *prefetch; /* while the loop runs */

        /* Watches store/refs for releases coming and going, to drop the kernel's cached listings. */
        int watch_fd;
        pthread_t watch_thread;
        bool watching; /* manifests and objects already reported broken (under lock) */

        struct fuse_session *se;
        char *mountpoint;
        bool mounted, signals;
        atomic_uint_fast64_t n_nodes;

        /* nano_fuse_loop()'s readiness probe. */
        pthread_t main_thread;
        int ready_error;
        void (*ready)(void *userdata);
        void *ready_userdata;
};

/* ---- inode.c. Functions taking a NanoFuse lock it themselves unless named *_locked. */

int inodes_init(NanoFuse *f);
void inodes_done(NanoFuse *f);

/* The node of ino, or NULL. The kernel pins every node it names in a request, so the pointer stays
 * valid for the request's duration without a reference. */
Node *node_by_ino(NanoFuse *f, uint64_t ino);
/* True if ino is a FILE node with that content now. */
bool node_ino_is(NanoFuse *f, uint64_t ino, const uint8_t digest[32]);

/* Each returns the node with one more kernel reference (nlookup): for lookup and readdirplus. */
int node_get_name(NanoFuse *f, const char *name, Node **ret);
int node_get_entry(NanoFuse *f, Tree *t, uint32_t idx, Node **ret);
void node_ref_static(NanoFuse *f, Node *n); /* root, by-id: counted for symmetry, never freed */

/* Opens the object with that digest, asking the kernel to read it ahead whole when it is not large
 * and readahead is set. */
int object_blob_open(NanoFuse *f, const uint8_t digest[32], bool readahead, NanoBlob **ret);

/* The blob of a FILE node, opened by the first call (checked against the node's size: -EBADMSG if it
 * differs), for one read: give it back with node_blob_put(). */
int node_blob_get(NanoFuse *f, Node *n, NanoBlob **ret);
void node_blob_put(NanoFuse *f, Node *n);

/* Drops count kernel references (forget); frees the node at zero. */
void node_unref(NanoFuse *f, Node *n, uint64_t count);
void node_unref_locked(NanoFuse *f, Node *n, uint64_t count);

/* The tree of manifest id at view, referenced; opens the manifest if no one else uses it. */
int tree_get(NanoFuse *f, const char *view, const uint8_t id[32], Tree **ret);
void tree_unref(NanoFuse *f, Tree *t);

/* By-id trees are named by their id; release names cannot contain ':', so the prefix tells. */
static inline bool tree_is_by_id(const Tree *t)
{
        return strncmp(t->view, "sha256:", 7) == 0;
}

static inline const NanoManifest *node_manifest(const Node *n)
{
        return n->kind == NODE_DIR ? n->tree->mnf->m : n->kind == NODE_SYMLINK ? n->mnf->m : NULL;
}

/* Inode numbers are derived from the key, so a readdir can give the same d_ino that a later stat
 * shows, without creating nodes for entries no one looks up. (A rare hash collision moves the
 * second node to the next free number; only its d_ino then differs.) */
uint64_t ino_of_name(const char *name);
uint64_t ino_of_entry(const Tree *t, uint32_t idx);
uint64_t ino_of_tree_root(const char *view, const uint8_t id[32]);

/* Attributes of a node; root and name directories look at the refs. */
int node_stat(NanoFuse *f, const Node *n, struct stat *ret);
double node_attr_timeout(const Node *n);

/* A name directory: its versions' count and its mtime; -ENOENT once it has no version. */
int name_dir_stat(NanoFuse *f, const char *name, struct stat *ret);

/* ---- prefetch.c */

#define PREFETCH_THREADS 4u

int prefetch_new(NanoFuse *f, unsigned n_threads, Prefetch **ret);
Prefetch *prefetch_free(Prefetch *p);

/* Reads ahead the objects of the small files beside entry idx of tree t (once per directory). */
void prefetch_siblings(Prefetch *p, const Tree *t, uint32_t idx);
/* Decompresses the chunks of a FILE node's object into the chunk cache and the kernel's page cache,
 * in the background (dropped if the queue is full). */
void prefetch_decompress(Prefetch *p, const Node *n);

/* ---- fuse.c */

/* The last error libfuse logged (e.g. why mounting failed), for the caller's message; "" if none. */
const char *nano_fuse_last_error(void);
