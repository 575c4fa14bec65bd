/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "macros.h"
#include "manifest.h"
#include "util.h"

/* Byte offsets of the header and entry fields (doc/formats.md, "Manifest"). */
enum {
        H_MAGIC = 0,
        H_N_ENTRIES = 8,
        H_FLAGS = 12,
        H_STRINGS_OFF = 16,
        H_STRINGS_SIZE = 24,
        H_TOTAL_SIZE = 32,
        H_RESERVED = 40,
};

enum {
        E_PARENT = 0,
        E_NAME_OFF = 4,
        E_NAME_LEN = 8,
        E_TYPE = 10,
        E_RESERVED0 = 11,
        E_MODE = 12,
        E_SIZE = 16,
        E_MTIME_SEC = 24,
        E_MTIME_NSEC = 32,
        E_A = 36,
        E_B = 40,
        E_RESERVED1 = 44,
        E_DIGEST = 48,
};

#define NSEC_PER_SEC 1000000000u
#define NONE         UINT32_MAX

/* Bytewise order, shorter first on a common prefix: the one order of names in a directory, shared by
 * the builder's sort, the parser's check and the reader's binary search. */
static int name_cmp(const char *a, size_t a_len, const char *b, size_t b_len)
{
        int r = memcmp(a, b, MIN(a_len, b_len));
        if (r != 0)
                return r;
        return (a_len > b_len) - (a_len < b_len);
}

static bool name_is_valid(const char *s, size_t len)
{
        if (len == 0 || len > NANO_NAME_MAX)
                return false;
        if (s[0] == '.' && (len == 1 || (len == 2 && s[1] == '.')))
                return false;
        return !memchr(s, '/', len) && !memchr(s, '\0', len);
}

/* ---- Paths. */

/* Steps over the next component of a relative path, skipping empty and "." components. Returns
 * true with the component in *ret and *ret_len, false at the end of the path. */
static bool path_next(const char **p, const char **ret, size_t *ret_len)
{
        const char *s = *p;

        for (;;) {
                while (*s == '/')
                        s++;
                if (*s == '\0') {
                        *p = s;
                        return false;
                }

                const char *c = s;
                size_t n = strcspn(s, "/");
                s += n;
                if (n == 1 && c[0] == '.')
                        continue;

                *p = s;
                *ret = c;
                *ret_len = n;
                return true;
        }
}

/* Checks path against the rules of nano_path_normalize() without changing it; returns the number
 * of components of its normal form (0 for the root). NANO_PATH_MAX counts the terminating NUL, as
 * PATH_MAX does, so that a normalised path always fits a NANO_PATH_MAX buffer. */
static int path_check(const char *path)
{
        const char *p = path, *c;
        size_t n, len = 0;
        unsigned depth = 0;

        if (!path || path[0] == '/')
                return -EINVAL;

        while (path_next(&p, &c, &n)) {
                if (n == 2 && c[0] == '.' && c[1] == '.')
                        return -EINVAL;
                if (n > NANO_NAME_MAX)
                        return -EINVAL;
                if (++depth > NANO_PATH_DEPTH_MAX)
                        return -EINVAL;
                len += n + (depth > 1);
                if (len >= NANO_PATH_MAX)
                        return -EINVAL;
        }
        return (int)depth;
}

int nano_path_normalize(char *path)
{
        const char *p, *c;
        size_t n, w = 0;
        int r;

        /* Validate first, so that a rejected path is left as the caller passed it. */
        r = path_check(path);
        if (r < 0)
                return r;

        /* Writing never overtakes reading: each component moves left by the bytes dropped before it. */
        p = path;
        while (path_next(&p, &c, &n)) {
                if (w > 0)
                        path[w++] = '/';
                memmove(path + w, c, n);
                w += n;
        }
        path[w] = '\0';
        return 0;
}

/* ---- SipHash-1-3, for the builder's hash table.
 *
 * Importers feed the builder paths from untrusted archives; with a keyed hash and a random key per
 * builder, nobody can precompute names that all land in one bucket and turn the build quadratic. */

static inline uint64_t rotl64(uint64_t x, unsigned b)
{
        return (x << b) | (x >> (64 - b));
}

#define SIPROUND(v0, v1, v2, v3)                                                                            \
        do {                                                                                                \
                v0 += v1;                                                                                   \
                v1 = rotl64(v1, 13);                                                                        \
                v1 ^= v0;                                                                                   \
                v0 = rotl64(v0, 32);                                                                        \
                v2 += v3;                                                                                   \
                v3 = rotl64(v3, 16);                                                                        \
                v3 ^= v2;                                                                                   \
                v0 += v3;                                                                                   \
                v3 = rotl64(v3, 21);                                                                        \
                v3 ^= v0;                                                                                   \
                v2 += v1;                                                                                   \
                v1 = rotl64(v1, 17);                                                                        \
                v1 ^= v2;                                                                                   \
                v2 = rotl64(v2, 32);                                                                        \
        } while (0)

