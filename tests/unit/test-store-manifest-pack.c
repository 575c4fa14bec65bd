/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Packed manifests (store/manifest-pack.c): round trips with and without a base, chains, and every
 * kind of malformed input, each of which must give -EBADMSG and name the file at fault, never a
 * crash, wrong bytes or unbounded memory. The "store" is a table in memory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <xxhash.h>
#include <zstd.h>

#include "macros.h"
#include "manifest.h"
#include "util.h"

/* ---- A store in memory. */

typedef struct MemFile {
        uint8_t id[32];
        uint8_t *data;
        size_t size;
} MemFile;

typedef struct MemStore {
        MemFile files[16];
        size_t n;
        unsigned loads;
} MemStore;

static int mem_load(void *userdata, const uint8_t id[32], void **ret_map, size_t *ret_size)
{
        MemStore *s = userdata;

        s->loads++;
        for (size_t i = 0; i < s->n; i++) {
                void *map;

                if (memcmp(s->files[i].id, id, 32) != 0)
                        continue;
                map = mmap(NULL, s->files[i].size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                assert_true(map != MAP_FAILED);
                memcpy(map, s->files[i].data, s->files[i].size);
                *ret_map = map;
                *ret_size = s->files[i].size;
                return 0;
        }
        return -ENOENT;
}

/* Stores a copy of data under id, replacing what was there. */
static void mem_put(MemStore *s, const uint8_t id[32], const void *data, size_t size)
{
        MemFile *f = NULL;

        for (size_t i = 0; i < s->n; i++)
                if (memcmp(s->files[i].id, id, 32) == 0)
                        f = s->files + i;
        if (!f) {
                assert_true(s->n < ELEMENTSOF(s->files));
                f = s->files + s->n++;
                memcpy(f->id, id, 32);
        } else
                free(f->data);
        f->data = malloc(size ?: 1);
        assert_non_null(f->data);
        memcpy(f->data, data, size);
        f->size = size;
}

static void mem_done(MemStore *s)
{
        for (size_t i = 0; i < s->n; i++)
                free(s->files[i].data);
        *s = (MemStore){};
}

/* ---- Trees. */

static uint64_t mix(uint64_t x)
{
        x ^= x >> 33;
        x *= UINT64_C(0xff51afd7ed558ccd);
        x ^= x >> 33;
        x *= UINT64_C(0xc4ceb9fe1a85ec53);
        return x ^ (x >> 33);
}

/* Version v of a tree of n files in 10 directories: file i changes (content digest, size and mtime)
 * in every version k with k % 20 == i % 20, so one version differs from the previous one in 5 % of
 * its files, like bench/make-tree.py's v2. */
static void build_tree(unsigned n, unsigned v, uint8_t **ret, size_t *ret_size, uint8_t id[32])
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;

        assert_int_equal(nano_manifest_builder_new(&b), 0);
        for (unsigned i = 0; i < n; i++) {
                unsigned gen = 0;
                char path[64];

                for (unsigned k = 1; k <= v; k++)
                        gen += k % 20 == i % 20;
                NanoEntry e = { .type = NANO_ENTRY_REGULAR, .mode = 0644, .size = 1000 + i + gen,
                                .mtime_sec = 1700000000 + gen };
                for (unsigned j = 0; j < 4; j++)
                        le64_write(e.digest + 8 * j, mix(((uint64_t)i << 32) ^ ((uint64_t)gen << 8) ^ j));
                snprintf(path, sizeof path, "dir-%u/file-%05u.txt", i % 10, i);
                assert_int_equal(nano_manifest_builder_add(b, path, &e), 0);
        }
        assert_int_equal(nano_manifest_builder_finish(b, ret, ret_size, id), 0);
}

static void sha256(const void *data, size_t size, uint8_t ret[32])
{
        unsigned n = 32;

        assert_int_equal(EVP_Digest(data, size, ret, &n, EVP_sha256(), NULL), 1);
}

