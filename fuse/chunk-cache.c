/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "chunk-cache.h"
#include "hashmap.h"
#include "macros.h"

/* Enough shards that 16-64 threads rarely contend, few enough that each shard's share of a small
 * budget still holds several chunks. */
#define N_SHARDS 16u

/* A chunk larger than a shard's share (--chunk-size 8M or 16M with the default 64M cache) would
 * overfill any shard: a shard keeps the chunk it filled last, so 16 shards held 16 of them (256 MiB).
 * Such chunks go to one more shard, LARGE, whose budget is what the others leave of the cache's and
 * which keeps at least its newest chunk: dropped at once, that chunk would be decompressed again for
 * each of the kernel's reads in it (a sequential read of 16 MiB chunks: 0.2 s -> 3.3 s per 100 MB).
 * So memory is the budget plus one such chunk, plus the chunks readers hold. */
#define LARGE N_SHARDS

/* Whole-chunk buffers kept for reuse once their chunk is freed. A chunk buffer is larger than
 * glibc's mmap threshold (set low by nano_fuse_new() so that freed buffers go back to the system):
 * each new one would be an mmap, a page fault per 4 KiB as it is filled, and an munmap that stops
 * every thread for a TLB shootdown, a third of the work of a miss. Reusing a few of them costs that
 * memory, always resident, so the pool is bounded by bytes, not only by count (32 chunks of 16 MiB
 * were 512 MiB): to one shard's share of the budget, which at the default 64M is the 32 buffers of
 * 128 KiB chunks measured, and at least POOL_BYTES_MIN, so that a small or no cache keeps those too.
 * An empty pool takes one buffer whatever its size: misses one after the other (a single reader)
 * reuse it, for the memory of one chunk. */
#define POOL_MAX 32u
#define POOL_BYTES_MIN (UINT64_C(4) << 20)

enum {
        CHUNK_FILLING = 1,
        CHUNK_READY = 0,
        /* < 0: the fill failed with that -errno */
};

struct Chunk {
        HashLink link;
        uint8_t digest[32];
        uint64_t idx;
        unsigned shift;
        unsigned shard;
        unsigned n_ref;  /* under the shard lock: one for the table while cached, one per holder */
        int state;       /* CHUNK_FILLING, CHUNK_READY or -errno */
        bool cached;     /* in the table, and (once READY) in the CLOCK ring */
        bool referenced; /* CLOCK bit: set on each hit, cleared as the hand passes */
        Chunk *prev, *next;
        uint8_t *data;
        size_t len;
        unsigned data_shift; /* data is a whole chunk's buffer of 1 << data_shift bytes; 0 if not */
};

typedef struct Shard {
        pthread_mutex_t lock;
        pthread_cond_t filled; /* broadcast when any fill of this shard ends */
        HashTable table;
        Chunk *hand;   /* the CLOCK ring of READY cached chunks; NULL when empty */
        Chunk *newest; /* LARGE: the chunk filled last, kept whatever the budget */
        uint64_t bytes, budget;
} __attribute__((aligned(64))) Shard;

struct ChunkCache {
        Shard shards[N_SHARDS + 1]; /* and LARGE */
        uint64_t budget;
        atomic_uint_fast64_t hits, misses, waits, errors;
        /* The bytes of the N_SHARDS shards and of LARGE, read without their locks to size LARGE. */
        atomic_uint_fast64_t small_bytes, large_bytes;

        pthread_mutex_t pool_lock; /* taken last, under a shard lock or none */
        struct {
                uint8_t *data;
                unsigned shift;
        } pool[POOL_MAX];
        unsigned n_pool;
        uint64_t pool_bytes, pool_budget;
};

static uint8_t *buffer_get(ChunkCache *c, unsigned shift)
{
        uint8_t *data = NULL;

        pthread_mutex_lock(&c->pool_lock);
        for (unsigned i = c->n_pool; i > 0; i--)
                if (c->pool[i - 1].shift == shift) {
                        data = c->pool[i - 1].data;
                        c->pool[i - 1] = c->pool[--c->n_pool];
                        c->pool_bytes -= (uint64_t)1 << shift;
                        break;
                }
        pthread_mutex_unlock(&c->pool_lock);
        return data ?: malloc((size_t)1 << shift);
}

static void buffer_put(ChunkCache *c, uint8_t *data, unsigned shift)
{
        if (!data)
                return;
        if (shift > 0) {
                pthread_mutex_lock(&c->pool_lock);
                if (c->n_pool < POOL_MAX &&
                    (c->pool_bytes + ((uint64_t)1 << shift) <= c->pool_budget || c->n_pool == 0)) {
                        c->pool[c->n_pool].data = data;
                        c->pool[c->n_pool].shift = shift;
                        c->n_pool++;
                        c->pool_bytes += (uint64_t)1 << shift;
                        data = NULL;
                }
                pthread_mutex_unlock(&c->pool_lock);
        }
        free(data);
}

const uint8_t *chunk_data(const Chunk *k)
{
        return k->data;
}