static uint64_t siphash13(const uint64_t key[2], const uint8_t *m, size_t len)
{
        uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ key[0];
        uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ key[1];
        uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ key[0];
        uint64_t v3 = UINT64_C(0x7465646279746573) ^ key[1];
        uint64_t last = (uint64_t)len << 56;
        size_t i;

        for (i = 0; i + 8 <= len; i += 8) {
                uint64_t w = le64_read(m + i);
                v3 ^= w;
                SIPROUND(v0, v1, v2, v3);
                v0 ^= w;
        }
        for (size_t j = 0; i + j < len; j++)
                last |= (uint64_t)m[i + j] << (8 * j);
        v3 ^= last;
        SIPROUND(v0, v1, v2, v3);
        v0 ^= last;
        v2 ^= 0xff;
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- Builder.
 *
 * Nodes live in one growing array and are addressed by index. A node is found by (parent, name)
 * through a chained hash table whose links are in the nodes themselves; a directory's children form
 * a singly linked list (order does not matter: finish sorts them). Replacing a directory by a
 * non-directory reuses the node in place, so a node never has to be unlinked from its siblings;
 * only whole subtrees are dropped, and their nodes go to a free list for reuse. */

typedef struct Node {
        uint32_t parent;
        uint32_t hash;         /* low bits of the keyed hash of (parent, name) */
        uint32_t hash_next;    /* next node in the same hash bucket */
        uint32_t first_child;  /* directory: head of its list of children */
        uint32_t next_sibling; /* in the parent's list; for a dead node, the free list */
        uint32_t name_off;     /* in the arena */
        uint32_t target_off;   /* symlink: in the arena; the length is `size` */
        uint32_t mode;
        uint32_t mtime_nsec;
        uint16_t name_len;
        uint8_t type; /* NanoEntryType, or 0 for a dead node */
        int64_t mtime_sec;
        uint64_t size;
        uint8_t digest[32];
} Node;

#define NODE_DEAD 0

struct NanoManifestBuilder {
        Node *nodes;
        uint32_t n_nodes; /* slots in use, live or dead */
        uint32_t nodes_cap;
        uint32_t free_head;    /* dead slots, linked through next_sibling */
        uint32_t n_live;       /* entries of the manifest, the root included */
        uint64_t strings_size; /* names and targets of live entries */

        char *arena; /* names and symlink targets; offsets fit in 32 bits */
        size_t arena_size;
        size_t arena_cap;

        uint32_t *buckets; /* heads of the hash chains; a power of two of them */
        uint32_t n_buckets;
        uint32_t n_hashed;

        uint64_t key[2];
};

/* Grows *p (an array of *cap elements of elem bytes) to hold at least need elements, at most max. */
static int grow(void **p, size_t elem, size_t *cap, size_t need, size_t max)
{
        size_t n;
        void *q;

        if (need <= *cap)
                return 0;
        if (need > max)
                return -E2BIG;
        n = MAX(need, MIN(max, MAX(*cap * 2, (size_t)64)));
        if (n > SIZE_MAX / elem)
                return -ENOMEM;
        q = realloc(*p, n * elem);
        if (!q)
                return -ENOMEM;
        *p = q;
        *cap = n;
        return 0;
}

static uint32_t key_hash(const NanoManifestBuilder *b, uint32_t parent, const char *name, size_t len)
{
        uint8_t buf[4 + NANO_NAME_MAX];

        /* len was checked by path_check() */
        le32_write(buf, parent);
        memcpy(buf + 4, name, len);
        return (uint32_t)siphash13(b->key, buf, 4 + len);
}

static uint32_t node_find(const NanoManifestBuilder *b, uint32_t parent, const char *name, size_t len,
                          uint32_t hash)
{
        for (uint32_t i = b->buckets[hash & (b->n_buckets - 1)]; i != NONE; i = b->nodes[i].hash_next) {
                const Node *n = b->nodes + i;

                if (n->hash == hash && n->parent == parent && n->name_len == len &&
                    memcmp(b->arena + n->name_off, name, len) == 0)
                        return i;
        }
        return NONE;
}

static void hash_insert(NanoManifestBuilder *b, uint32_t idx)
{
        uint32_t *head = b->buckets + (b->nodes[idx].hash & (b->n_buckets - 1));

        b->nodes[idx].hash_next = *head;
        *head = idx;
        b->n_hashed++;
}

static void hash_remove(NanoManifestBuilder *b, uint32_t idx)
{
        uint32_t *p = b->buckets + (b->nodes[idx].hash & (b->n_buckets - 1));

        while (*p != idx)
                p = &b->nodes[*p].hash_next;
        *p = b->nodes[idx].hash_next;
        b->n_hashed--;
}

static int hash_resize(NanoManifestBuilder *b, uint32_t n_buckets)
{
        uint32_t *buckets;

        buckets = malloc(sizeof(uint32_t) * n_buckets);
        if (!buckets)
                return -ENOMEM;
        memset(buckets, 0xff, sizeof(uint32_t) * n_buckets);

        free(b->buckets);
        b->buckets = buckets;
        b->n_buckets = n_buckets;
        b->n_hashed = 0;
        /* The root (slot 0) is never hashed: it has no name. */
        for (uint32_t i = 1; i < b->n_nodes; i++)
                if (b->nodes[i].type != NODE_DEAD)
                        hash_insert(b, i);
        return 0;
}

/* Makes room for `nodes` new nodes and `bytes` arena bytes, so that the changes that follow
 * cannot fail halfway. */
static int reserve(NanoManifestBuilder *b, uint32_t nodes, size_t bytes)
{
        size_t cap;
        int r;

        cap = b->nodes_cap;
        r = grow((void **)&b->nodes, sizeof(Node), &cap, (size_t)b->n_nodes + nodes,
                 (size_t)NANO_MANIFEST_ENTRIES_MAX + NANO_PATH_DEPTH_MAX);
        if (r < 0)
                return r;
        b->nodes_cap = (uint32_t)cap;

        /* Keep the load factor at most 1; n_buckets stays a power of two of at most 2^26. */
        if ((uint64_t)b->n_hashed + nodes > b->n_buckets) {
                uint32_t n_buckets = b->n_buckets;

                while (n_buckets < (uint64_t)b->n_hashed + nodes)
                        n_buckets *= 2;
                r = hash_resize(b, n_buckets);
                if (r < 0)
                        return r;
        }

        if (bytes > UINT32_MAX - b->arena_size)
                return -E2BIG;
        return grow((void **)&b->arena, 1, &b->arena_cap, b->arena_size + bytes, UINT32_MAX);
}

/* The arena space was reserved. */
static uint32_t arena_append(NanoManifestBuilder *b, const char *s, size_t len)
{
        uint32_t off = (uint32_t)b->arena_size;

        memcpy(b->arena + off, s, len);
        b->arena_size += len;
        return off;
}

/* Creates a node with no attributes yet under directory parent. Space was reserved. */
static uint32_t node_new(NanoManifestBuilder *b, uint32_t parent, const char *name, size_t len,
                         uint32_t hash)
{
        uint32_t idx;
        Node *n;

        if (b->free_head != NONE) {
                idx = b->free_head;
                b->free_head = b->nodes[idx].next_sibling;
        } else
                idx = b->n_nodes++;

        n = b->nodes + idx;
        *n = (Node){
                .parent = parent,
                .hash = hash,
                .first_child = NONE,
                .next_sibling = b->nodes[parent].first_child,
                .name_off = arena_append(b, name, len),
                .name_len = (uint16_t)len,
        };
        b->nodes[parent].first_child = idx;
        hash_insert(b, idx);
        b->n_live++;
        b->strings_size += len;
        return idx;
}

static void node_release(NanoManifestBuilder *b, uint32_t idx)
{
        Node *n = b->nodes + idx;

        hash_remove(b, idx);
        b->n_live--;
        b->strings_size -= n->name_len + (n->type == NANO_ENTRY_SYMLINK ? n->size : 0);
        n->type = NODE_DEAD;
        n->next_sibling = b->free_head;
        b->free_head = idx;
}

/* Releases every descendant of directory top, which stays. Iterative, climbing back through the
 * parent links, so it needs neither a stack nor recursion. */
static void subtree_release(NanoManifestBuilder *b, uint32_t top)
{
        uint32_t cur = b->nodes[top].first_child;

        b->nodes[top].first_child = NONE;
        while (cur != NONE) {
                Node *n = b->nodes + cur;
                uint32_t next;

                if (n->type == NANO_ENTRY_DIRECTORY && n->first_child != NONE) {
                        next = n->first_child;
                        n->first_child = NONE;
                        cur = next;
                        continue;
                }

                next = n->next_sibling != NONE ? n->next_sibling : n->parent;
                node_release(b, cur);
                if (next == top)
                        break;
                cur = next;
        }
}

static void node_set_implicit_dir(Node *n)
{
        n->type = NANO_ENTRY_DIRECTORY;
        n->mode = 0755;
}

/* Gives node idx the attributes of e. For a symlink, target_len bytes of arena were reserved. */
static void node_set(NanoManifestBuilder *b, uint32_t idx, const NanoEntry *e, size_t target_len)
{
        Node *n = b->nodes + idx;

        if (n->type == NANO_ENTRY_SYMLINK)
                b->strings_size -= n->size;
        if (e->type != NANO_ENTRY_DIRECTORY && n->type == NANO_ENTRY_DIRECTORY)
                subtree_release(b, idx);
        if (e->type == NANO_ENTRY_SYMLINK) {
                /* A shorter or equal target overwrites the old one, which nothing else refers to. */
                if (n->type == NANO_ENTRY_SYMLINK && target_len <= n->size)
                        memcpy(b->arena + n->target_off, e->target, target_len);
                else
                        n->target_off = arena_append(b, e->target, target_len);
                b->strings_size += target_len;
        }

        if (e->type != NANO_ENTRY_DIRECTORY || n->type != NANO_ENTRY_DIRECTORY)
                n->first_child = NONE;
        n->type = (uint8_t)e->type;
        n->mode = e->mode & 0777;
        n->mtime_sec = e->mtime_sec;
        n->mtime_nsec = e->mtime_nsec;
        switch (e->type) {
        case NANO_ENTRY_REGULAR:
                n->size = e->size;
                memcpy(n->digest, e->digest, sizeof(n->digest));
                break;
        case NANO_ENTRY_SYMLINK:
                n->size = target_len;
                memset(n->digest, 0, sizeof(n->digest));
                break;
        default:
                n->size = 0; /* the number of children, counted by finish */
                memset(n->digest, 0, sizeof(n->digest));
        }
}

static int entry_check(const NanoEntry *e, size_t *ret_target_len)
{
        size_t len = 0;

        switch (e->type) {
        case NANO_ENTRY_REGULAR:
        case NANO_ENTRY_DIRECTORY:
                break;
        case NANO_ENTRY_SYMLINK:
                if (!e->target)
                        return -EINVAL;
                len = strnlen(e->target, NANO_SYMLINK_MAX + 1);
                if (len == 0 || len > NANO_SYMLINK_MAX)
                        return -EINVAL;
                break;
        default:
                return -EINVAL;
        }
        if (e->mtime_nsec >= NSEC_PER_SEC)
                return -EINVAL;

        *ret_target_len = len;
        return 0;
}

int nano_manifest_builder_new(NanoManifestBuilder **ret)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        size_t cap = 0;
        int r;

        if (!ret)
                return -EINVAL;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->free_head = NONE;

        r = grow((void **)&b->nodes, sizeof(Node), &cap, 64, 64);
        if (r < 0)
                return r;
        b->nodes_cap = (uint32_t)cap;
        r = hash_resize(b, 64);
        if (r < 0)
                return r;
        /* Never NULL, even for a tree of nothing but the root: memcpy() from it must be valid. */
        r = grow((void **)&b->arena, 1, &b->arena_cap, 4096, UINT32_MAX);
        if (r < 0)
                return r;

        /* Without randomness the table still works, it just loses its resistance to crafted names;
         * the output does not depend on the key either way. */
        if (RAND_bytes((unsigned char *)b->key, sizeof(b->key)) != 1)
                memset(b->key, 0, sizeof(b->key));

        b->nodes[0] = (Node){.parent = 0, .first_child = NONE, .next_sibling = NONE};
        node_set_implicit_dir(b->nodes + 0);
        b->n_nodes = 1;
        b->n_live = 1;

        *ret = TAKE_PTR(b);
        return 0;
}