/* Loads id and checks it gives exactly want. */
static void expect_load(MemStore *s, const uint8_t id[32], const uint8_t *want, size_t want_size, unsigned chain_n)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        NanoManifestChain chain;
        const void *data;
        size_t size;

        assert_int_equal(nano_manifest_load(mem_load, s, id, &m, &chain), 0);
        data = nano_manifest_data(m, &size);
        assert_int_equal(size, want_size);
        assert_memory_equal(data, want, size);
        assert_int_equal(chain.n, chain_n);
        assert_memory_equal(chain.ids[0], id, 32);
        m = nano_manifest_free(m);

        assert_int_equal(nano_manifest_load_flags(mem_load, s, id, NANO_MANIFEST_LOAD_BY_CHECKSUM, &m, &chain), 0);
        data = nano_manifest_data(m, &size);
        assert_int_equal(size, want_size);
        assert_memory_equal(data, want, size);
}

/* Loads id and checks it fails with -EBADMSG, blaming the chain's entry `failed`. */
static void expect_bad(MemStore *s, const uint8_t id[32], unsigned failed)
{
        NanoManifest *m = NULL;
        NanoManifestChain chain;

        assert_int_equal(nano_manifest_load(mem_load, s, id, &m, &chain), -EBADMSG);
        assert_null(m);
        assert_int_equal(chain.failed, failed);
        assert_non_null(chain.detail);
        assert_true(chain.n > failed);

        /* Checked by the frames' checksums instead of the packed levels' sha256 (the mount's way),
         * it fails too: a flipped bit or a wrong base never decodes into a tree. */
        assert_int_equal(nano_manifest_load_flags(mem_load, s, id, NANO_MANIFEST_LOAD_BY_CHECKSUM, &m, &chain),
                         -EBADMSG);
        assert_null(m);
}

/* A packed header over any frame, with a correct header checksum (what a careful forger writes). */
static size_t forge(uint8_t *out, uint64_t size, uint32_t depth, const uint8_t base[32], const void *frame,
                    size_t frame_size)
{
        memset(out, 0, NANO_MANIFEST_PACK_HEADER_SIZE);
        memcpy(out, NANO_MANIFEST_PACK_MAGIC, 8);
        le64_write(out + 8, size);
        le32_write(out + 16, depth);
        if (base)
                memcpy(out + 24, base, 32);
        le64_write(out + 56, XXH3_64bits(out, 56));
        memcpy(out + NANO_MANIFEST_PACK_HEADER_SIZE, frame, frame_size);
        return NANO_MANIFEST_PACK_HEADER_SIZE + frame_size;
}

/* Rewrites the header checksum after a change to the header. */
static void reseal(uint8_t *p)
{
        le64_write(p + 56, XXH3_64bits(p, 56));
}

/* ---- Tests. */

static void test_round_trip_no_base(void **state)
{
        _cleanup_free_ uint8_t *v0 = NULL, *packed = NULL;
        size_t v0_size, packed_size;
        MemStore s = {};
        NanoManifestPacked h;
        uint8_t id0[32];

        build_tree(2000, 0, &v0, &v0_size, id0);
        assert_int_equal(nano_manifest_pack(v0, v0_size, NULL, 0, NULL, 0, NANO_MANIFEST_PACK_LEVEL, &packed,
                                            &packed_size),
                         0);
        /* Names and zero fields compress; the 32 random digest bytes of each entry do not. */
        assert_true(packed_size < v0_size / 2);
        assert_true(nano_manifest_is_packed(packed, packed_size));
        assert_int_equal(nano_manifest_packed_parse(packed, packed_size, &h), 0);
        assert_int_equal(h.size, v0_size);
        assert_int_equal(h.depth, 0);

        mem_put(&s, id0, packed, packed_size);
        expect_load(&s, id0, v0, v0_size, 1);
        /* A canonical file still loads as it is. */
        mem_put(&s, id0, v0, v0_size);
        expect_load(&s, id0, v0, v0_size, 1);
        mem_done(&s);
}