size_t chunk_size(const Chunk *k)
{
        return k->len;
}

int chunk_cache_new(uint64_t budget, ChunkCache **ret)
{
        ChunkCache *c = calloc(1, sizeof *c);

        if (!c)
                return -ENOMEM;
        c->budget = budget;
        c->pool_budget = MAX(budget / N_SHARDS, POOL_BYTES_MIN);
        pthread_mutex_init(&c->pool_lock, NULL);
        for (unsigned i = 0; i <= LARGE; i++) {
                pthread_mutex_init(&c->shards[i].lock, NULL);
                pthread_cond_init(&c->shards[i].filled, NULL);
                c->shards[i].budget = budget / N_SHARDS; /* LARGE's is set at each eviction */
        }
        *ret = c;
        return 0;
}

static void chunk_free(ChunkCache *c, Chunk *k)
{
        buffer_put(c, k->data, k->data_shift);
        free(k);
}

static void free_link(HashLink *l, void *userdata)
{
        chunk_free(userdata, container_of(l, Chunk, link));
}

ChunkCache *chunk_cache_free(ChunkCache *c)
{
        if (!c)
                return NULL;
        /* Every holder is gone by now (the session has ended): what is left is the table's. */
        for (unsigned i = 0; i <= LARGE; i++) {
                hash_table_done(&c->shards[i].table, free_link, c);
                pthread_mutex_destroy(&c->shards[i].lock);
                pthread_cond_destroy(&c->shards[i].filled);
        }
        for (unsigned i = 0; i < c->n_pool; i++)
                free(c->pool[i].data);
        pthread_mutex_destroy(&c->pool_lock);
        free(c);
        return NULL;
}

static uint64_t chunk_hash(const uint8_t digest[32], unsigned shift, uint64_t idx)
{
        /* The digest is a sha256: any 8 of its bytes are already uniformly distributed. */
        return le64_read(digest) ^ ((idx + 1) * UINT64_C(0x9e3779b97f4a7c15)) ^ shift;
}

static void account(ChunkCache *c, Shard *s, uint64_t add, uint64_t sub)
{
        s->bytes = s->bytes + add - sub;
        atomic_uint_fast64_t *total = s == &c->shards[LARGE] ? &c->large_bytes : &c->small_bytes;
        atomic_fetch_add_explicit(total, add, memory_order_relaxed);
        atomic_fetch_sub_explicit(total, sub, memory_order_relaxed);
}

static void unref_locked(ChunkCache *c, Chunk *k)
{
        if (--k->n_ref == 0)
                chunk_free(c, k);
}

static void ring_insert(Shard *s, Chunk *k)
{
        /* Just behind the hand: a new chunk gets a whole turn of the clock before it may go. */
        if (!s->hand) {
                k->prev = k->next = k;
                s->hand = k;
                return;
        }
        k->next = s->hand;
        k->prev = s->hand->prev;
        k->prev->next = k;
        s->hand->prev = k;
}

static void ring_remove(Shard *s, Chunk *k)
{
        if (k->next == k)
                s->hand = NULL;
        else {
                k->prev->next = k->next;
                k->next->prev = k->prev;
                if (s->hand == k)
                        s->hand = k->next;
        }
        k->prev = k->next = NULL;
}

static void evict_locked(ChunkCache *c, Shard *s, Chunk *keep)
{
        if (s == &c->shards[LARGE]) {
                /* What the other shards leave of the budget, read now: they do not wait for LARGE. */
                uint64_t small = atomic_load_explicit(&c->small_bytes, memory_order_relaxed);
                s->budget = c->budget > small ? c->budget - small : 0;
        }
        /* Two turns of the hand clear every CLOCK bit, so this ends even if all chunks are hot. A
         * budget of 0 means "no cache": then even the chunk just filled goes (its reader holds it). */
        for (size_t steps = 2 * s->table.n + 2; s->bytes > s->budget && s->hand && steps > 0; steps--) {
                Chunk *k = s->hand;

                if ((k == keep && c->budget > 0) || k->referenced) {
                        k->referenced = false;
                        if (k == keep && c->budget > 0 && k->next == k)
                                break; /* only the chunk to keep is left */
                        s->hand = k->next; /* a hot chunk left alone goes at the next step */
                        continue;
                }
                ring_remove(s, k);
                hash_table_remove(&s->table, &k->link);
                k->cached = false;
                account(c, s, 0, k->len);
                if (s->newest == k)
                        s->newest = NULL;
                unref_locked(c, k);
        }
}

/* The other shards give LARGE's budget back as they grow: LARGE shrinks to what they leave, but for
 * its newest chunk. Called with no lock held (a shard's lock is never taken under another's). */
static void large_trim(ChunkCache *c)
{
        Shard *s = &c->shards[LARGE];

        if (atomic_load_explicit(&c->large_bytes, memory_order_relaxed) +
                    atomic_load_explicit(&c->small_bytes, memory_order_relaxed) <=
            c->budget)
                return;
        pthread_mutex_lock(&s->lock);
        evict_locked(c, s, s->newest);
        pthread_mutex_unlock(&s->lock);
}