NanoManifestBuilder *nano_manifest_builder_free(NanoManifestBuilder *b)
{
        if (!b)
                return NULL;
        free(b->nodes);
        free(b->arena);
        free(b->buckets);
        free(b);
        return NULL;
}

uint32_t nano_manifest_builder_count(const NanoManifestBuilder *b)
{
        return b ? b->n_live : 0;
}

int nano_manifest_builder_add(NanoManifestBuilder *b, const char *path, const NanoEntry *e)
{
        const char *p, *c = NULL, *rest;
        size_t n = 0, target_len, name_bytes = 0;
        uint32_t cur = 0, found = NONE, missing = 0;
        int depth, i = 0, r;

        if (!b || !path || !e)
                return -EINVAL;

        r = entry_check(e, &target_len);
        if (r < 0)
                return r;
        depth = path_check(path);
        if (depth < 0)
                return depth;

        if (depth == 0) {
                /* The root is always a directory: only its attributes can change. */
                if (e->type != NANO_ENTRY_DIRECTORY)
                        return -EINVAL;
                node_set(b, 0, e, 0);
                return 0;
        }

        /* First walk down as far as the path exists, changing nothing, so that every error is
         * reported before the tree is touched. */
        p = path;
        for (;;) {
                rest = p;
                if (!path_next(&p, &c, &n))
                        break;
                i++;
                found = node_find(b, cur, c, n, key_hash(b, cur, c, n));
                if (found == NONE)
                        break;
                if (i == depth)
                        break;
                if (b->nodes[found].type != NANO_ENTRY_DIRECTORY)
                        return -ENOTDIR;
                cur = found;
        }

        if (found != NONE) {
                const Node *old = b->nodes + found;
                uint64_t strings = b->strings_size - (old->type == NANO_ENTRY_SYMLINK ? old->size : 0);

                /* Dropping a replaced subtree only shrinks the strings, so this check is at worst
                 * conservative. */
                if (strings + target_len > NANO_MANIFEST_STRINGS_MAX)
                        return -E2BIG;
                r = reserve(b, 0, target_len);
                if (r < 0)
                        return r;
                node_set(b, found, e, target_len);
                return 0;
        }

        /* Components i..depth are missing: count them and their names, then create them. */
        missing = (uint32_t)(depth - i + 1);
        name_bytes = n;
        for (const char *q = p; path_next(&q, &c, &n);)
                name_bytes += n;
        if ((uint64_t)b->n_live + missing > NANO_MANIFEST_ENTRIES_MAX)
                return -E2BIG;
        if (b->strings_size + name_bytes + target_len > NANO_MANIFEST_STRINGS_MAX)
                return -E2BIG;
        r = reserve(b, missing, name_bytes + target_len);
        if (r < 0)
                return r;

        /* Nothing below can fail. */
        p = rest;
        while (path_next(&p, &c, &n)) {
                uint32_t idx = node_new(b, cur, c, n, key_hash(b, cur, c, n));

                if (--missing == 0)
                        node_set(b, idx, e, target_len);
                else
                        node_set_implicit_dir(b->nodes + idx);
                cur = idx;
        }
        return 0;
}

