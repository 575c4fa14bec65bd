/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The inode table: nodes by inode number and by key, with the kernel's lookup counts, and the caches
 * of open manifests and trees that nodes reference. One mutex guards it all: every critical section
 * is a hash probe or two, far shorter than a FUSE round trip, and the slow parts (opening and
 * validating a manifest, counting a directory's subdirectories) run before the lock is taken. */
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <xxhash.h>

#include "fuse-internal.h"
#include "util.h"

/* ---- Keys and inode numbers. */

static uint64_t hash_name(const char *name)
{
        return XXH3_64bits_withSeed(name, strlen(name), 'N');
}

static uint64_t hash_tree(const char *view, const uint8_t id[32])
{
        return XXH3_64bits_withSeed(id, 32, XXH3_64bits_withSeed(view, strlen(view), 'T'));
}

static uint64_t hash_dir(const Tree *t, uint32_t idx)
{
        uint8_t b[4];

        le32_write(b, idx);
        return XXH3_64bits_withSeed(b, sizeof b, t->hash ^ 'D');
}

static uint64_t hash_symlink(const uint8_t id[32], uint32_t idx)
{
        uint8_t b[36];

        memcpy(b, id, 32);
        le32_write(b + 32, idx);
        return XXH3_64bits_withSeed(b, sizeof b, 'L');
}

static uint64_t hash_file(const uint8_t digest[32], uint32_t mode, int64_t sec, uint32_t nsec)
{
        uint8_t b[48];

        memcpy(b, digest, 32);
        le32_write(b + 32, mode);
        le64_write(b + 36, (uint64_t)sec);
        le32_write(b + 44, nsec);
        return XXH3_64bits_withSeed(b, sizeof b, 'F');
}

static uint64_t ino_from_hash(uint64_t h)
{
        return h < INO_FIRST_DYNAMIC ? h + INO_FIRST_DYNAMIC : h;
}

uint64_t ino_of_name(const char *name)
{
        return ino_from_hash(hash_name(name));
}

uint64_t ino_of_entry(const Tree *t, uint32_t idx)
{
        NanoEntry e;

        nano_manifest_entry(t->mnf->m, idx, &e);
        switch (e.type) {
        case NANO_ENTRY_DIRECTORY:
                return ino_from_hash(hash_dir(t, idx));
        case NANO_ENTRY_SYMLINK:
                return ino_from_hash(hash_symlink(t->mnf->id, idx));
        default:
                return ino_from_hash(hash_file(e.digest, e.mode, e.mtime_sec, e.mtime_nsec));
        }
}

uint64_t ino_of_tree_root(const char *view, const uint8_t id[32])
{
        Tree t = { .hash = hash_tree(view, id) };
        return ino_from_hash(hash_dir(&t, 0));
}

static bool node_key_equal(const Node *a, const Node *b)
{
        if (a->kind != b->kind)
                return false;
        switch (a->kind) {
        case NODE_NAME:
                return streq(a->name, b->name);
        case NODE_DIR:
                return a->tree == b->tree && a->idx == b->idx;
        case NODE_SYMLINK:
                return a->mnf == b->mnf && a->idx == b->idx;
        case NODE_FILE:
                return memcmp(a->digest, b->digest, 32) == 0 && a->mode == b->mode &&
                       a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec;
        default:
                return a == b;
        }
}

/* ---- Manifests and trees. */

static void mnf_unref_locked(NanoFuse *f, Mnf *m)
{
        if (!m || --m->n_ref > 0)
                return;
        hash_table_remove(&f->manifests, &m->link);
        nano_manifest_free(m->m);
        free(m);
}

static Mnf *mnf_find_locked(NanoFuse *f, const uint8_t id[32])
{
        HASH_TABLE_FOREACH (l, &f->manifests, le64_read(id)) {
                Mnf *m = container_of(l, Mnf, link);
                if (memcmp(m->id, id, 32) == 0)
                        return m;
        }
        return NULL;
}

static void tree_unref_locked(NanoFuse *f, Tree *t)
{
        if (!t || --t->n_ref > 0)
                return;
        hash_table_remove(&f->trees, &t->link);
        mnf_unref_locked(f, t->mnf);
        free(t);
}

void tree_unref(NanoFuse *f, Tree *t)
{
        if (!t)
                return;
        pthread_mutex_lock(&f->lock);
        tree_unref_locked(f, t);
        pthread_mutex_unlock(&f->lock);
}

static Tree *tree_find_locked(NanoFuse *f, const char *view, const uint8_t id[32], uint64_t h)
{
        HASH_TABLE_FOREACH (l, &f->trees, h) {
                Tree *t = container_of(l, Tree, link);
                if (streq(t->view, view) && memcmp(t->mnf->id, id, 32) == 0)
                        return t;
        }
        return NULL;
}

int tree_get(NanoFuse *f, const char *view, const uint8_t id[32], Tree **ret)
{
        _cleanup_(nano_manifest_freep) NanoManifest *opened = NULL;
        uint64_t h = hash_tree(view, id);
        size_t len = strlen(view);
        Tree *t;
        Mnf *m;
        int r;

        for (;;) {
                pthread_mutex_lock(&f->lock);
                t = tree_find_locked(f, view, id, h);
                if (t) {
                        t->n_ref++;
                        pthread_mutex_unlock(&f->lock);
                        *ret = t;
                        return 0;
                }
                m = mnf_find_locked(f, id);
                if (m || opened)
                        break; /* with the lock held */
                pthread_mutex_unlock(&f->lock);

                /* Mapped or decoded, checked and validated: O(entries), so not under the lock. Two
                 * threads may race to open one manifest; the loser drops its copy. */
                r = nano_store_open_manifest_by_checksum(f->store, id, &opened);
                if (r < 0)
                        return r;
        }

        t = calloc(1, sizeof *t + len + 1);
        if (!t)
                goto fail;
        if (!m) {
                m = calloc(1, sizeof *m);
                if (!m)
                        goto fail;
                memcpy(m->id, id, 32);
                m->m = TAKE_PTR(opened);
                if (hash_table_add(&f->manifests, &m->link, le64_read(id)) < 0) {
                        nano_manifest_free(m->m);
                        free(m);
                        goto fail;
                }
        }
        m->n_ref++;
        t->mnf = m;
        t->hash = h;
        t->n_ref = 1;
        memcpy(t->view, view, len + 1);
        if (hash_table_add(&f->trees, &t->link, h) < 0) {
                t->n_ref = 0;
                mnf_unref_locked(f, m);
                goto fail;
        }
        pthread_mutex_unlock(&f->lock);
        *ret = t;
        return 0;

fail:
        pthread_mutex_unlock(&f->lock);
        free(t);
        return -ENOMEM;
}

/* ---- Open blobs. */

#define BLOB_READAHEAD_MAX  (16 * 1024 * 1024) /* stored bytes */
#define BLOB_READAHEAD_HEAD (128 * 1024)       /* the header and the first frame */
#define BLOB_READAHEAD_TAIL (64 * 1024)        /* the trailer and a chunk table of up to ~4,000 chunks */

static void blob_list_unlink_locked(NanoFuse *f, Node *n)
{
        if (n->blob_prev)
                n->blob_prev->blob_next = n->blob_next;
        else
                f->blobs_first = n->blob_next;
        if (n->blob_next)
                n->blob_next->blob_prev = n->blob_prev;
        else
                f->blobs_last = n->blob_prev;
        n->blob_prev = n->blob_next = NULL;
}

static void blob_list_push_locked(NanoFuse *f, Node *n)
{
        n->blob_prev = NULL;
        n->blob_next = f->blobs_first;
        if (f->blobs_first)
                f->blobs_first->blob_prev = n;
        else
                f->blobs_last = n;
        f->blobs_first = n;
}

/* Descriptors an open blob holds: its object's, and its base's for a delta. */
static unsigned blob_fds(const NanoBlob *b)
{
        return nano_blob_is_delta(b, NULL) ? 2 : 1;
}

static void node_blob_close_locked(NanoFuse *f, Node *n)
{
        if (!n->blob)
                return;
        blob_list_unlink_locked(f, n);
        f->n_blobs -= blob_fds(n->blob);
        nano_blob_free(n->blob);
        n->blob = NULL;
}

/* Closes the least recently read blobs that no read is using until their descriptors are at most
 * max. */
static void blobs_trim_locked(NanoFuse *f, unsigned max)
{
        for (Node *v = f->blobs_last; f->n_blobs > max && v;) {
                Node *prev = v->blob_prev;
                if (v->blob_users == 0)
                        node_blob_close_locked(f, v);
                v = prev;
        }
}

/* Opens the object, asking first for all of it to be read ahead when it is not large. Opening reads
 * the header at its start, the trailer at its end, then the chunk table before it, then a read wants
 * a frame from its start: reads in a row from a cold disk, where one request for the whole file lets
 * the disk serve them at once. The end and the start are asked for first, on their own: the kernel
 * sends a readahead in pieces of up to 2 MiB, each completing as a whole, so opening python3.11's
 * object (2.9 MB) waited for its trailer behind the rest; its first read took 5-13 ms cold, and
 * 1.7-3 ms with the end and the start first. A large object (a 1 GiB file read at random) is left to
 * the reads. */
int object_blob_open(NanoFuse *f, const uint8_t digest[32], bool readahead, NanoBlob **ret)
{
        struct stat st;
        int fd = nano_store_open_object(f->store, digest);

        if (fd < 0)
                return fd;
        if (readahead && fstat(fd, &st) == 0 && st.st_size <= BLOB_READAHEAD_MAX) {
                if (st.st_size > BLOB_READAHEAD_HEAD + BLOB_READAHEAD_TAIL) {
                        (void)posix_fadvise(fd, st.st_size - BLOB_READAHEAD_TAIL, BLOB_READAHEAD_TAIL,
                                            POSIX_FADV_WILLNEED);
                        (void)posix_fadvise(fd, 0, BLOB_READAHEAD_HEAD, POSIX_FADV_WILLNEED);
                }
                (void)posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
        }
        return nano_store_open_blob_fd(f->store, fd, ret); /* a delta object reads its base too */
}

int node_blob_get(NanoFuse *f, Node *n, NanoBlob **ret)
{
        NanoBlob *b = NULL;
        int r;

        pthread_mutex_lock(&f->lock);
        if (!n->blob) {
                pthread_mutex_unlock(&f->lock);
                /* Opening reads the chunk table: not under the lock. Two threads may race to open one
                 * blob; the loser closes its copy. */
                r = object_blob_open(f, n->digest, true, &b);
                if (r == -EMFILE || r == -ENFILE) {
                        /* Out of descriptors (the prefetch threads hold some too, briefly): close
                         * every idle blob and try once more. */
                        pthread_mutex_lock(&f->lock);
                        blobs_trim_locked(f, 0);
                        pthread_mutex_unlock(&f->lock);
                        r = object_blob_open(f, n->digest, true, &b);
                }
                if (r >= 0 && nano_blob_size(b) != n->size)
                        r = -EBADMSG;
                if (r < 0) {
                        nano_blob_free(b);
                        return r;
                }
                /* The first read of this file: its neighbours are likely next. */
                prefetch_siblings(f->prefetch, n->tree, n->idx);
                pthread_mutex_lock(&f->lock);
                if (!n->blob) {
                        n->blob = TAKE_PTR(b);
                        f->n_blobs += blob_fds(n->blob);
                        blob_list_push_locked(f, n);
                }
        }
        n->blob_users++;
        if (f->blobs_first != n) {
                blob_list_unlink_locked(f, n);
                blob_list_push_locked(f, n);
        }
        /* Over the bound: close the least recently read ones that no read is using. */
        blobs_trim_locked(f, f->max_blobs);
        *ret = n->blob;
        pthread_mutex_unlock(&f->lock);
        nano_blob_free(b);
        return 0;
}

void node_blob_put(NanoFuse *f, Node *n)
{
        pthread_mutex_lock(&f->lock);
        assert(n->blob_users > 0);
        n->blob_users--;
        pthread_mutex_unlock(&f->lock);
}

/* ---- Nodes. */

static void node_free_locked(NanoFuse *f, Node *n)
{
        node_blob_close_locked(f, n);
        hash_table_remove(&f->nodes_by_ino, &n->by_ino);
        hash_table_remove(&f->nodes_by_key, &n->by_key);
        tree_unref_locked(f, n->tree);
        mnf_unref_locked(f, n->mnf);
        atomic_fetch_sub(&f->n_nodes, 1);
        free(n);
}

Node *node_by_ino(NanoFuse *f, uint64_t ino)
{
        Node *found = NULL;

        pthread_mutex_lock(&f->lock);
        HASH_TABLE_FOREACH (l, &f->nodes_by_ino, ino) {
                found = container_of(l, Node, by_ino);
                break;
        }
        pthread_mutex_unlock(&f->lock);
        return found;
}

bool node_ino_is(NanoFuse *f, uint64_t ino, const uint8_t digest[32])
{
        bool is = false;

        pthread_mutex_lock(&f->lock);
        HASH_TABLE_FOREACH (l, &f->nodes_by_ino, ino) {
                Node *n = container_of(l, Node, by_ino);
                is = n->ino == ino && n->kind == NODE_FILE && memcmp(n->digest, digest, 32) == 0;
                if (is)
                        break;
        }
        pthread_mutex_unlock(&f->lock);
        return is;
}

/* Finds the node with proto's key and takes a kernel reference on it, or inserts a copy of proto
 * (taking references on its tree and manifest). */
static int node_get_locked(NanoFuse *f, const Node *proto, size_t name_size, uint64_t key_hash, Node **ret)
{
        uint64_t ino;
        Node *n;

        HASH_TABLE_FOREACH (l, &f->nodes_by_key, key_hash) {
                n = container_of(l, Node, by_key);
                if (node_key_equal(n, proto)) {
                        n->nlookup++;
                        *ret = n;
                        return 0;
                }
        }

        n = malloc(sizeof *n + name_size);
        if (!n)
                return -ENOMEM;
        memcpy(n, proto, sizeof *n + name_size);
        n->nlookup = 1;
        /* Derived from the key; on a collision (2^-64 per pair), the next free number. */
        ino = ino_from_hash(key_hash);
        while (hash_table_first(&f->nodes_by_ino, ino))
                ino = ino_from_hash(ino + 1);
        n->ino = ino;
        if (hash_table_add(&f->nodes_by_key, &n->by_key, key_hash) < 0) {
                free(n);
                return -ENOMEM;
        }
        if (hash_table_add(&f->nodes_by_ino, &n->by_ino, ino) < 0) {
                hash_table_remove(&f->nodes_by_key, &n->by_key);
                free(n);
                return -ENOMEM;
        }
        if (n->tree)
                n->tree->n_ref++;
        if (n->mnf)
                n->mnf->n_ref++;
        atomic_fetch_add(&f->n_nodes, 1);
        *ret = n;
        return 0;
}

int node_get_name(NanoFuse *f, const char *name, Node **ret)
{
        size_t len = strlen(name);
        _cleanup_free_ Node *proto = calloc(1, sizeof *proto + len + 1);
        int r;

        if (!proto)
                return -ENOMEM;
        proto->kind = NODE_NAME;
        proto->mode = 0555;
        memcpy(proto->name, name, len + 1);

        pthread_mutex_lock(&f->lock);
        r = node_get_locked(f, proto, len + 1, hash_name(name), ret);
        pthread_mutex_unlock(&f->lock);
        return r;
}

int node_get_entry(NanoFuse *f, Tree *t, uint32_t idx, Node **ret)
{
        const NanoManifest *m = t->mnf->m;
        Node proto = {};
        NanoEntry e;
        uint64_t h;
        int r;

        nano_manifest_entry(m, idx, &e);
        proto.mode = e.mode;
        proto.mtime_sec = e.mtime_sec;
        proto.mtime_nsec = e.mtime_nsec;
        proto.size = e.size;
        proto.idx = idx;
        switch (e.type) {
        case NANO_ENTRY_DIRECTORY:
                proto.kind = NODE_DIR;
                proto.tree = t;
                /* The classic nlink of a directory, which find(1) and others use to stop looking for
                 * subdirectories early: computed once per node, outside the lock. */
                proto.nlink = 2;
                for (uint32_t i = 0; i < e.size; i++) {
                        NanoEntry c;
                        nano_manifest_entry(m, e.first_child + i, &c);
                        if (c.type == NANO_ENTRY_DIRECTORY)
                                proto.nlink++;
                }
                h = hash_dir(t, idx);
                break;
        case NANO_ENTRY_SYMLINK:
                proto.kind = NODE_SYMLINK;
                proto.mnf = t->mnf;
                h = hash_symlink(t->mnf->id, idx);
                break;
        default:
                proto.kind = NODE_FILE;
                memcpy(proto.digest, e.digest, 32);
                /* Only a hint for log messages: the inode is shared by every identical file. */
                proto.tree = t;
                h = hash_file(e.digest, e.mode, e.mtime_sec, e.mtime_nsec);
                break;
        }

        pthread_mutex_lock(&f->lock);
        r = node_get_locked(f, &proto, 0, h, ret);
        pthread_mutex_unlock(&f->lock);
        return r;
}

void node_ref_static(NanoFuse *f, Node *n)
{
        pthread_mutex_lock(&f->lock);
        n->nlookup++;
        pthread_mutex_unlock(&f->lock);
}

void node_unref_locked(NanoFuse *f, Node *n, uint64_t count)
{
        /* Never below zero, whatever the kernel says: a bogus forget must not free a node twice. */
        n->nlookup = count >= n->nlookup ? 0 : n->nlookup - count;
        if (n->nlookup == 0 && n != f->root && n != f->by_id)
                node_free_locked(f, n);
}

void node_unref(NanoFuse *f, Node *n, uint64_t count)
{
        pthread_mutex_lock(&f->lock);
        node_unref_locked(f, n, count);
        pthread_mutex_unlock(&f->lock);
}

static int node_new_static(NanoFuse *f, uint64_t ino, NodeKind kind, Node **ret)
{
        Node *n = calloc(1, sizeof *n);
        int r;

        if (!n)
                return -ENOMEM;
        n->kind = kind;
        n->ino = ino;
        n->mode = 0555;
        n->nlookup = 1; /* the kernel's reference on the root is implicit */
        r = hash_table_add(&f->nodes_by_ino, &n->by_ino, ino);
        if (r < 0) {
                free(n);
                return r;
        }
        *ret = n;
        return 0;
}

int inodes_init(NanoFuse *f)
{
        int r = node_new_static(f, FUSE_ROOT_ID, NODE_ROOT, &f->root);
        if (r < 0)
                return r;
        return node_new_static(f, INO_BY_ID, NODE_BY_ID, &f->by_id);
}

static void free_node_link(HashLink *l, void *userdata)
{
        Node *n = container_of(l, Node, by_ino);
        nano_blob_free(n->blob);
        free(n);
}

static void free_tree_link(HashLink *l, void *userdata)
{
        free(container_of(l, Tree, link));
}

static void free_mnf_link(HashLink *l, void *userdata)
{
        Mnf *m = container_of(l, Mnf, link);
        nano_manifest_free(m->m);
        free(m);
}

void inodes_done(NanoFuse *f)
{
        /* The kernel does not forget every inode at unmount: free whatever is left, in one go. */
        hash_table_done(&f->nodes_by_key, NULL, NULL);
        hash_table_done(&f->nodes_by_ino, free_node_link, NULL);
        hash_table_done(&f->trees, free_tree_link, NULL);
        hash_table_done(&f->manifests, free_mnf_link, NULL);
        f->root = f->by_id = NULL;
}

/* ---- Attributes. */

/* refs_only: the refs of a name's folder; else the names in refs/, but the one the by-id view hides. */
static int count_subdirs(int dirfd, const char *path, bool refs_only, unsigned *ret)
{
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d)
                return -errno;
        TAKE_FD(fd);
        while ((de = readdir(d)))
                if (nano_name_is_valid(de->d_name) && (refs_only || !nano_name_is_reserved(de->d_name)) &&
                    (refs_only ? de->d_type == DT_REG || de->d_type == DT_UNKNOWN
                               : de->d_type == DT_DIR || de->d_type == DT_UNKNOWN))
                        n++;
        closedir(d);
        *ret = n;
        return 0;
}

