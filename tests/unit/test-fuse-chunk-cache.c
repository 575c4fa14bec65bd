/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The mount's chunk cache (fuse/chunk-cache.c): what it keeps stays within its budget plus one chunk
 * larger than a shard's share, whatever the chunk size; its buffer pool is bounded by bytes. Sizes are
 * scaled down: a 1 MiB budget with 256 KiB chunks is the 64M cache with 16 MiB chunks. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "blob.h"
#include "chunk-cache.h"
#include "macros.h"
#include "util.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)

typedef struct TestBlob {
        NanoBlob *blob;
        uint8_t digest[32]; /* the cache's key; any value unique to the blob */
        uint8_t *data;
        unsigned shift;
        size_t n_chunks;
} TestBlob;

static uint64_t rng_next(uint64_t *s)
{
        /* xorshift64*: deterministic, so a failure reproduces. */
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        return *s * UINT64_C(2685821657736338717);
}

/* A blob of n_chunks whole chunks of 1 << shift bytes, compressible, each chunk its own content. */
static void blob_make(TestBlob *t, unsigned shift, size_t n_chunks, uint64_t seed)
{
        _cleanup_(nano_chunk_compressor_freep) NanoChunkCompressor *c = NULL;
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        size_t chunk = (size_t)1 << shift, size = chunk * n_chunks;
        uint64_t s = seed | 1;
        int fd = memfd_create("test-chunk-cache", MFD_CLOEXEC);

        assert_true(fd >= 0);
        *t = (TestBlob){ .shift = shift, .n_chunks = n_chunks };
        t->data = malloc(size);
        assert_non_null(t->data);
        for (size_t i = 0; i < size; i++)
                t->data[i] = (uint8_t)(i % 61 == 0 ? rng_next(&s) : 'a' + i % 23);
        for (size_t i = 0; i < 32; i++)
                t->digest[i] = (uint8_t)rng_next(&s);

        assert_int_equal(nano_chunk_compressor_new(NANO_BLOB_LEVEL_DEFAULT, &c), 0);
        assert_int_equal(nano_blob_writer_new(fd, shift, &w), 0);
        for (size_t off = 0; off < size; off += chunk)
                assert_int_equal(nano_blob_writer_add_chunk(w, c, t->data + off, chunk), 0);
        assert_true(nano_blob_writer_finish(w) > 0);
        assert_int_equal(nano_blob_open_fd(fd, &t->blob), 0);
}

static void blob_done(TestBlob *t)
{
        nano_blob_free(t->blob);
        free(t->data);
}

/* Gets chunk idx, checks its content; returns it referenced. */
static Chunk *get(ChunkCache *c, TestBlob *t, uint64_t idx)
{
        size_t chunk = (size_t)1 << t->shift;
        Chunk *k = NULL;

        assert_int_equal(chunk_cache_get(c, t->blob, t->digest, idx, &k), 0);
        assert_int_equal(chunk_size(k), chunk);
        assert_memory_equal(chunk_data(k), t->data + idx * chunk, chunk);
        return k;
}

static void get_put(ChunkCache *c, TestBlob *t, uint64_t idx)
{
        chunk_unref(c, get(c, t, idx));
}

static ChunkCacheStats stats(ChunkCache *c)
{
        ChunkCacheStats s;
        chunk_cache_stats(c, &s);
        return s;
}

/* The default: 128 KiB chunks in a 64M cache are kept, and read again from it. */
static void test_default_chunks_kept(void **state)
{
        ChunkCache *c = NULL;
        TestBlob t;

        blob_make(&t, 17, 40, 1);
        assert_int_equal(chunk_cache_new(64 * MiB, &c), 0);
        for (uint64_t i = 0; i < t.n_chunks; i++)
                get_put(c, &t, i);
        for (uint64_t i = 0; i < t.n_chunks; i++)
                get_put(c, &t, i);
        ChunkCacheStats s = stats(c);
        assert_int_equal(s.misses, t.n_chunks);
        assert_int_equal(s.hits, t.n_chunks);
        assert_int_equal(s.bytes, t.n_chunks * 128 * KiB);
        chunk_cache_free(c);
        blob_done(&t);
}

/* Chunks larger than a shard's share: the cache keeps up to its budget of them and one more at most,
 * whatever the order of the reads, and always the newest (the next reads of a sequential reader). */
static void test_large_chunks_bounded(void **state)
{
        const uint64_t budget = 1 * MiB, chunk = 256 * KiB;
        ChunkCache *c = NULL;
        uint64_t s = 7;
        TestBlob t;

        blob_make(&t, 18, 16, 2);
        assert_int_equal(chunk_cache_new(budget, &c), 0);
        for (int i = 0; i < 200; i++) {
                uint64_t idx = rng_next(&s) % t.n_chunks, hits;
                get_put(c, &t, idx);
                assert_true(stats(c).bytes <= budget + chunk);
                hits = stats(c).hits;
                get_put(c, &t, idx); /* the chunk just read is there */
                assert_int_equal(stats(c).hits, hits + 1);
        }
        /* The budget is used, not only the one chunk. */
        assert_true(stats(c).bytes >= budget - chunk);

        /* Chunks held by readers are not counted once evicted, and freed at their last unref. */
        Chunk *held[8];
        for (uint64_t i = 0; i < ELEMENTSOF(held); i++) {
                held[i] = get(c, &t, i);
                assert_true(stats(c).bytes <= budget + chunk);
        }
        for (size_t i = 0; i < ELEMENTSOF(held); i++)
                chunk_unref(c, held[i]);
        assert_true(stats(c).bytes <= budget + chunk);
        chunk_cache_free(c);
        blob_done(&t);
}