/* Finds the node at a checked path. */
static uint32_t builder_resolve(const NanoManifestBuilder *b, const char *path)
{
        const char *p = path, *c;
        uint32_t cur = 0;
        size_t n;

        while (path_next(&p, &c, &n)) {
                if (b->nodes[cur].type != NANO_ENTRY_DIRECTORY)
                        return NONE;
                cur = node_find(b, cur, c, n, key_hash(b, cur, c, n));
                if (cur == NONE)
                        return NONE;
        }
        return cur;
}

int nano_manifest_builder_link(NanoManifestBuilder *b, const char *path, const char *target)
{
        const Node *t;
        NanoEntry e;
        uint32_t idx;
        int r;

        if (!b || !path || !target)
                return -EINVAL;
        r = path_check(target);
        if (r < 0)
                return r;

        idx = builder_resolve(b, target);
        if (idx == NONE)
                return -ENOENT;
        t = b->nodes + idx;
        if (t->type != NANO_ENTRY_REGULAR)
                return -EINVAL;

        /* A copy: adding may move the node array. */
        e = (NanoEntry){
                .type = NANO_ENTRY_REGULAR,
                .mode = t->mode,
                .size = t->size,
                .mtime_sec = t->mtime_sec,
                .mtime_nsec = t->mtime_nsec,
        };
        memcpy(e.digest, t->digest, sizeof(e.digest));
        return nano_manifest_builder_add(b, path, &e);
}