static void stat_fill(NanoFuse *f, struct stat *st, uint64_t ino, mode_t mode, nlink_t nlink, uint64_t size,
                      int64_t sec, long nsec)
{
        *st = (struct stat){
                .st_ino = ino,
                .st_mode = mode,
                .st_nlink = nlink,
                .st_uid = f->uid,
                .st_gid = f->gid,
                .st_size = (off_t)size,
                .st_blksize = 4096,
                .st_blocks = (blkcnt_t)DIV_ROUND_UP(size, 512),
                .st_atim = { .tv_sec = sec, .tv_nsec = nsec },
                .st_mtim = { .tv_sec = sec, .tv_nsec = nsec },
                .st_ctim = { .tv_sec = sec, .tv_nsec = nsec },
        };
}

int name_dir_stat(NanoFuse *f, const char *name, struct stat *ret)
{
        struct stat st;
        unsigned n;
        int r;

        if (!nano_name_is_valid(name))
                return -ENOENT;
        if (fstatat(f->store->refs_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOENT;
        r = count_subdirs(f->store->refs_fd, name, true, &n);
        if (r < 0)
                return r;
        if (n == 0)
                return -ENOENT; /* being removed: its last version is gone */
        stat_fill(f, ret, ino_of_name(name), S_IFDIR | 0555, 2 + n, 0, st.st_mtim.tv_sec,
                  st.st_mtim.tv_nsec);
        return 0;
}

int node_stat(NanoFuse *f, const Node *n, struct stat *ret)
{
        struct stat st;
        unsigned count = 0;
        int r;

        switch (n->kind) {
        case NODE_ROOT:
        case NODE_BY_ID:
                if (fstat(f->store->refs_fd, &st) < 0)
                        return -errno;
                if (n->kind == NODE_ROOT) {
                        r = count_subdirs(f->store->refs_fd, ".", false, &count);
                        if (r < 0)
                                return r;
                        count++; /* by-id */
                }
                stat_fill(f, ret, n->ino, S_IFDIR | 0555, 2 + count, 0, st.st_mtim.tv_sec,
                          st.st_mtim.tv_nsec);
                return 0;
        case NODE_NAME:
                r = name_dir_stat(f, n->name, ret);
                if (r < 0)
                        return r;
                ret->st_ino = n->ino;
                return 0;
        case NODE_DIR:
                stat_fill(f, ret, n->ino, S_IFDIR | n->mode, n->nlink, n->size, n->mtime_sec, n->mtime_nsec);
                return 0;
        case NODE_SYMLINK:
                stat_fill(f, ret, n->ino, S_IFLNK | n->mode, 1, n->size, n->mtime_sec, n->mtime_nsec);
                return 0;
        case NODE_FILE:
                stat_fill(f, ret, n->ino, S_IFREG | n->mode, 1, n->size, n->mtime_sec, n->mtime_nsec);
                return 0;
        }
        return -EINVAL;
}

double node_attr_timeout(const Node *n)
{
        return n->kind == NODE_ROOT || n->kind == NODE_BY_ID || n->kind == NODE_NAME ? TIMEOUT_VOLATILE
                                                                                     : TIMEOUT_IMMUTABLE;
}