static void test_round_trip_base(void **state)
{
        _cleanup_free_ uint8_t *v0 = NULL, *v1 = NULL, *p0 = NULL, *p1 = NULL, *plain1 = NULL;
        size_t v0_size, v1_size, p0_size, p1_size, plain1_size;
        uint8_t id0[32], id1[32];
        NanoManifestPacked h;
        MemStore s = {};

        build_tree(2000, 0, &v0, &v0_size, id0);
        build_tree(2000, 1, &v1, &v1_size, id1);
        assert_int_equal(nano_manifest_pack(v1, v1_size, NULL, 0, NULL, 0, 9, &plain1, &plain1_size), 0);
        assert_int_equal(nano_manifest_pack(v1, v1_size, v0, v0_size, id0, 0, 9, &p1, &p1_size), 0);
        /* 100 changed entries out of 2010: the delta holds little more than their new digests. */
        assert_true(p1_size < plain1_size / 8);
        assert_true(p1_size < 100 * 60 + 1024);
        assert_int_equal(nano_manifest_packed_parse(p1, p1_size, &h), 0);
        assert_int_equal(h.depth, 1);
        assert_memory_equal(h.base, id0, 32);

        /* Over a canonical base, then over a packed one. */
        mem_put(&s, id0, v0, v0_size);
        mem_put(&s, id1, p1, p1_size);
        expect_load(&s, id1, v1, v1_size, 2);
        assert_int_equal(nano_manifest_pack(v0, v0_size, NULL, 0, NULL, 0, 9, &p0, &p0_size), 0);
        mem_put(&s, id0, p0, p0_size);
        expect_load(&s, id1, v1, v1_size, 2);
        expect_load(&s, id0, v0, v0_size, 1);
        mem_done(&s);
}

static void test_chain(void **state)
{
        uint8_t *v[10] = {}, ids[10][32];
        size_t sizes[10];
        MemStore s = {};

        for (unsigned i = 0; i < 10; i++)
                build_tree(300, i, &v[i], &sizes[i], ids[i]);
        /* v0 has no base; v_i is packed against v_{i-1}: depth i. */
        for (unsigned i = 0; i <= NANO_MANIFEST_PACK_DEPTH_MAX; i++) {
                _cleanup_free_ uint8_t *p = NULL;
                size_t p_size;

                assert_int_equal(nano_manifest_pack(v[i], sizes[i], i ? v[i - 1] : NULL, i ? sizes[i - 1] : 0,
                                                    i ? ids[i - 1] : NULL, i ? i - 1 : 0, 9, &p, &p_size),
                                 0);
                mem_put(&s, ids[i], p, p_size);
        }
        for (unsigned i = 0; i <= NANO_MANIFEST_PACK_DEPTH_MAX; i++)
                expect_load(&s, ids[i], v[i], sizes[i], i + 1);

        /* The writer refuses a base already at the limit... */
        {
                _cleanup_free_ uint8_t *p = NULL;
                size_t p_size;

                assert_int_equal(nano_manifest_pack(v[9], sizes[9], v[8], sizes[8], ids[8],
                                                    NANO_MANIFEST_PACK_DEPTH_MAX, 9, &p, &p_size),
                                 -EINVAL);
                /* ...and the reader a chain deeper than the limit, whatever the headers claim: this one
                 * says depth 1. The manifest at fault is the one 8 levels down that still has a base. */
                assert_int_equal(nano_manifest_pack(v[9], sizes[9], v[8], sizes[8], ids[8], 0, 9, &p, &p_size), 0);
                mem_put(&s, ids[9], p, p_size);
                expect_bad(&s, ids[9], NANO_MANIFEST_PACK_DEPTH_MAX);
        }
        for (unsigned i = 0; i < 10; i++)
                free(v[i]);
        mem_done(&s);
}

static void test_cycle(void **state)
{
        _cleanup_free_ uint8_t *a = NULL, *b = NULL, *pa = NULL, *pb = NULL;
        size_t a_size, b_size, pa_size, pb_size;
        uint8_t ida[32], idb[32];
        MemStore s = {};

        build_tree(300, 0, &a, &a_size, ida);
        build_tree(300, 1, &b, &b_size, idb);
        assert_int_equal(nano_manifest_pack(a, a_size, b, b_size, idb, 0, 9, &pa, &pa_size), 0);
        assert_int_equal(nano_manifest_pack(b, b_size, a, a_size, ida, 0, 9, &pb, &pb_size), 0);
        mem_put(&s, ida, pa, pa_size);
        mem_put(&s, idb, pb, pb_size);
        s.loads = 0;
        expect_bad(&s, ida, NANO_MANIFEST_PACK_DEPTH_MAX);
        /* Bounded: the cycle is followed to the depth limit, not forever (by each of expect_bad()'s
         * two loads). */
        assert_int_equal(s.loads, 2 * (NANO_MANIFEST_PACK_DEPTH_MAX + 1));
        /* A manifest that is its own base. */
        free(pa);
        assert_int_equal(nano_manifest_pack(a, a_size, a, a_size, ida, 0, 9, &pa, &pa_size), 0);
        mem_put(&s, ida, pa, pa_size);
        expect_bad(&s, ida, NANO_MANIFEST_PACK_DEPTH_MAX);
        mem_done(&s);
}