typedef struct SortItem {
        const char *name;
        uint32_t len;
        uint32_t node;
} SortItem;

static int sort_item_cmp(const void *x, const void *y)
{
        const SortItem *a = x, *b = y;

        return name_cmp(a->name, a->len, b->name, b->len);
}

int nano_manifest_builder_finish(NanoManifestBuilder *b, uint8_t **ret, size_t *ret_size,
                                 uint8_t ret_digest[32])
{
        _cleanup_free_ uint32_t *out_index = NULL;
        _cleanup_free_ SortItem *order = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t strings_off, total, str = 0;
        uint32_t count, tail = 1;
        uint8_t *strings;

        if (!b || !ret || !ret_size)
                return -EINVAL;

        count = b->n_live;
        if (count > NANO_MANIFEST_ENTRIES_MAX || b->strings_size > NANO_MANIFEST_STRINGS_MAX)
                return -E2BIG;
        strings_off = NANO_MANIFEST_HEADER_SIZE + (uint64_t)NANO_MANIFEST_ENTRY_SIZE * count;
        total = (strings_off + b->strings_size + 7) & ~UINT64_C(7);
        if (total > SIZE_MAX)
                return -ENOMEM;

        order = malloc(sizeof(SortItem) * count);
        out_index = malloc(sizeof(uint32_t) * b->n_nodes);
        buf = calloc(1, (size_t)total);
        if (!order || !out_index || !buf)
                return -ENOMEM;

        memcpy(buf + H_MAGIC, NANO_MANIFEST_MAGIC, 8);
        le32_write(buf + H_N_ENTRIES, count);
        le64_write(buf + H_STRINGS_OFF, strings_off);
        le64_write(buf + H_STRINGS_SIZE, b->strings_size);
        le64_write(buf + H_TOTAL_SIZE, total);
        strings = buf + strings_off;

        /* Breadth-first: `order` is the queue and, once done, the entry order. Entry i is written as
         * it is dequeued, when its parent's index is known and its children are about to be queued,
         * which also puts the strings in entry order. */
        order[0] = (SortItem){.node = 0};
        for (uint32_t i = 0; i < tail; i++) {
                const Node *n = b->nodes + order[i].node;
                uint8_t *e = buf + NANO_MANIFEST_HEADER_SIZE + (size_t)NANO_MANIFEST_ENTRY_SIZE * i;

                /* Cannot fail unless the bookkeeping is broken; then don't overrun. */
                if (n->name_len + (n->type == NANO_ENTRY_SYMLINK ? n->size : 0) > b->strings_size - str)
                        return -EIO;

                out_index[order[i].node] = i;
                le32_write(e + E_PARENT, i == 0 ? 0 : out_index[n->parent]);
                le32_write(e + E_NAME_OFF, (uint32_t)str);
                le16_write(e + E_NAME_LEN, n->name_len);
                e[E_TYPE] = n->type;
                le32_write(e + E_MODE, n->mode);
                le64_write(e + E_MTIME_SEC, (uint64_t)n->mtime_sec);
                le32_write(e + E_MTIME_NSEC, n->mtime_nsec);
                memcpy(strings + str, b->arena + n->name_off, n->name_len);
                str += n->name_len;

                switch (n->type) {
                case NANO_ENTRY_REGULAR:
                        le64_write(e + E_SIZE, n->size);
                        memcpy(e + E_DIGEST, n->digest, 32);
                        break;
                case NANO_ENTRY_SYMLINK:
                        le64_write(e + E_SIZE, n->size);
                        le32_write(e + E_A, (uint32_t)str);
                        le32_write(e + E_B, (uint32_t)n->size);
                        memcpy(strings + str, b->arena + n->target_off, n->size);
                        str += n->size;
                        break;
                case NANO_ENTRY_DIRECTORY: {
                        uint32_t first = tail;

                        for (uint32_t c = n->first_child; c != NONE; c = b->nodes[c].next_sibling) {
                                if (tail >= count)
                                        return -EIO;
                                order[tail++] = (SortItem){
                                        .name = b->arena + b->nodes[c].name_off,
                                        .len = b->nodes[c].name_len,
                                        .node = c,
                                };
                        }
                        qsort(order + first, tail - first, sizeof(SortItem), sort_item_cmp);
                        le64_write(e + E_SIZE, tail - first);
                        le32_write(e + E_A, first);
                        le32_write(e + E_B, tail - first);
                        break;
                }
                default:
                        return -EIO;
                }
        }
        if (tail != count || str != b->strings_size)
                return -EIO;

        if (ret_digest && EVP_Digest(buf, (size_t)total, ret_digest, NULL, EVP_sha256(), NULL) != 1)
                return -EIO;

        *ret = TAKE_PTR(buf);
        *ret_size = (size_t)total;
        return 0;
}