/* Large chunks use what the other shards leave, and give it back as those fill: the cache stays within
 * its budget plus one large chunk, the newest, which stays. */
static void test_large_chunks_give_way(void **state)
{
        const uint64_t budget = 2 * MiB, large = 256 * KiB;
        ChunkCache *c = NULL;
        TestBlob a, b;

        blob_make(&a, 18, 16, 3); /* 256 KiB chunks: larger than a share (128 KiB) */
        blob_make(&b, 16, 256, 4); /* 64 KiB chunks: the shards' own */
        assert_int_equal(chunk_cache_new(budget, &c), 0);
        for (uint64_t i = 0; i < a.n_chunks; i++)
                get_put(c, &a, i);
        assert_true(stats(c).bytes >= budget - large && stats(c).bytes <= budget + large);
        for (int round = 0; round < 2; round++)
                for (uint64_t i = 0; i < b.n_chunks; i++) {
                        get_put(c, &b, i);
                        assert_true(stats(c).bytes <= budget + large);
                }
        uint64_t hits = stats(c).hits;
        get_put(c, &a, a.n_chunks - 1);
        assert_int_equal(stats(c).hits, hits + 1);
        chunk_cache_free(c);
        blob_done(&a);
        blob_done(&b);
}

/* The pool of free chunk buffers is bounded by bytes (4 MiB for a small cache) and by count, but
 * takes one buffer of any size. A cache of size 0 keeps no chunk once its readers are done. */
static void test_pool_bounded(void **state)
{
        static const struct {
                unsigned shift;
                size_t n;
                uint64_t pooled;
        } cases[] = {
                { 20, 12, 4 * MiB }, /* 4 buffers of 1 MiB */
                { 17, 40, 4 * MiB }, /* 32 of 128 KiB */
                { 23, 3, 8 * MiB },  /* one of 8 MiB */
        };

        for (size_t j = 0; j < ELEMENTSOF(cases); j++) {
                ChunkCache *c = NULL;
                Chunk *held[40];
                TestBlob t;

                blob_make(&t, cases[j].shift, cases[j].n, 5 + j);
                assert_int_equal(chunk_cache_new(0, &c), 0);
                for (uint64_t i = 0; i < t.n_chunks; i++)
                        held[i] = get(c, &t, i);
                for (uint64_t i = 0; i < t.n_chunks; i++)
                        chunk_unref(c, held[i]);
                ChunkCacheStats s = stats(c);
                assert_int_equal(s.bytes, 0);
                assert_int_equal(s.pooled, cases[j].pooled);
                get_put(c, &t, 0);
                assert_int_equal(stats(c).misses, t.n_chunks + 1);
                chunk_cache_free(c);
                blob_done(&t);
        }
}

typedef struct Reader {
        ChunkCache *c;
        TestBlob *blobs;
        uint64_t seed;
} Reader;

static void *reader(void *p)
{
        Reader *r = p;

        for (int i = 0; i < 300; i++) {
                TestBlob *t = &r->blobs[rng_next(&r->seed) % 2];
                get_put(r->c, t, rng_next(&r->seed) % t->n_chunks);
        }
        return NULL;
}

/* Threads reading large and small chunks at once get the right bytes, and leave the cache within
 * its bound. */
static void test_concurrent(void **state)
{
        const uint64_t budget = 1 * MiB;
        ChunkCache *c = NULL;
        TestBlob blobs[2];
        pthread_t th[4];
        Reader r[4];

        blob_make(&blobs[0], 18, 16, 8);
        blob_make(&blobs[1], 15, 128, 9);
        assert_int_equal(chunk_cache_new(budget, &c), 0);
        for (size_t i = 0; i < ELEMENTSOF(th); i++) {
                r[i] = (Reader){ .c = c, .blobs = blobs, .seed = 11 + i };
                assert_int_equal(pthread_create(&th[i], NULL, reader, &r[i]), 0);
        }
        for (size_t i = 0; i < ELEMENTSOF(th); i++)
                assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_true(stats(c).bytes <= budget + 256 * KiB);
        chunk_cache_free(c);
        blob_done(&blobs[0]);
        blob_done(&blobs[1]);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_default_chunks_kept),  cmocka_unit_test(test_large_chunks_bounded),
                cmocka_unit_test(test_large_chunks_give_way), cmocka_unit_test(test_pool_bounded),
                cmocka_unit_test(test_concurrent),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