static void test_missing_or_wrong_base(void **state)
{
        _cleanup_free_ uint8_t *v0 = NULL, *v1 = NULL, *v2 = NULL, *p1 = NULL, *p2 = NULL;
        size_t v0_size, v1_size, v2_size, p1_size, p2_size;
        uint8_t id0[32], id1[32], id2[32];
        NanoManifest *m = NULL;
        NanoManifestChain chain;
        MemStore s = {};

        build_tree(500, 0, &v0, &v0_size, id0);
        build_tree(500, 1, &v1, &v1_size, id1);
        build_tree(500, 2, &v2, &v2_size, id2);
        assert_int_equal(nano_manifest_pack(v1, v1_size, v0, v0_size, id0, 0, 9, &p1, &p1_size), 0);
        mem_put(&s, id1, p1, p1_size);

        /* The manifest asked for is missing: -ENOENT. Its base is: -EBADMSG, naming the base. */
        assert_int_equal(nano_manifest_load(mem_load, &s, id2, &m, &chain), -ENOENT);
        assert_int_equal(chain.failed, 0);
        assert_int_equal(nano_manifest_load(mem_load, &s, id1, &m, &chain), -EBADMSG);
        assert_int_equal(chain.failed, 1);
        assert_int_equal(chain.error, -ENOENT);
        assert_memory_equal(chain.ids[1], id0, 32);
        assert_null(m);

        /* The base's file holds another manifest, canonical... */
        mem_put(&s, id0, v2, v2_size);
        expect_bad(&s, id1, 1);
        /* ...or packed: it decodes, to bytes that are not its id's. */
        assert_int_equal(nano_manifest_pack(v2, v2_size, NULL, 0, NULL, 0, 9, &p2, &p2_size), 0);
        mem_put(&s, id0, p2, p2_size);
        expect_bad(&s, id1, 1);
        /* With the right base back, it loads again. */
        mem_put(&s, id0, v0, v0_size);
        expect_load(&s, id1, v1, v1_size, 2);
        mem_done(&s);
}