/* ---- Reader. */

struct NanoManifest {
        const uint8_t *data;
        size_t size;
        const uint8_t *strings;
        uint32_t n_entries;
        void *map; /* owned mapping, or NULL when the buffer is borrowed */
        size_t map_size;
};

static inline const uint8_t *entry_at(const uint8_t *data, uint32_t i)
{
        return data + NANO_MANIFEST_HEADER_SIZE + (size_t)NANO_MANIFEST_ENTRY_SIZE * i;
}

static bool all_zero(const uint8_t *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (p[i] != 0)
                        return false;
        return true;
}

/* Checks every rule of doc/formats.md in one pass over the entries. Anything not pinned down by
 * these rules would allow a second encoding of the same tree, hence a second id for it. */
static int validate(const uint8_t *d, size_t size)
{
        uint64_t strings_off, strings_size, total, next_child = 1, str = 0;
        const uint8_t *strings;
        uint32_t n;

        if (!d || size < NANO_MANIFEST_HEADER_SIZE)
                return -EBADMSG;
        if (memcmp(d + H_MAGIC, NANO_MANIFEST_MAGIC, 8) != 0)
                return -EBADMSG;
        n = le32_read(d + H_N_ENTRIES);
        if (n == 0 || n > NANO_MANIFEST_ENTRIES_MAX)
                return -EBADMSG;
        if (le32_read(d + H_FLAGS) != 0)
                return -EBADMSG;
        /* With n and strings_size bounded first, none of the sums below can overflow. */
        strings_off = le64_read(d + H_STRINGS_OFF);
        if (strings_off != NANO_MANIFEST_HEADER_SIZE + (uint64_t)NANO_MANIFEST_ENTRY_SIZE * n)
                return -EBADMSG;
        strings_size = le64_read(d + H_STRINGS_SIZE);
        if (strings_size > NANO_MANIFEST_STRINGS_MAX)
                return -EBADMSG;
        total = le64_read(d + H_TOTAL_SIZE);
        if (total != ((strings_off + strings_size + 7) & ~UINT64_C(7)) || total != (uint64_t)size)
                return -EBADMSG;
        if (!all_zero(d + H_RESERVED, NANO_MANIFEST_HEADER_SIZE - H_RESERVED))
                return -EBADMSG;
        strings = d + strings_off;
        if (!all_zero(strings + strings_size, (size_t)(total - strings_off - strings_size)))
                return -EBADMSG;

        for (uint32_t i = 0; i < n; i++) {
                const uint8_t *e = entry_at(d, i);
                uint32_t parent = le32_read(e + E_PARENT);
                uint32_t name_len = le16_read(e + E_NAME_LEN);
                uint32_t a = le32_read(e + E_A), b = le32_read(e + E_B);
                uint64_t esize = le64_read(e + E_SIZE);
                const char *name;

                if (e[E_RESERVED0] != 0 || le32_read(e + E_RESERVED1) != 0)
                        return -EBADMSG;
                if (le32_read(e + E_MODE) > 0777 || le32_read(e + E_MTIME_NSEC) >= NSEC_PER_SEC)
                        return -EBADMSG;

                /* Strings come in entry order with no gaps, so each offset is already known. */
                if (le32_read(e + E_NAME_OFF) != str || name_len > strings_size - str)
                        return -EBADMSG;
                name = (const char *)strings + str;
                str += name_len;

                if (i == 0) {
                        if (parent != 0 || name_len != 0 || e[E_TYPE] != NANO_ENTRY_DIRECTORY)
                                return -EBADMSG;
                } else {
                        const uint8_t *pe;
                        uint32_t pa, pb;

                        if (!name_is_valid(name, name_len))
                                return -EBADMSG;
                        /* The parent comes earlier and was checked; its range of children, fixed by
                         * the running counter, is the only one that can contain i. */
                        if (parent >= i)
                                return -EBADMSG;
                        pe = entry_at(d, parent);
                        if (pe[E_TYPE] != NANO_ENTRY_DIRECTORY)
                                return -EBADMSG;
                        pa = le32_read(pe + E_A);
                        pb = le32_read(pe + E_B);
                        if (i < pa || i - pa >= pb)
                                return -EBADMSG;
                        /* Siblings are contiguous: strictly increasing names exclude duplicates. */
                        if (i > pa) {
                                const uint8_t *prev = entry_at(d, i - 1);

                                if (name_cmp((const char *)strings + le32_read(prev + E_NAME_OFF),
                                             le16_read(prev + E_NAME_LEN), name, name_len) >= 0)
                                        return -EBADMSG;
                        }
                }

                switch (e[E_TYPE]) {
                case NANO_ENTRY_REGULAR:
                        if (a != 0 || b != 0)
                                return -EBADMSG;
                        break;
                case NANO_ENTRY_DIRECTORY:
                        if (!all_zero(e + E_DIGEST, 32))
                                return -EBADMSG;
                        if (a != next_child || b > n - next_child || esize != b)
                                return -EBADMSG;
                        next_child += b;
                        break;
                case NANO_ENTRY_SYMLINK:
                        if (!all_zero(e + E_DIGEST, 32))
                                return -EBADMSG;
                        if (a != str || b == 0 || b > NANO_SYMLINK_MAX || esize != b ||
                            b > strings_size - str)
                                return -EBADMSG;
                        if (memchr(strings + str, '\0', b))
                                return -EBADMSG;
                        str += b;
                        break;
                default:
                        return -EBADMSG;
                }
        }

        if (next_child != n || str != strings_size)
                return -EBADMSG;
        return 0;
}