int chunk_cache_get(ChunkCache *c, NanoBlob *b, const uint8_t digest[32], uint64_t idx, Chunk **ret)
{
        unsigned shift = nano_blob_chunk_shift(b);
        uint64_t h = chunk_hash(digest, shift, idx);
        /* With no cache (budget 0), every chunk exceeds a share: they stay spread over the shards. */
        bool large = c->budget > 0 && ((uint64_t)1 << shift) > c->budget / N_SHARDS;
        Shard *s = &c->shards[large ? LARGE : (h >> 32) % N_SHARDS];
        uint8_t *data;
        ssize_t n;
        Chunk *k;
        int r;

        pthread_mutex_lock(&s->lock);
        HASH_TABLE_FOREACH (l, &s->table, h) {
                k = container_of(l, Chunk, link);
                if (k->idx != idx || k->shift != shift || memcmp(k->digest, digest, 32) != 0)
                        continue;
                k->n_ref++;
                k->referenced = true;
                if (k->state == CHUNK_FILLING) {
                        atomic_fetch_add_explicit(&c->waits, 1, memory_order_relaxed);
                        /* Bounded: the filler is decompressing one chunk from a local file. */
                        while (k->state == CHUNK_FILLING)
                                pthread_cond_wait(&s->filled, &s->lock);
                }
                r = k->state;
                if (r < 0)
                        unref_locked(c, k);
                pthread_mutex_unlock(&s->lock);
                if (r < 0)
                        return r;
                atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
                *ret = k;
                return 0;
        }

        /* A miss: publish a FILLING placeholder so that concurrent readers of this chunk wait for our
         * decompression instead of doing their own, then decompress without the lock. */
        k = calloc(1, sizeof *k);
        if (!k) {
                pthread_mutex_unlock(&s->lock);
                return -ENOMEM;
        }
        memcpy(k->digest, digest, 32);
        k->idx = idx;
        k->shift = shift;
        k->shard = (unsigned)(s - c->shards);
        k->state = CHUNK_FILLING;
        k->n_ref = 1;
        if (hash_table_add(&s->table, &k->link, h) >= 0) {
                k->cached = true;
                k->n_ref++;
        }
        pthread_mutex_unlock(&s->lock);
        atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed);

        unsigned data_shift = shift;
        data = buffer_get(c, shift);
        n = data ? nano_blob_read_chunk(b, idx, data) : -ENOMEM;
        if (n > 0 && (size_t)n < ((size_t)1 << shift) / 2) {
                /* A short last chunk (small files): do not keep the whole chunk's allocation. */
                uint8_t *p = malloc((size_t)n);
                if (p) {
                        memcpy(p, data, (size_t)n);
                        buffer_put(c, data, shift);
                        data = p;
                        data_shift = 0;
                }
        }

        pthread_mutex_lock(&s->lock);
        if (n < 0) {
                buffer_put(c, data, data_shift);
                k->state = (int)n;
                if (k->cached) {
                        hash_table_remove(&s->table, &k->link);
                        k->cached = false;
                        k->n_ref--;
                }
        } else {
                k->data = data;
                k->data_shift = data_shift;
                k->len = (size_t)n;
                k->state = CHUNK_READY;
                if (k->cached) {
                        ring_insert(s, k);
                        account(c, s, k->len, 0);
                        if (large)
                                s->newest = k;
                        evict_locked(c, s, k);
                }
        }
        pthread_cond_broadcast(&s->filled);
        r = k->state;
        if (r < 0)
                unref_locked(c, k);
        pthread_mutex_unlock(&s->lock);
        if (r < 0) {
                atomic_fetch_add_explicit(&c->errors, 1, memory_order_relaxed);
                return r;
        }
        if (!large && atomic_load_explicit(&c->large_bytes, memory_order_relaxed) > 0)
                large_trim(c);
        *ret = k;
        return 0;
}

void chunk_unref(ChunkCache *c, Chunk *k)
{
        Shard *s;

        if (!k)
                return;
        s = &c->shards[k->shard];
        pthread_mutex_lock(&s->lock);
        unref_locked(c, k);
        pthread_mutex_unlock(&s->lock);
}

void chunk_cache_stats(ChunkCache *c, ChunkCacheStats *ret)
{
        *ret = (ChunkCacheStats){
                .hits = atomic_load(&c->hits),
                .misses = atomic_load(&c->misses),
                .waits = atomic_load(&c->waits),
                .errors = atomic_load(&c->errors),
                .budget = c->budget,
        };
        for (unsigned i = 0; i <= LARGE; i++) {
                pthread_mutex_lock(&c->shards[i].lock);
                ret->bytes += c->shards[i].bytes;
                pthread_mutex_unlock(&c->shards[i].lock);
        }
        pthread_mutex_lock(&c->pool_lock);
        ret->pooled = c->pool_bytes;
        pthread_mutex_unlock(&c->pool_lock);
}