static void test_malformed(void **state)
{
        _cleanup_free_ uint8_t *v0 = NULL, *p = NULL, *buf = NULL, *frame = NULL;
        size_t v0_size, p_size, frame_size, bound;
        uint8_t id0[32], id[32];
        MemStore s = {};

        build_tree(500, 0, &v0, &v0_size, id0);
        assert_int_equal(nano_manifest_pack(v0, v0_size, NULL, 0, NULL, 0, 9, &p, &p_size), 0);
        buf = malloc(p_size + 64);
        assert_non_null(buf);

#define TRY(mutation)                                                                                       \
        do {                                                                                                \
                memcpy(buf, p, p_size);                                                                     \
                size_t n = p_size;                                                                          \
                mutation;                                                                                   \
                mem_put(&s, id0, buf, n);                                                                   \
                expect_bad(&s, id0, 0);                                                                     \
        } while (0)

        TRY(buf[7] = 2);                                /* another format version: read as canonical */
        TRY(buf[0] = 'X');                              /* no magic at all */
        TRY(buf[16] ^= 1);                              /* depth, header checksum not updated */
        TRY(buf[30] ^= 1);                              /* base id, likewise */
        TRY((buf[16] = 9, reseal(buf)));                /* depth over the limit */
        TRY((buf[20] = 1, reseal(buf)));                /* flags */
        TRY((buf[30] = 1, reseal(buf)));                /* a base id with depth 0 */
        TRY((le64_write(buf + 8, v0_size + 8), reseal(buf)));  /* size != frame's content size */
        TRY((le64_write(buf + 8, v0_size - 8), reseal(buf)));
        TRY((le64_write(buf + 8, UINT64_C(1) << 40), reseal(buf))); /* over the format's limit */
        TRY((le64_write(buf + 8, 12), reseal(buf)));    /* smaller than any manifest */
        TRY(n = p_size - 1);                            /* truncated frame */
        TRY(n = NANO_MANIFEST_PACK_HEADER_SIZE + 5);
        TRY(n = NANO_MANIFEST_PACK_HEADER_SIZE);
        TRY(n = 12);
        TRY((memset(buf + p_size, 0, 8), n = p_size + 8)); /* trailing bytes */
        TRY((memcpy(buf + p_size, buf + 64, 16), n = p_size + 16));
        TRY(buf[64 + 4] &= (uint8_t)~0x04);             /* no content checksum */
        TRY(buf[64 + 4] |= 0x01);                       /* a dictionary id */
        TRY((buf[7] = 1, buf[64] ^= 0xff));             /* not a zstd frame */

        /* Any flip in the frame gives -EBADMSG or, where zstd's entropy coding does not see it, the
         * right bytes: never other bytes. */
        for (size_t i = NANO_MANIFEST_PACK_HEADER_SIZE; i < p_size; i += 7) {
                NanoManifest *m = NULL;
                NanoManifestChain chain;
                int r;

                memcpy(buf, p, p_size);
                buf[i] ^= 0x10;
                mem_put(&s, id0, buf, p_size);
                r = nano_manifest_load(mem_load, &s, id0, &m, &chain);
                if (r == 0) {
                        size_t size;
                        const void *data = nano_manifest_data(m, &size);
                        assert_int_equal(size, v0_size);
                        assert_memory_equal(data, v0, size);
                        nano_manifest_free(m);
                } else
                        assert_int_equal(r, -EBADMSG);
        }

        /* A frame of bytes that are not a manifest, under their true id: the id matches, the parser
         * refuses. */
        memset(buf, 'x', 4096);
        sha256(buf, 4096, id);
        free(p);
        assert_int_equal(nano_manifest_pack(buf, 4096, NULL, 0, NULL, 0, 3, &p, &p_size), 0);
        mem_put(&s, id, p, p_size);
        expect_bad(&s, id, 0);

        /* A bomb: 64 MiB of zeros in a 2 KiB frame, declared as such. Refused before anything is
         * allocated for it, by the expansion bound. */
        {
                const size_t huge = (size_t)64 << 20;
                _cleanup_free_ uint8_t *zeros = calloc(1, huge), *forged = NULL;
                ZSTD_CCtx *c = ZSTD_createCCtx();

                assert_non_null(zeros);
                assert_non_null(c);
                bound = ZSTD_compressBound(huge);
                frame = malloc(bound);
                assert_non_null(frame);
                assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1)));
                frame_size = ZSTD_compress2(c, frame, bound, zeros, huge);
                ZSTD_freeCCtx(c);
                assert_false(ZSTD_isError(frame_size));
                assert_true(frame_size < 8192);
                forged = malloc(NANO_MANIFEST_PACK_HEADER_SIZE + frame_size);
                assert_non_null(forged);
                sha256(zeros, huge, id);
                mem_put(&s, id, forged, forge(forged, huge, 0, NULL, frame, frame_size));
                expect_bad(&s, id, 0);
                /* The writer does not make such files either. */
                assert_int_equal(nano_manifest_pack(zeros, huge, NULL, 0, NULL, 0, 3, &forged, &p_size), -E2BIG);
        }
        mem_done(&s);
#undef TRY
}

static void test_pack_refuses(void **state)
{
        _cleanup_free_ uint8_t *v0 = NULL, *p = NULL;
        size_t v0_size, p_size;
        uint8_t id0[32];

        build_tree(10, 0, &v0, &v0_size, id0);
        /* Base and manifest must fit the window (the sizes are checked before the base is read). */
        assert_int_equal(nano_manifest_pack(v0, v0_size, v0, (size_t)1 << NANO_MANIFEST_PACK_WINDOW_LOG_MAX, id0, 0,
                                            9, &p, &p_size),
                         -E2BIG);
        assert_int_equal(nano_manifest_pack(v0, v0_size, v0, v0_size, NULL, 0, 9, &p, &p_size), -EINVAL);
        assert_int_equal(nano_manifest_pack(v0, 8, NULL, 0, NULL, 0, 9, &p, &p_size), -EINVAL);
        assert_int_equal(nano_manifest_pack(v0, v0_size, NULL, 0, NULL, 0, 99, &p, &p_size), -EINVAL);
        assert_null(p);
}

/* ---- The seed corpus of tests/fuzz/fuzz-manifest-pack: its input is a little store, files one
 * after another as [32-byte id][u32 size][bytes]; the first is the manifest to load. */