int nano_manifest_parse(const void *buf, size_t size, NanoManifest **ret)
{
        NanoManifest *m;
        int r;

        if (!ret)
                return -EINVAL;
        r = validate(buf, size);
        if (r < 0)
                return r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->data = buf;
        m->size = size;
        m->n_entries = le32_read(m->data + H_N_ENTRIES);
        m->strings = m->data + le64_read(m->data + H_STRINGS_OFF);
        *ret = m;
        return 0;
}

int nano_manifest_map_at(int dirfd, const char *path, uint64_t size_max, void **ret_map, size_t *ret_size)
{
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        void *map;

        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        /* Checked before mmap: an empty mapping is an error, a huge one a waste. */
        if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > size_max)
                return -EBADMSG;
        /* Manifests are immutable once stored (a damaged one is replaced by a rename, never rewritten
         * in place), so the mapping cannot shrink under us, which would turn reads into SIGBUS. Every
         * byte is read at once (validated, decoded or hashed): populated, the whole file is asked of
         * the disk in large requests instead of one readahead window per page fault. */
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (map == MAP_FAILED)
                return -errno;
        *ret_map = map;
        *ret_size = (size_t)st.st_size;
        return 0;
}

int nano_manifest_open_at(int dirfd, const char *path, NanoManifest **ret)
{
        const uint64_t size_max = NANO_MANIFEST_HEADER_SIZE +
                                  (uint64_t)NANO_MANIFEST_ENTRY_SIZE * NANO_MANIFEST_ENTRIES_MAX +
                                  NANO_MANIFEST_STRINGS_MAX + 7;
        size_t size;
        void *map;
        int r;

        if (!path || !ret)
                return -EINVAL;
        r = nano_manifest_map_at(dirfd, path, size_max, &map, &size);
        if (r < 0)
                return r;
        r = nano_manifest_adopt(map, size, size, ret);
        if (r < 0)
                (void)munmap(map, size);
        return r;
}

int nano_manifest_adopt(void *map, size_t map_size, size_t size, NanoManifest **ret)
{
        NanoManifest *m;
        int r;

        if (!map || size > map_size)
                return -EINVAL;
        r = nano_manifest_parse(map, size, &m);
        if (r < 0)
                return r;
        m->map = map;
        m->map_size = map_size;
        *ret = m;
        return 0;
}

NanoManifest *nano_manifest_free(NanoManifest *m)
{
        if (!m)
                return NULL;
        if (m->map)
                (void)munmap(m->map, m->map_size);
        free(m);
        return NULL;
}

uint32_t nano_manifest_count(const NanoManifest *m)
{
        return m ? m->n_entries : 0;
}

const void *nano_manifest_data(const NanoManifest *m, size_t *ret_size)
{
        if (ret_size)
                *ret_size = m ? m->size : 0;
        return m ? m->data : NULL;
}

void nano_manifest_entry(const NanoManifest *m, uint32_t idx, NanoEntry *ret)
{
        const uint8_t *e;

        *ret = (NanoEntry){};
        if (!m || idx >= m->n_entries)
                return;

        e = entry_at(m->data, idx);
        ret->type = (NanoEntryType)e[E_TYPE];
        ret->mode = le32_read(e + E_MODE);
        ret->size = le64_read(e + E_SIZE);
        ret->mtime_sec = (int64_t)le64_read(e + E_MTIME_SEC);
        ret->mtime_nsec = le32_read(e + E_MTIME_NSEC);
        ret->parent = le32_read(e + E_PARENT);
        ret->name = (const char *)m->strings + le32_read(e + E_NAME_OFF);
        ret->name_len = le16_read(e + E_NAME_LEN);
        switch (ret->type) {
        case NANO_ENTRY_REGULAR:
                memcpy(ret->digest, e + E_DIGEST, 32);
                break;
        case NANO_ENTRY_DIRECTORY:
                ret->first_child = le32_read(e + E_A);
                break;
        case NANO_ENTRY_SYMLINK:
                ret->target = (const char *)m->strings + le32_read(e + E_A);
                break;
        }
}

int nano_manifest_lookup(const NanoManifest *m, uint32_t dir, const char *name, size_t len, uint32_t *ret)
{
        const uint8_t *e;
        uint32_t lo, hi;

        if (!m || dir >= m->n_entries || (!name && len > 0))
                return -EINVAL;
        e = entry_at(m->data, dir);
        if (e[E_TYPE] != NANO_ENTRY_DIRECTORY)
                return -ENOTDIR;

        /* The parser guarantees [a, a + b) is within the entries and sorted. */
        lo = le32_read(e + E_A);
        hi = lo + le32_read(e + E_B);
        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                const uint8_t *c = entry_at(m->data, mid);
                int r = name_cmp((const char *)m->strings + le32_read(c + E_NAME_OFF),
                                 le16_read(c + E_NAME_LEN), name, len);

                if (r == 0) {
                        if (ret)
                                *ret = mid;
                        return 0;
                }
                if (r < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -ENOENT;
}

int nano_manifest_resolve(const NanoManifest *m, const char *path, uint32_t *ret)
{
        const char *p = path, *c, *end = path;
        uint32_t cur = 0;
        size_t n;
        int r;

        if (!m || !path)
                return -EINVAL;

        /* Leading, repeated and trailing slashes and "." are harmless; ".." is refused rather than
         * guessed at, since without following symlinks it would not mean what the kernel means. */
        while (path_next(&p, &c, &n)) {
                if (n == 2 && c[0] == '.' && c[1] == '.')
                        return -EINVAL;
                if (n > NANO_NAME_MAX)
                        return -ENAMETOOLONG;
                r = nano_manifest_lookup(m, cur, c, n, &cur);
                if (r < 0)
                        return r;
                end = c + n;
        }
        /* As in POSIX, "file/" and "file/." name a directory. */
        if (cur != 0 && *end != '\0' && entry_at(m->data, cur)[E_TYPE] != NANO_ENTRY_DIRECTORY)
                return -ENOTDIR;

        if (ret)
                *ret = cur;
        return 0;
}

int nano_manifest_path(const NanoManifest *m, uint32_t idx, char *buf, size_t size)
{
        size_t w;

        if (!m || !buf || idx >= m->n_entries)
                return -EINVAL;
        if (size == 0)
                return -ENAMETOOLONG;

        /* Fill from the end while climbing. Each step takes at least one byte of the buffer, so the walk
         * is bounded by its size whatever the depth of the tree; parents precede children, so it ends. */
        w = size - 1;
        buf[w] = '\0';
        while (idx != 0) {
                const uint8_t *e = entry_at(m->data, idx);
                size_t len = le16_read(e + E_NAME_LEN);

                if (len + (w < size - 1) > w)
                        return -ENAMETOOLONG;
                if (w < size - 1)
                        buf[--w] = '/';
                w -= len;
                memcpy(buf + w, m->strings + le32_read(e + E_NAME_OFF), len);
                idx = le32_read(e + E_PARENT);
        }
        memmove(buf, buf + w, size - w);
        return 0;
}