static size_t corpus_file(uint8_t *out, const uint8_t id[32], const void *data, size_t size)
{
        memcpy(out, id, 32);
        le32_write(out + 32, (uint32_t)size);
        memcpy(out + 36, data, size);
        return 36 + size;
}

static void write_at(int dfd, const char *name, const void *data, size_t size)
{
        _cleanup_close_ int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(write_all(fd, data, size), 0);
}

/* Writes the corpus into $NANO_MANIFEST_PACK_CORPUS. Run only when that variable is set. */
static void test_write_corpus(void **state)
{
        const char *dir = getenv("NANO_MANIFEST_PACK_CORPUS");
        _cleanup_free_ uint8_t *v0 = NULL, *v1 = NULL, *v2 = NULL, *p0 = NULL, *p1 = NULL, *p2 = NULL, *out = NULL;
        _cleanup_free_ uint8_t *c1 = NULL, *c2 = NULL;
        size_t v0_size, v1_size, v2_size, p0_size, p1_size, p2_size, c1_size, c2_size, n;
        uint8_t id0[32], id1[32], id2[32];
        _cleanup_close_ int dfd = -EBADF;

        assert_non_null(dir);
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(dfd >= 0);
        build_tree(40, 0, &v0, &v0_size, id0);
        build_tree(40, 1, &v1, &v1_size, id1);
        build_tree(40, 2, &v2, &v2_size, id2);
        assert_int_equal(nano_manifest_pack(v0, v0_size, NULL, 0, NULL, 0, 9, &p0, &p0_size), 0);
        assert_int_equal(nano_manifest_pack(v1, v1_size, v0, v0_size, id0, 0, 9, &p1, &p1_size), 0);
        assert_int_equal(nano_manifest_pack(v2, v2_size, v1, v1_size, id1, 1, 9, &p2, &p2_size), 0);
        /* A cycle: v0 packed against v1, which is packed against v0. */
        assert_int_equal(nano_manifest_pack(v0, v0_size, v1, v1_size, id1, 0, 9, &c1, &c1_size), 0);
        assert_int_equal(nano_manifest_pack(v2, v2_size, v2, v2_size, id2, 0, 9, &c2, &c2_size), 0);
        out = malloc(4 * (36 + v0_size + v1_size + v2_size));
        assert_non_null(out);

        write_at(dfd, "valid-canonical", out, corpus_file(out, id0, v0, v0_size));
        write_at(dfd, "valid-packed-no-base", out, corpus_file(out, id0, p0, p0_size));
        n = corpus_file(out, id1, p1, p1_size);
        write_at(dfd, "bad-missing-base", out, n);
        n += corpus_file(out + n, id0, v0, v0_size);
        write_at(dfd, "valid-packed-canonical-base", out, n);
        n = corpus_file(out, id2, p2, p2_size);
        n += corpus_file(out + n, id1, p1, p1_size);
        n += corpus_file(out + n, id0, p0, p0_size);
        write_at(dfd, "valid-chain-2", out, n);
        n = corpus_file(out, id1, p1, p1_size);
        n += corpus_file(out + n, id0, c1, c1_size);
        write_at(dfd, "bad-cycle", out, n);
        write_at(dfd, "bad-own-base", out, corpus_file(out, id2, c2, c2_size));
        n = corpus_file(out, id1, p1, p1_size);
        n += corpus_file(out + n, id0, v2, v2_size);
        write_at(dfd, "bad-base-other-bytes", out, n);
        n = corpus_file(out, id0, p0, p0_size - 3);
        write_at(dfd, "bad-truncated", out, n);
        n = corpus_file(out, id0, p0, p0_size);
        le64_write(out + 36 + 8, v0_size + 8);
        reseal(out + 36);
        write_at(dfd, "bad-size", out, n);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip_no_base),
                cmocka_unit_test(test_round_trip_base),
                cmocka_unit_test(test_chain),
                cmocka_unit_test(test_cycle),
                cmocka_unit_test(test_missing_or_wrong_base),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_pack_refuses),
        };
        const struct CMUnitTest corpus[] = {
                cmocka_unit_test(test_write_corpus),
        };

        if (getenv("NANO_MANIFEST_PACK_CORPUS"))
                return cmocka_run_group_tests(corpus, NULL, NULL);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
