/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>

#include "macros.h"
#include "manifest.h"
#include "util.h"

/* ---- Helpers. */

static void add_file(NanoManifestBuilder *b, const char *path, uint64_t size, uint32_t mode, int64_t mtime,
                     uint8_t fill)
{
        NanoEntry e = { .type = NANO_ENTRY_REGULAR, .mode = mode, .size = size, .mtime_sec = mtime };

        memset(e.digest, fill, sizeof(e.digest));
        assert_int_equal(nano_manifest_builder_add(b, path, &e), 0);
}

static void add_dir(NanoManifestBuilder *b, const char *path, uint32_t mode, int64_t mtime)
{
        NanoEntry e = { .type = NANO_ENTRY_DIRECTORY, .mode = mode, .mtime_sec = mtime };

        assert_int_equal(nano_manifest_builder_add(b, path, &e), 0);
}

static void add_symlink(NanoManifestBuilder *b, const char *path, const char *target)
{
        NanoEntry e = { .type = NANO_ENTRY_SYMLINK, .mode = 0777, .mtime_sec = 1, .target = target };

        assert_int_equal(nano_manifest_builder_add(b, path, &e), 0);
}

static void finish(NanoManifestBuilder *b, uint8_t **ret, size_t *ret_size, uint8_t digest[32])
{
        uint8_t d[32];

        assert_int_equal(nano_manifest_builder_finish(b, ret, ret_size, digest ?: d), 0);
}

/* Builds the canonical serialisation of a parsed manifest through the builder: if the format admits
 * exactly one encoding per tree, any manifest the parser accepts comes back byte for byte. */
static int reserialize(const NanoManifest *m, uint8_t **ret, size_t *ret_size)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        char path[NANO_PATH_MAX], target[NANO_SYMLINK_MAX + 1];
        uint8_t digest[32];
        int r;

        r = nano_manifest_builder_new(&b);
        if (r < 0)
                return r;
        for (uint32_t i = 0; i < nano_manifest_count(m); i++) {
                NanoEntry e;

                nano_manifest_entry(m, i, &e);
                r = nano_manifest_path(m, i, path, sizeof(path));
                if (r < 0)
                        return r;
                if (e.type == NANO_ENTRY_SYMLINK) {
                        memcpy(target, e.target, e.size);
                        target[e.size] = '\0';
                        e.target = target;
                }
                r = nano_manifest_builder_add(b, path, &e);
                if (r < 0)
                        return r;
        }
        if (nano_manifest_builder_count(b) != nano_manifest_count(m))
                return -EUCLEAN;
        return nano_manifest_builder_finish(b, ret, ret_size, digest);
}

static uint64_t rng_state;

static uint64_t rng(void)
{
        /* xorshift64*: fixed seeds make every run check the same trees. */
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return rng_state * UINT64_C(2685821657736338717);
}

/* A generated tree: entries listed parents first, each with its own attributes. */
typedef struct GenEntry {
        char path[256];
        NanoEntry e;
        char target[64];
} GenEntry;

static size_t gen_tree(uint64_t seed, GenEntry *out, size_t n)
{
        /* Names share prefixes ("a1", "a12", "ab3") and include bytes >= 0x80, to exercise the
         * bytewise order; the index suffix keeps every path distinct. */
        static const char *const stems[] = { "a", "ab", "b", "a b", "\xff", "\x01z", "A", "aa", "..." };
        size_t n_dirs = 1;
        size_t dirs[256] = { SIZE_MAX }; /* SIZE_MAX: the root */

        rng_state = seed;
        for (size_t i = 0; i < n; i++) {
                GenEntry *g = out + i;
                size_t parent = dirs[rng() % n_dirs];
                uint64_t kind = rng() % 8;

                int len = snprintf(g->path, sizeof(g->path), "%s%s%s%zu",
                                   parent == SIZE_MAX ? "" : out[parent].path, parent == SIZE_MAX ? "" : "/",
                                   stems[rng() % ELEMENTSOF(stems)], i);
                /* Keep paths short enough to extend: start again from the top when they grow. */
                if (len < 0 || len > 200)
                        snprintf(g->path, sizeof(g->path), "top%zu", i);
                g->e = (NanoEntry){
                        .mode = (uint32_t)(rng() % 01000),
                        .mtime_sec = (int64_t)(rng() % 4000000000) - 2000000000,
                        .mtime_nsec = (uint32_t)(rng() % 1000000000),
                };
                if (kind < 2 && n_dirs < ELEMENTSOF(dirs)) {
                        g->e.type = NANO_ENTRY_DIRECTORY;
                        dirs[n_dirs++] = i;
                } else if (kind < 3) {
                        g->e.type = NANO_ENTRY_SYMLINK;
                        snprintf(g->target, sizeof(g->target), "../t%" PRIu64, rng() % 1000);
                        g->e.target = g->target;
                } else {
                        g->e.type = NANO_ENTRY_REGULAR;
                        g->e.size = rng() % 100000;
                        for (size_t k = 0; k < 32; k++)
                                g->e.digest[k] = (uint8_t)rng();
                }
        }
        return n;
}

static void shuffle(size_t *idx, size_t n)
{
        for (size_t i = n; i > 1; i--) {
                size_t j = rng() % i, t = idx[i - 1];
                idx[i - 1] = idx[j];
                idx[j] = t;
        }
}

static void build_gen(const GenEntry *g, const size_t *order, size_t n, uint8_t **ret, size_t *ret_size,
                      uint8_t digest[32])
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;

        assert_int_equal(nano_manifest_builder_new(&b), 0);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(nano_manifest_builder_add(b, g[order[i]].path, &g[order[i]].e), 0);
        assert_int_equal(nano_manifest_builder_count(b), n + 1);
        finish(b, ret, ret_size, digest);
}

/* ---- The known-answer manifest, field by field (doc/formats.md). */

#define U8(x) (uint8_t)(x)
#define U16(x) U8((x) & 0xff), U8(((x) >> 8) & 0xff)
#define U32(x) U16((x) & 0xffff), U16(((x) >> 16) & 0xffff)
#define U64(x) U32((uint64_t)(x) & 0xffffffffu), U32((uint64_t)(x) >> 32)
#define Z32 U64(0), U64(0), U64(0), U64(0)

/* clang-format off */
static const uint8_t kat[] = {
        /* header */
        'N', 'A', 'N', 'O', 'M', 'A', 'N', 1, /* magic */
        U32(4),                               /* n_entries: root, a, l, a/f */
        U32(0),                               /* flags */
        U64(64 + 4 * 80),                     /* strings_off = 384 */
        U64(6),                               /* strings_size: "a" "l" "a/f" "f" */
        U64(392),                             /* total_size: 390 rounded up to 8 */
        U64(0), U64(0), U64(0),               /* reserved */
        /* Entries, one per two lines: parent, name_off, name_len, type, zero, mode, size;
         * then mtime_sec, mtime_nsec, a, b, zero, digest. */
        /* entry 0: the root, mode 0755, children [1, 3) */
        U32(0), U32(0), U16(0), U8(2), U8(0), U32(0755), U64(2),
        U64(1700000000), U32(0), U32(1), U32(2), U32(0), Z32,
        /* entry 1: "a" at 0, directory 0700, mtime_nsec 5, children [3, 4) */
        U32(0), U32(0), U16(1), U8(2), U8(0), U32(0700), U64(1),
        U64(1700000001), U32(5), U32(3), U32(1), U32(0), Z32,
        /* entry 2: "l" at 1, symlink 0777, target "a/f" at 2, 3 bytes */
        U32(0), U32(1), U16(1), U8(3), U8(0), U32(0777), U64(3),
        U64(1700000002), U32(0), U32(2), U32(3), U32(0), Z32,
        /* entry 3: "f" at 5 in "a" (entry 1), regular 0644, 3 bytes, digest 00 01 .. 1f */
        U32(1), U32(5), U16(1), U8(1), U8(0), U32(0644), U64(3),
        U64(1700000003), U32(999999999), U32(0), U32(0), U32(0),
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
        /* strings, then padding */
        'a', 'l', 'a', '/', 'f', 'f', 0, 0,
};
/* clang-format on */

/* sha256 of kat[], computed once from the bytes above (and checked with sha256sum). */
#define KAT_DIGEST "cae6ecfd0df80a2a4ecc6d8e1f70d95e3bb7107e9de6fb591dd860fd5d9482d1"

static void build_kat(uint8_t **ret, size_t *ret_size, uint8_t digest[32])
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        NanoEntry f = { .type = NANO_ENTRY_REGULAR, .mode = 0644, .size = 3, .mtime_sec = 1700000003,
                        .mtime_nsec = 999999999 };
        NanoEntry l = { .type = NANO_ENTRY_SYMLINK, .mode = 0777, .mtime_sec = 1700000002, .target = "a/f" };
        NanoEntry a = { .type = NANO_ENTRY_DIRECTORY, .mode = 0700, .mtime_sec = 1700000001, .mtime_nsec = 5,
                        .size = 12345 /* ignored */ };
        NanoEntry root = { .type = NANO_ENTRY_DIRECTORY, .mode = 0755, .mtime_sec = 1700000000 };

        for (int i = 0; i < 32; i++)
                f.digest[i] = (uint8_t)i;
        assert_int_equal(nano_manifest_builder_new(&b), 0);
        /* Child first, so "a" is implicit until its own entry comes. */
        assert_int_equal(nano_manifest_builder_add(b, "./a//f", &f), 0);
        assert_int_equal(nano_manifest_builder_add(b, "l", &l), 0);
        assert_int_equal(nano_manifest_builder_add(b, "a/", &a), 0);
        assert_int_equal(nano_manifest_builder_add(b, "", &root), 0);
        finish(b, ret, ret_size, digest);
}

/* A tree with one of everything: nested and empty directories, a hard link, symlinks. */
static void build_rich(uint8_t **ret, size_t *ret_size)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;

        assert_int_equal(nano_manifest_builder_new(&b), 0);
        add_file(b, "usr/bin/sh", 125560, 0755, 1600000000, 0xaa);
        assert_int_equal(nano_manifest_builder_link(b, "usr/bin/bash", "usr/bin/sh"), 0);
        add_symlink(b, "bin", "usr/bin");
        add_dir(b, "usr/share/empty", 0700, 1);
        add_dir(b, "tmp", 0777, 2);
        add_file(b, "etc/os-release", 0, 0644, -5, 0x00);
        add_symlink(b, "etc/mtab", "../proc/self/mounts");
        add_file(b, "etc/a", 1, 0600, 3, 0x11);
        add_file(b, "etc/ab", 2, 0600, 3, 0x12);
        add_file(b, "etc/\xc3\xa9", 3, 0400, 3, 0x13);
        finish(b, ret, ret_size, NULL);
}

/* ---- Path normalisation. */

static void test_path_normalize(void **state)
{
        static const struct {
                const char *in;
                const char *out; /* NULL: -EINVAL */
        } table[] = {
                { "", "" },
                { ".", "" },
                { "./", "" },
                { ".//./", "" },
                { "a", "a" },
                { "./a", "a" },
                { "a//b/", "a/b" },
                { "a/./b/.", "a/b" },
                { "././a/b/c/", "a/b/c" },
                { "...", "..." },
                { ".a/..b/b..", ".a/..b/b.." },
                { "a\xff/\x01", "a\xff/\x01" },
                { "/abs", NULL },
                { "/", NULL },
                { "//a", NULL },
                { "../x", NULL },
                { "a/../b", NULL },
                { "a/..", NULL },
                { "./..", NULL },
                { "..", NULL },
        };
        char buf[8192], *p;

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                strcpy(buf, table[i].in);
                if (table[i].out) {
                        assert_int_equal(nano_path_normalize(buf), 0);
                        assert_string_equal(buf, table[i].out);
                } else {
                        assert_int_equal(nano_path_normalize(buf), -EINVAL);
                        assert_string_equal(buf, table[i].in); /* untouched on failure */
                }
        }
        assert_int_equal(nano_path_normalize(NULL), -EINVAL);

        /* Names: 255 bytes fit, 256 do not. */
        memset(buf, 'x', 255);
        strcpy(buf + 255, "/y");
        assert_int_equal(nano_path_normalize(buf), 0);
        memset(buf, 'x', 256);
        strcpy(buf + 256, "/y");
        assert_int_equal(nano_path_normalize(buf), -EINVAL);

        /* Depth: 256 components fit, 257 do not. */
        p = buf;
        for (int i = 0; i < 256; i++)
                p = stpcpy(p, i == 0 ? "a" : "/a");
        assert_int_equal(nano_path_normalize(buf), 0);
        strcpy(p, "/a");
        assert_int_equal(nano_path_normalize(buf), -EINVAL);
        /* ... counted after normalisation. */
        p = stpcpy(buf, "a");
        for (int i = 1; i < 256; i++)
                p = stpcpy(p, "/./a//");
        assert_int_equal(nano_path_normalize(buf), 0);

        /* Length: 4095 bytes fit (with the NUL, NANO_PATH_MAX), 4096 do not. 15 * 256 + 255 = 4095. */
        p = buf;
        for (int i = 0; i < 16; i++) {
                if (i > 0)
                        *p++ = '/';
                memset(p, 'n', 255);
                p += 255;
        }
        *p = '\0';
        assert_int_equal(strlen(buf), 4095);
        assert_int_equal(nano_path_normalize(buf), 0);
        strcpy(p, "/z");
        assert_int_equal(nano_path_normalize(buf), -EINVAL);
        /* Redundant input beyond NANO_PATH_MAX is fine when the result is short. */
        p = buf;
        for (int i = 0; i < 3000; i++)
                p = stpcpy(p, "./");
        strcpy(p, "ok");
        assert_int_equal(nano_path_normalize(buf), 0);
        assert_string_equal(buf, "ok");
}

/* ---- Builder. */

static void test_known_answer(void **state)
{
        _cleanup_free_ uint8_t *buf = NULL;
        uint8_t digest[32];
        char hex[65];
        size_t size;

        build_kat(&buf, &size, digest);
        assert_int_equal(size, sizeof(kat));
        assert_memory_equal(buf, kat, sizeof(kat));
        hex_encode(digest, 32, hex);
        assert_string_equal(hex, KAT_DIGEST);
}

static void test_orders(void **state)
{
        static GenEntry g[3000];
        static size_t order[ELEMENTSOF(g)];
        _cleanup_free_ uint8_t *ref = NULL;
        uint8_t ref_digest[32];
        size_t n, ref_size;

        n = gen_tree(42, g, ELEMENTSOF(g));
        assert_true(n > 2000);

        for (size_t i = 0; i < n; i++)
                order[i] = i;
        build_gen(g, order, n, &ref, &ref_size, ref_digest);

        for (int round = 0; round < 5; round++) {
                _cleanup_free_ uint8_t *buf = NULL;
                uint8_t digest[32];
                size_t size;

                if (round == 0)
                        for (size_t i = 0; i < n; i++)
                                order[i] = n - 1 - i; /* children before parents */
                else
                        shuffle(order, n);
                build_gen(g, order, n, &buf, &size, digest);
                assert_int_equal(size, ref_size);
                assert_memory_equal(buf, ref, size);
                assert_memory_equal(digest, ref_digest, 32);
        }
}

static void test_round_trip(void **state)
{
        static GenEntry g[2000];
        static size_t order[ELEMENTSOF(g)];
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL, *again = NULL;
        size_t n, size, again_size;
        uint8_t digest[32];

        n = gen_tree(7, g, ELEMENTSOF(g));
        for (size_t i = 0; i < n; i++)
                order[i] = i;
        rng_state = 99;
        shuffle(order, n);
        build_gen(g, order, n, &buf, &size, digest);

        assert_int_equal(nano_manifest_parse(buf, size, &m), 0);
        assert_int_equal(nano_manifest_count(m), n + 1);
        for (size_t i = 0; i < n; i++) {
                const NanoEntry *want = &g[i].e;
                char path[NANO_PATH_MAX];
                uint32_t idx;
                NanoEntry e;

                assert_int_equal(nano_manifest_resolve(m, g[i].path, &idx), 0);
                assert_int_equal(nano_manifest_path(m, idx, path, sizeof(path)), 0);
                assert_string_equal(path, g[i].path);
                nano_manifest_entry(m, idx, &e);
                assert_int_equal(e.type, want->type);
                assert_int_equal(e.mode, want->mode);
                assert_int_equal(e.mtime_sec, want->mtime_sec);
                assert_int_equal(e.mtime_nsec, want->mtime_nsec);
                assert_int_equal(e.name_len, strlen(strrchr(path, '/') ? strrchr(path, '/') + 1 : path));
                switch (want->type) {
                case NANO_ENTRY_REGULAR:
                        assert_int_equal(e.size, want->size);
                        assert_memory_equal(e.digest, want->digest, 32);
                        break;
                case NANO_ENTRY_SYMLINK:
                        assert_int_equal(e.size, strlen(want->target));
                        assert_memory_equal(e.target, want->target, e.size);
                        break;
                default: {
                        /* Children are [first_child, first_child + size), all pointing back. */
                        for (uint32_t c = e.first_child; c < e.first_child + e.size; c++) {
                                NanoEntry ce;
                                nano_manifest_entry(m, c, &ce);
                                assert_int_equal(ce.parent, idx);
                        }
                }
                }
        }

        /* And back: the parsed manifest rebuilds to the same bytes. */
        assert_int_equal(reserialize(m, &again, &again_size), 0);
        assert_int_equal(again_size, size);
        assert_memory_equal(again, buf, size);
}

static void test_root_only(void **state)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        uint32_t idx = 1;
        size_t size;

        assert_int_equal(nano_manifest_builder_new(&b), 0);
        finish(b, &buf, &size, NULL);
        assert_int_equal(size, 64 + 80);
        assert_int_equal(nano_manifest_parse(buf, size, &m), 0);
        assert_int_equal(nano_manifest_count(m), 1);
        assert_int_equal(nano_manifest_resolve(m, "", &idx), 0);
        assert_int_equal(idx, 0);
        assert_int_equal(nano_manifest_lookup(m, 0, "a", 1, &idx), -ENOENT);
        assert_null(nano_manifest_builder_free(NULL));
        assert_null(nano_manifest_free(NULL));
}

static void test_implicit_parents(void **state)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        uint32_t idx;
        NanoEntry e;
        size_t size;

        assert_int_equal(nano_manifest_builder_new(&b), 0);
        assert_int_equal(nano_manifest_builder_count(b), 1);
        add_file(b, "x/y/z", 1, 0644, 100, 1);
        assert_int_equal(nano_manifest_builder_count(b), 4);
        add_dir(b, "x", 0711, 55); /* takes the attributes, keeps the children */
        assert_int_equal(nano_manifest_builder_count(b), 4);
        finish(b, &buf, &size, NULL);
        assert_int_equal(nano_manifest_parse(buf, size, &m), 0);

        assert_int_equal(nano_manifest_resolve(m, "x", &idx), 0);
        nano_manifest_entry(m, idx, &e);
        assert_int_equal(e.type, NANO_ENTRY_DIRECTORY);
        assert_int_equal(e.mode, 0711);
        assert_int_equal(e.mtime_sec, 55);
        assert_int_equal(e.size, 1);
        assert_int_equal(nano_manifest_resolve(m, "x/y", &idx), 0);
        nano_manifest_entry(m, idx, &e);
        assert_int_equal(e.type, NANO_ENTRY_DIRECTORY);
        assert_int_equal(e.mode, 0755);
        assert_int_equal(e.mtime_sec, 0);
        assert_int_equal(e.mtime_nsec, 0);
        nano_manifest_entry(m, 0, &e);
        assert_int_equal(e.mode, 0755);
        assert_int_equal(e.mtime_sec, 0);
}

static uint32_t parse_count(NanoManifestBuilder *b, const char *path, int want)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        uint32_t idx = 0;
        size_t size;

        /* Every intermediate state serialises to something the parser accepts: this checks the
         * builder's bookkeeping (counts, string sizes) after each replacement. */
        finish(b, &buf, &size, NULL);
        assert_int_equal(nano_manifest_parse(buf, size, &m), 0);
        assert_int_equal(nano_manifest_count(m), nano_manifest_builder_count(b));
        if (path)
                assert_int_equal(nano_manifest_resolve(m, path, &idx), want);
        return idx;
}

static void test_replace(void **state)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        NanoEntry e;
        uint32_t idx;
        size_t size;

        assert_int_equal(nano_manifest_builder_new(&b), 0);
        add_file(b, "d/x", 1, 0644, 1, 1);
        add_file(b, "d/y/z", 1, 0644, 1, 1);
        add_symlink(b, "d/y/s", "some/where/long/enough");
        assert_int_equal(nano_manifest_builder_count(b), 6);

        /* A file over a directory drops the whole subtree. */
        add_file(b, "d", 7, 0600, 2, 2);
        assert_int_equal(nano_manifest_builder_count(b), 2);
        parse_count(b, "d/x", -ENOTDIR);
        {
                NanoEntry f = { .type = NANO_ENTRY_REGULAR };
                assert_int_equal(nano_manifest_builder_add(b, "d/x", &f), -ENOTDIR);
                assert_int_equal(nano_manifest_builder_add(b, "d/q/r", &f), -ENOTDIR);
                assert_int_equal(nano_manifest_builder_count(b), 2);
        }

        /* A directory over a file replaces it, empty: the old children do not come back. */
        add_dir(b, "d", 0750, 3);
        assert_int_equal(nano_manifest_builder_count(b), 2);
        add_file(b, "d/x", 9, 0644, 4, 4);
        assert_int_equal(nano_manifest_builder_count(b), 3);
        parse_count(b, "d/y", -ENOENT);
        parse_count(b, "d/y/z", -ENOENT);
        parse_count(b, "d/x", 0);

        /* A directory over a directory keeps the children. */
        add_file(b, "e/f/g", 1, 0644, 1, 1);
        add_dir(b, "e", 0700, 42);
        assert_int_equal(nano_manifest_builder_count(b), 6);
        parse_count(b, "e/f/g", 0);

        /* Files, symlinks over each other; targets longer and shorter. */
        add_file(b, "v", 1, 0644, 1, 1);
        add_file(b, "v", 2, 0640, 2, 2);
        add_symlink(b, "v", "abc");
        add_symlink(b, "v", "a");
        add_symlink(b, "v", "abcdefgh");
        assert_int_equal(nano_manifest_builder_count(b), 7);
        idx = parse_count(b, "v", 0);

        /* A symlink over a directory. */
        add_symlink(b, "e", "d");
        assert_int_equal(nano_manifest_builder_count(b), 5);
        parse_count(b, "e/f", -ENOTDIR);
        add_file(b, "v", 5, 0644, 5, 5);

        /* The root only takes a directory, and keeps its children. */
        {
                NanoEntry f = { .type = NANO_ENTRY_REGULAR };
                assert_int_equal(nano_manifest_builder_add(b, "", &f), -EINVAL);
                assert_int_equal(nano_manifest_builder_add(b, "./", &f), -EINVAL);
        }
        add_dir(b, ".", 0700, 77);
        assert_int_equal(nano_manifest_builder_count(b), 5);

        finish(b, &buf, &size, NULL);
        assert_int_equal(nano_manifest_parse(buf, size, &m), 0);
        nano_manifest_entry(m, 0, &e);
        assert_int_equal(e.mode, 0700);
        assert_int_equal(e.mtime_sec, 77);
        assert_int_equal(e.size, 3);
        assert_int_equal(nano_manifest_resolve(m, "v", &idx), 0);
        nano_manifest_entry(m, idx, &e);
        assert_int_equal(e.type, NANO_ENTRY_REGULAR);
        assert_int_equal(e.size, 5);
        assert_int_equal(nano_manifest_resolve(m, "e", &idx), 0);
        nano_manifest_entry(m, idx, &e);
        assert_int_equal(e.type, NANO_ENTRY_SYMLINK);
        assert_memory_equal(e.target, "d", 1);
        assert_int_equal(nano_manifest_resolve(m, "d", &idx), 0);
        nano_manifest_entry(m, idx, &e);
        assert_int_equal(e.mode, 0750);
        assert_int_equal(e.size, 1);
}

static void test_replace_churn(void **state)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        char path[64];

        /* Dead nodes are reused: many rounds of grow-and-drop stay consistent. */
        assert_int_equal(nano_manifest_builder_new(&b), 0);
        for (int round = 0; round < 200; round++) {
                for (int i = 0; i < 20; i++) {
                        /* Directories over whatever is there: they come back, empty if they were not. */
                        snprintf(path, sizeof(path), "t/%d", i % 5);
                        add_dir(b, path, 0755, round);
                        snprintf(path, sizeof(path), "t/%d/%d", i % 5, i);
                        add_dir(b, path, 0755, round);
                        snprintf(path, sizeof(path), "t/%d/%d/f", i % 5, i);
                        add_file(b, path, (uint64_t)i, 0644, round, (uint8_t)i);
                }
                assert_int_equal(nano_manifest_builder_count(b), 2 + 5 + 20 + 20);
                snprintf(path, sizeof(path), "t/%d", round % 5);
                if (round % 3 == 0)
                        add_symlink(b, path, "x");
                else if (round % 3 == 1)
                        add_file(b, path, 1, 0644, round, 0);
                else
                        add_dir(b, path, 0755, round);
                if (round % 10 == 9) {
                        /* Everything goes, then "t" comes back empty. */
                        add_file(b, "t", 1, 0644, round, 0);
                        assert_int_equal(nano_manifest_builder_count(b), 2);
                        add_dir(b, "t", 0755, round);
                }
                if (round % 17 == 0)
                        parse_count(b, NULL, 0);
        }
        parse_count(b, "t/0", -ENOENT); /* the last round ended with "t" emptied */
}

static void test_bad_entries(void **state)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        char target[NANO_SYMLINK_MAX + 2];
        NanoEntry e = { .type = NANO_ENTRY_REGULAR }, got;
        uint32_t idx;
        size_t size;

        assert_int_equal(nano_manifest_builder_new(&b), 0);
        assert_int_equal(nano_manifest_builder_add(NULL, "a", &e), -EINVAL);
        assert_int_equal(nano_manifest_builder_add(b, NULL, &e), -EINVAL);
        assert_int_equal(nano_manifest_builder_add(b, "a", NULL), -EINVAL);
        e.type = 0;
        assert_int_equal(nano_manifest_builder_add(b, "a", &e), -EINVAL);
        e.type = 4;
        assert_int_equal(nano_manifest_builder_add(b, "a", &e), -EINVAL);
        e.type = NANO_ENTRY_REGULAR;
        e.mtime_nsec = 1000000000;
        assert_int_equal(nano_manifest_builder_add(b, "a", &e), -EINVAL);
        e.mtime_nsec = 0;
        assert_int_equal(nano_manifest_builder_add(b, "/a", &e), -EINVAL);
        assert_int_equal(nano_manifest_builder_add(b, "a/../b", &e), -EINVAL);

        e.type = NANO_ENTRY_SYMLINK;
        e.target = NULL;
        assert_int_equal(nano_manifest_builder_add(b, "s", &e), -EINVAL);
        e.target = "";
        assert_int_equal(nano_manifest_builder_add(b, "s", &e), -EINVAL);
        memset(target, 't', sizeof(target) - 1);
        target[sizeof(target) - 1] = '\0';
        e.target = target;
        assert_int_equal(nano_manifest_builder_add(b, "s", &e), -EINVAL);
        target[NANO_SYMLINK_MAX] = '\0';
        assert_int_equal(nano_manifest_builder_add(b, "s", &e), 0);
        assert_int_equal(nano_manifest_builder_count(b), 2);

        /* Special bits are cleared, not refused. */
        e = (NanoEntry){ .type = NANO_ENTRY_REGULAR, .mode = 07755 };
        assert_int_equal(nano_manifest_builder_add(b, "suid", &e), 0);

        finish(b, &buf, &size, NULL);
        assert_int_equal(nano_manifest_parse(buf, size, &m), 0);
        assert_int_equal(nano_manifest_resolve(m, "suid", &idx), 0);
        nano_manifest_entry(m, idx, &got);
        assert_int_equal(got.mode, 0755);
        assert_int_equal(nano_manifest_resolve(m, "s", &idx), 0);
        nano_manifest_entry(m, idx, &got);
        assert_int_equal(got.size, NANO_SYMLINK_MAX);
}

static void test_hard_links(void **state)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        NanoEntry e, f;
        uint32_t i, j;
        size_t size;

        assert_int_equal(nano_manifest_builder_new(&b), 0);
        add_file(b, "f", 10, 0640, 7, 0x5a);
        add_dir(b, "dir", 0755, 1);
        add_symlink(b, "sym", "f");

        assert_int_equal(nano_manifest_builder_link(b, "dir/sub/g", "./f"), 0);
        assert_int_equal(nano_manifest_builder_link(b, "h", "missing"), -ENOENT);
        assert_int_equal(nano_manifest_builder_link(b, "h", "f/x"), -ENOENT);
        assert_int_equal(nano_manifest_builder_link(b, "h", "dir"), -EINVAL);
        assert_int_equal(nano_manifest_builder_link(b, "h", "sym"), -EINVAL);
        assert_int_equal(nano_manifest_builder_link(b, "h", ""), -EINVAL);
        assert_int_equal(nano_manifest_builder_link(b, "", "f"), -EINVAL);
        assert_int_equal(nano_manifest_builder_link(b, "/h", "f"), -EINVAL);
        assert_int_equal(nano_manifest_builder_link(b, "h", "/f"), -EINVAL);
        assert_int_equal(nano_manifest_builder_link(b, "f", "f"), 0);
        /* A link over an existing directory replaces it, even the one holding the target's twin. */
        assert_int_equal(nano_manifest_builder_link(b, "dir", "dir/sub/g"), 0);
        assert_int_equal(nano_manifest_builder_count(b), 4);

        finish(b, &buf, &size, NULL);
        assert_int_equal(nano_manifest_parse(buf, size, &m), 0);
        assert_int_equal(nano_manifest_resolve(m, "f", &i), 0);
        assert_int_equal(nano_manifest_resolve(m, "dir", &j), 0);
        nano_manifest_entry(m, i, &e);
        nano_manifest_entry(m, j, &f);
        assert_int_equal(f.type, NANO_ENTRY_REGULAR);
        assert_int_equal(f.mode, e.mode);
        assert_int_equal(f.size, e.size);
        assert_int_equal(f.mtime_sec, e.mtime_sec);
        assert_memory_equal(f.digest, e.digest, 32);
}

static void test_large(void **state)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_free_ uint32_t *order = NULL;
        const uint32_t n = 100000;
        uint64_t start, elapsed;
        char path[64];
        uint32_t idx;
        size_t size;

        order = malloc(sizeof(uint32_t) * n);
        assert_non_null(order);
        for (uint32_t i = 0; i < n; i++)
                order[i] = i;
        rng_state = 1234;
        for (uint32_t i = n; i > 1; i--) {
                uint32_t j = (uint32_t)(rng() % i), t = order[i - 1];
                order[i - 1] = order[j];
                order[j] = t;
        }

        start = now_ns();
        assert_int_equal(nano_manifest_builder_new(&b), 0);
        for (uint32_t i = 0; i < n; i++) {
                NanoEntry e = { .type = NANO_ENTRY_REGULAR, .mode = 0644, .size = order[i] };

                /* 100 directories (implicit) of 999 files, plus the directories: 100,000 entries. */
                snprintf(path, sizeof(path), "dir%u/file-%u", order[i] % 100, order[i]);
                if (order[i] >= 99900)
                        snprintf(path, sizeof(path), "d%u/x", order[i] - 99900);
                assert_int_equal(nano_manifest_builder_add(b, path, &e), 0);
        }
        finish(b, &buf, &size, NULL);
        assert_int_equal(nano_manifest_parse(buf, size, &m), 0);
        elapsed = now_ns() - start;

        assert_int_equal(nano_manifest_count(m), 1 + 100 + 99900 + 100 + 100);
        assert_int_equal(nano_manifest_resolve(m, "dir7/file-12307", &idx), 0);
        assert_int_equal(nano_manifest_resolve(m, "d99/x", &idx), 0);
        print_message("# %u entries built and parsed in %" PRIu64 " ms\n", nano_manifest_count(m),
                      elapsed / 1000000);
        /* The time is printed, never asserted: tests do not fail on timing (bench/ measures). */
}

/* ---- Reader. */

static void test_lookup_resolve_path(void **state)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        char path[8], big[300];
        uint32_t idx;

        assert_int_equal(nano_manifest_parse(kat, sizeof(kat), &m), 0);
        assert_int_equal(nano_manifest_count(m), 4);

        assert_int_equal(nano_manifest_lookup(m, 0, "a", 1, &idx), 0);
        assert_int_equal(idx, 1);
        assert_int_equal(nano_manifest_lookup(m, 0, "l", 1, &idx), 0);
        assert_int_equal(idx, 2);
        assert_int_equal(nano_manifest_lookup(m, 1, "f", 1, &idx), 0);
        assert_int_equal(idx, 3);
        assert_int_equal(nano_manifest_lookup(m, 0, "f", 1, &idx), -ENOENT);
        assert_int_equal(nano_manifest_lookup(m, 0, "ab", 2, &idx), -ENOENT);
        assert_int_equal(nano_manifest_lookup(m, 0, "", 0, &idx), -ENOENT);
        assert_int_equal(nano_manifest_lookup(m, 0, "\xff", 1, &idx), -ENOENT);
        assert_int_equal(nano_manifest_lookup(m, 3, "x", 1, &idx), -ENOTDIR);
        assert_int_equal(nano_manifest_lookup(m, 2, "x", 1, &idx), -ENOTDIR);
        assert_int_equal(nano_manifest_lookup(m, 4, "x", 1, &idx), -EINVAL);

        static const struct {
                const char *path;
                int r;
                uint32_t idx;
        } table[] = {
                { "", 0, 0 },         { "/", 0, 0 },         { ".", 0, 0 },        { "a", 0, 1 },
                { "/a/", 0, 1 },      { "./a//f", 0, 3 },    { "l", 0, 2 },        { "a/f/", -ENOTDIR, 0 },
                { "a/f/.", -ENOTDIR, 0 }, { "l/", -ENOTDIR, 0 }, { "a/f/x", -ENOTDIR, 0 },
                { "l/x", -ENOTDIR, 0 }, /* symlinks are not followed */
                { "b", -ENOENT, 0 },  { "a/g", -ENOENT, 0 }, { "a/g/h", -ENOENT, 0 }, { "..", -EINVAL, 0 },
                { "a/..", -EINVAL, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                idx = UINT32_MAX;
                assert_int_equal(nano_manifest_resolve(m, table[i].path, &idx), table[i].r);
                if (table[i].r == 0)
                        assert_int_equal(idx, table[i].idx);
        }
        memset(big, 'a', 256);
        big[256] = '\0';
        assert_int_equal(nano_manifest_resolve(m, big, &idx), -ENAMETOOLONG);

        assert_int_equal(nano_manifest_path(m, 3, path, sizeof(path)), 0);
        assert_string_equal(path, "a/f");
        assert_int_equal(nano_manifest_path(m, 3, path, 4), 0);
        assert_string_equal(path, "a/f");
        assert_int_equal(nano_manifest_path(m, 3, path, 3), -ENAMETOOLONG);
        assert_int_equal(nano_manifest_path(m, 3, path, 2), -ENAMETOOLONG);
        assert_int_equal(nano_manifest_path(m, 3, path, 0), -ENAMETOOLONG);
        assert_int_equal(nano_manifest_path(m, 0, path, 1), 0);
        assert_string_equal(path, "");
        assert_int_equal(nano_manifest_path(m, 2, path, 2), 0);
        assert_string_equal(path, "l");
        assert_int_equal(nano_manifest_path(m, 4, path, sizeof(path)), -EINVAL);

        {
                NanoEntry e;
                size_t size;

                assert_ptr_equal(nano_manifest_data(m, &size), kat);
                assert_int_equal(size, sizeof(kat));
                nano_manifest_entry(m, 2, &e);
                assert_int_equal(e.type, NANO_ENTRY_SYMLINK);
                assert_int_equal(e.size, 3);
                assert_memory_equal(e.target, "a/f", 3);
                assert_memory_equal(e.name, "l", 1);
                nano_manifest_entry(m, 3, &e);
                assert_int_equal(e.mtime_nsec, 999999999);
                assert_int_equal(e.parent, 1);
                assert_int_equal(e.digest[31], 31);
                nano_manifest_entry(m, 1, &e);
                assert_int_equal(e.first_child, 3);
                assert_int_equal(e.size, 1);
        }
}

/* ---- Should-fail corpus. */

static int parse_copy(const uint8_t *buf, size_t size)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_free_ uint8_t *copy = NULL;

        /* An exact-size heap copy, so that the sanitizers see any read past the end. */
        copy = malloc(size ?: 1);
        assert_non_null(copy);
        memcpy(copy, buf, size);
        return nano_manifest_parse(copy, size, &m);
}

static void test_truncated(void **state)
{
        _cleanup_free_ uint8_t *rich = NULL;
        uint8_t longer[sizeof(kat) + 8] = {};
        size_t rich_size;

        assert_int_equal(parse_copy(kat, sizeof(kat)), 0);
        for (size_t len = 0; len < sizeof(kat); len++)
                assert_int_equal(parse_copy(kat, len), -EBADMSG);
        build_rich(&rich, &rich_size);
        for (size_t len = 0; len < rich_size; len++)
                assert_int_equal(parse_copy(rich, len), -EBADMSG);

        /* Trailing bytes, even zeros, are not the same manifest either. */
        memcpy(longer, kat, sizeof(kat));
        assert_int_equal(parse_copy(longer, sizeof(longer)), -EBADMSG);

        {
                NanoManifest *m = NULL;
                assert_int_equal(nano_manifest_parse(NULL, 0, &m), -EBADMSG);
                assert_int_equal(nano_manifest_parse(kat, sizeof(kat), NULL), -EINVAL);
                assert_null(m);
        }
}

typedef struct Patch {
        const char *what;
        size_t off;
        unsigned width; /* bytes, little-endian */
        uint64_t value;
} Patch;

#define E(i, field) (64 + 80 * (i) + (field))

static void test_corrupt_fields(void **state)
{
        static const Patch patches[] = {
                { "magic", 0, 1, 'X' },
                { "magic version", 7, 1, 2 },
                { "no entries", 8, 4, 0 },
                { "fewer entries", 8, 4, 3 },
                { "more entries", 8, 4, 5 },
                { "too many entries", 8, 4, (UINT64_C(1) << 24) + 1 },
                { "entries overflow", 8, 4, UINT32_MAX },
                { "flags", 12, 4, 1 },
                { "strings_off low", 16, 8, 376 },
                { "strings_off high", 16, 8, 392 },
                { "strings_off huge", 16, 8, UINT64_MAX - 7 },
                { "strings_size short", 24, 8, 5 },
                { "strings_size long", 24, 8, 7 },
                { "strings_size huge", 24, 8, (UINT64_C(1) << 31) + 1 },
                { "strings_size wraps", 24, 8, UINT64_MAX - 383 },
                { "total unpadded", 32, 8, 390 },
                { "total long", 32, 8, 400 },
                { "reserved first", 40, 1, 1 },
                { "reserved last", 63, 1, 0x80 },
                { "root parent", E(0, 0), 4, 1 },
                { "root name_len", E(0, 8), 2, 1 },
                { "root regular", E(0, 10), 1, 1 },
                { "root symlink", E(0, 10), 1, 3 },
                { "root first child", E(0, 36), 4, 2 },
                { "root children", E(0, 40), 4, 3 },
                { "root fewer children", E(0, 40), 4, 1 },
                { "root size", E(0, 16), 8, 3 },
                { "root digest", E(0, 48), 1, 1 },
                { "type 0", E(1, 10), 1, 0 },
                { "type 4", E(1, 10), 1, 4 },
                { "type 255", E(1, 10), 1, 255 },
                { "reserved byte", E(1, 11), 1, 1 },
                { "reserved word", E(1, 44), 4, 1 },
                { "sticky", E(1, 12), 4, 01000 },
                { "mode high", E(1, 12), 4, 0x10000 },
                { "nsec", E(1, 32), 4, 1000000000 },
                { "nsec max", E(1, 32), 4, UINT32_MAX },
                { "dir digest", E(1, 48 + 31), 1, 1 },
                { "dir no children", E(1, 40), 4, 0 },
                { "dir first child", E(1, 36), 4, 2 },
                { "dir first child past", E(1, 36), 4, 4 },
                { "dir size", E(1, 16), 8, 2 },
                { "dir size high", E(1, 16), 8, UINT64_C(1) << 32 | 1 },
                { "parent is a later entry", E(1, 0), 4, 2 },
                { "parent is itself", E(3, 0), 4, 3 },
                { "parent outside range", E(3, 0), 4, 0 },
                { "parent is a symlink", E(3, 0), 4, 2 },
                { "parent huge", E(3, 0), 4, UINT32_MAX },
                { "name_off gap", E(1, 4), 4, 1 },
                { "name_off later", E(3, 4), 4, 4 },
                { "name_len 0", E(1, 8), 2, 0 },
                { "name_len long", E(3, 8), 2, 2 },
                { "name_len past strings", E(3, 8), 2, 0xffff },
                { "symlink digest", E(2, 48), 1, 1 },
                { "symlink target offset", E(2, 36), 4, 1 },
                { "symlink target empty", E(2, 40), 4, 0 },
                { "symlink target longer", E(2, 40), 4, 4 },
                { "symlink target huge", E(2, 40), 4, 4096 },
                { "symlink size", E(2, 16), 8, 4 },
                { "regular a", E(3, 36), 4, 1 },
                { "regular b", E(3, 40), 4, 1 },
                { "duplicate names", 384, 1, 'l' },
                { "unsorted names", 384, 1, 'm' },
                { "name with slash", 384, 1, '/' },
                { "name with NUL", 384, 1, 0 },
                { "name is dot", 384, 1, '.' },
                { "target with NUL", 384 + 3, 1, 0 },
                { "padding", 390, 1, 1 },
                { "padding last", 391, 1, 0x80 },
        };
        uint8_t buf[sizeof(kat)];
        int r;

        for (size_t i = 0; i < ELEMENTSOF(patches); i++) {
                memcpy(buf, kat, sizeof(kat));
                for (unsigned k = 0; k < patches[i].width; k++)
                        buf[patches[i].off + k] = (uint8_t)(patches[i].value >> (8 * k));
                r = parse_copy(buf, sizeof(buf));
                if (r != -EBADMSG)
                        fail_msg("%s: got %d instead of -EBADMSG", patches[i].what, r);
        }
}

/* Writes a manifest from raw entries, computing only the string offsets, so that tests can state
 * trees the builder would never produce. */
typedef struct RawEntry {
        uint32_t parent;
        const char *name;
        size_t name_len;
        uint8_t type;
        uint32_t a, b; /* directory; for a symlink, b is overridden by the target length */
        const char *target;
        size_t target_len;
} RawEntry;

static size_t raw_write(const RawEntry *r, uint32_t n, uint8_t *buf, size_t size)
{
        uint64_t strings_off = 64 + 80 * (uint64_t)n, str = 0, total;

        for (uint32_t i = 0; i < n; i++)
                str += r[i].name_len + r[i].target_len;
        total = (strings_off + str + 7) & ~UINT64_C(7);
        assert_true(total <= size);
        memset(buf, 0, total);
        memcpy(buf, NANO_MANIFEST_MAGIC, 8);
        le32_write(buf + 8, n);
        le64_write(buf + 16, strings_off);
        le64_write(buf + 24, str);
        le64_write(buf + 32, total);

        str = 0;
        for (uint32_t i = 0; i < n; i++) {
                uint8_t *e = buf + 64 + 80 * i;

                le32_write(e + 0, r[i].parent);
                le32_write(e + 4, (uint32_t)str);
                le16_write(e + 8, (uint16_t)r[i].name_len);
                e[10] = r[i].type;
                le32_write(e + 12, r[i].type == NANO_ENTRY_SYMLINK ? 0777 : 0755);
                memcpy(buf + strings_off + str, r[i].name, r[i].name_len);
                str += r[i].name_len;
                if (r[i].type == NANO_ENTRY_DIRECTORY) {
                        le64_write(e + 16, r[i].b);
                        le32_write(e + 36, r[i].a);
                        le32_write(e + 40, r[i].b);
                } else if (r[i].type == NANO_ENTRY_SYMLINK) {
                        le64_write(e + 16, r[i].target_len);
                        le32_write(e + 36, (uint32_t)str);
                        le32_write(e + 40, (uint32_t)r[i].target_len);
                        memcpy(buf + strings_off + str, r[i].target, r[i].target_len);
                        str += r[i].target_len;
                }
        }
        return (size_t)total;
}

#define ROOT(a, b) { 0, "", 0, NANO_ENTRY_DIRECTORY, a, b, NULL, 0 }
#define DIR(p, name, a, b) { p, name, sizeof(name) - 1, NANO_ENTRY_DIRECTORY, a, b, NULL, 0 }
#define FILE_(p, name) { p, name, sizeof(name) - 1, NANO_ENTRY_REGULAR, 0, 0, NULL, 0 }
#define LINK(p, name, t) { p, name, sizeof(name) - 1, NANO_ENTRY_SYMLINK, 0, 0, t, sizeof(t) - 1 }

typedef struct RawCase {
        const char *what;
        int r;
        RawEntry e[6];
        uint32_t n;
} RawCase;

static char long_name[NANO_NAME_MAX + 2];
static char long_target[NANO_SYMLINK_MAX + 2];

static const RawCase raw_cases[] = {
        { "root only", 0, { ROOT(1, 0) }, 1 },
        { "one file", 0, { ROOT(1, 1), FILE_(0, "x") }, 2 },
        { "prefix first", 0, { ROOT(1, 2), FILE_(0, "a"), FILE_(0, "ab") }, 3 },
        { "bytewise", 0, { ROOT(1, 2), FILE_(0, "Z"), FILE_(0, "\xe9") }, 3 },
        { "dots", 0, { ROOT(1, 3), FILE_(0, "..."), FILE_(0, ".a"), FILE_(0, "a.") }, 4 },
        { "empty dirs", 0, { ROOT(1, 2), DIR(0, "a", 3, 0), DIR(0, "b", 3, 1), FILE_(2, "c") }, 4 },
        { "dot", -EBADMSG, { ROOT(1, 1), FILE_(0, ".") }, 2 },
        { "dot dot", -EBADMSG, { ROOT(1, 1), FILE_(0, "..") }, 2 },
        { "slash", -EBADMSG, { ROOT(1, 1), FILE_(0, "a/b") }, 2 },
        { "NUL", -EBADMSG, { ROOT(1, 1), FILE_(0, "a\0b") }, 2 },
        { "unsorted", -EBADMSG, { ROOT(1, 2), FILE_(0, "b"), FILE_(0, "a") }, 3 },
        { "prefix last", -EBADMSG, { ROOT(1, 2), FILE_(0, "ab"), FILE_(0, "a") }, 3 },
        { "signed order", -EBADMSG, { ROOT(1, 2), FILE_(0, "\xe9"), FILE_(0, "Z") }, 3 },
        { "duplicate", -EBADMSG, { ROOT(1, 2), FILE_(0, "a"), FILE_(0, "a") }, 3 },
        { "duplicate dirs", -EBADMSG, { ROOT(1, 2), DIR(0, "a", 3, 0), DIR(0, "a", 3, 0) }, 3 },
        { "target NUL", -EBADMSG, { ROOT(1, 1), LINK(0, "l", "a\0b") }, 2 },
        { "ranges swapped", -EBADMSG,
          { ROOT(1, 2), DIR(0, "a", 4, 1), DIR(0, "b", 3, 1), FILE_(2, "x"), FILE_(1, "y") }, 5 },
        { "empty dir misplaced", -EBADMSG,
          { ROOT(1, 2), DIR(0, "a", 4, 0), DIR(0, "b", 3, 1), FILE_(2, "c") }, 4 },
        { "child before parent", -EBADMSG,
          { ROOT(1, 2), FILE_(2, "a"), DIR(0, "b", 1, 1) }, 3 },
        { "children not covered", -EBADMSG, { ROOT(1, 1), FILE_(0, "a"), FILE_(0, "b") }, 3 },
        { "range past end", -EBADMSG, { ROOT(1, 2), FILE_(0, "a") }, 2 },
        { "root in own range", -EBADMSG, { ROOT(0, 2), FILE_(0, "a") }, 2 },
        { "dir as own parent", -EBADMSG, { ROOT(1, 1), DIR(1, "a", 2, 0) }, 2 },
        { "file as parent", -EBADMSG, { ROOT(1, 1), FILE_(0, "a"), FILE_(1, "b") }, 3 },
};

static void test_raw_cases(void **state)
{
        static uint8_t buf[16384];
        RawEntry e[3];
        size_t size;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(raw_cases); i++) {
                size = raw_write(raw_cases[i].e, raw_cases[i].n, buf, sizeof(buf));
                r = parse_copy(buf, size);
                if (r != raw_cases[i].r)
                        fail_msg("%s: got %d instead of %d", raw_cases[i].what, r, raw_cases[i].r);
        }

        /* Lengths at and past the limits. */
        memset(long_name, 'n', sizeof(long_name) - 1);
        memset(long_target, 't', sizeof(long_target) - 1);
        e[0] = (RawEntry)ROOT(1, 1);
        e[1] = (RawEntry){ 0, long_name, NANO_NAME_MAX, NANO_ENTRY_REGULAR, 0, 0, NULL, 0 };
        assert_int_equal(parse_copy(buf, raw_write(e, 2, buf, sizeof(buf))), 0);
        e[1].name_len++;
        assert_int_equal(parse_copy(buf, raw_write(e, 2, buf, sizeof(buf))), -EBADMSG);
        e[1] = (RawEntry){ 0, "l", 1, NANO_ENTRY_SYMLINK, 0, 0, long_target, NANO_SYMLINK_MAX };
        assert_int_equal(parse_copy(buf, raw_write(e, 2, buf, sizeof(buf))), 0);
        e[1].target_len++;
        assert_int_equal(parse_copy(buf, raw_write(e, 2, buf, sizeof(buf))), -EBADMSG);
}

/* Every single-bit flip and byte inversion is either rejected or gives a different, valid tree whose
 * canonical form is exactly the flipped bytes: no tree has a second encoding. */
static void check_flips(const uint8_t *orig, size_t size)
{
        _cleanup_free_ uint8_t *buf = malloc(size);
        unsigned accepted = 0, rejected = 0;

        assert_non_null(buf);
        for (size_t off = 0; off < size; off++)
                for (int bit = 0; bit <= 8; bit++) {
                        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
                        _cleanup_free_ uint8_t *again = NULL;
                        size_t again_size;
                        int r;

                        memcpy(buf, orig, size);
                        buf[off] ^= bit == 8 ? 0xff : (uint8_t)(1u << bit);
                        r = nano_manifest_parse(buf, size, &m);
                        if (r < 0) {
                                assert_int_equal(r, -EBADMSG);
                                rejected++;
                                continue;
                        }
                        accepted++;
                        assert_int_equal(reserialize(m, &again, &again_size), 0);
                        assert_int_equal(again_size, size);
                        if (memcmp(again, buf, size) != 0)
                                fail_msg("flip at offset %zu (bit %d) gives a second encoding", off, bit);
                }
        print_message("# %zu bytes: %u flips rejected, %u accepted as other trees\n", size, rejected,
                      accepted);
        /* The header, structure and strings must be the bulk of what is rejected. */
        assert_true(rejected > accepted);
}

static void test_byte_flips(void **state)
{
        _cleanup_free_ uint8_t *rich = NULL;
        size_t rich_size;

        check_flips(kat, sizeof(kat));
        build_rich(&rich, &rich_size);
        check_flips(rich, rich_size);
}

/* ---- Files. */

static int write_at(int dirfd, const char *name, const void *buf, size_t size)
{
        _cleanup_close_ int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (fd < 0)
                return -errno;
        return write_all(fd, buf, size);
}

static void test_open_at(void **state)
{
        char tmp[] = "/tmp/test-manifest-XXXXXX";
        _cleanup_close_ int dfd = -EBADF;
        NanoManifest *m = NULL;
        uint8_t bad[sizeof(kat)];
        uint32_t idx;

        assert_non_null(mkdtemp(tmp));
        dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(dfd >= 0);

        assert_int_equal(write_at(dfd, "good", kat, sizeof(kat)), 0);
        assert_int_equal(nano_manifest_open_at(dfd, "good", &m), 0);
        assert_int_equal(nano_manifest_count(m), 4);
        assert_int_equal(nano_manifest_resolve(m, "a/f", &idx), 0);
        assert_int_equal(idx, 3);
        m = nano_manifest_free(m);
        assert_null(m);

        memcpy(bad, kat, sizeof(kat));
        bad[100] ^= 0x40;
        assert_int_equal(write_at(dfd, "bad", bad, sizeof(bad)), 0);
        assert_int_equal(write_at(dfd, "empty", "", 0), 0);
        assert_int_equal(write_at(dfd, "short", kat, 63), 0);
        assert_int_equal(symlinkat("good", dfd, "link"), 0);
        assert_int_equal(mkdirat(dfd, "dir", 0755), 0);

        assert_int_equal(nano_manifest_open_at(dfd, "bad", &m), -EBADMSG);
        assert_int_equal(nano_manifest_open_at(dfd, "empty", &m), -EBADMSG);
        assert_int_equal(nano_manifest_open_at(dfd, "short", &m), -EBADMSG);
        assert_int_equal(nano_manifest_open_at(dfd, "link", &m), -ELOOP);
        assert_int_equal(nano_manifest_open_at(dfd, "dir", &m), -EISDIR);
        assert_int_equal(nano_manifest_open_at(dfd, "missing", &m), -ENOENT);
        assert_null(m);

        {
                char p[sizeof(tmp) + 8];
                snprintf(p, sizeof(p), "%s/good", tmp);
                assert_int_equal(nano_manifest_open_at(AT_FDCWD, p, &m), 0);
                m = nano_manifest_free(m);
        }

        static const char *const files[] = { "good", "bad", "empty", "short", "link" };
        for (size_t i = 0; i < ELEMENTSOF(files); i++)
                assert_int_equal(unlinkat(dfd, files[i], 0), 0);
        assert_int_equal(unlinkat(dfd, "dir", AT_REMOVEDIR), 0);
        assert_int_equal(rmdir(tmp), 0);
}

/* Writes the seed corpus of tests/fuzz/fuzz-manifest into $NANO_MANIFEST_CORPUS: the valid
 * manifests above and broken ones. Run only when that variable is set, instead of the tests. */
static void test_write_corpus(void **state)
{
        const char *dir = getenv("NANO_MANIFEST_CORPUS");
        static GenEntry g[60];
        static size_t order[ELEMENTSOF(g)];
        static uint8_t raw[16384];
        _cleanup_free_ uint8_t *rich = NULL, *gen = NULL;
        _cleanup_close_ int dfd = -EBADF;
        size_t rich_size, gen_size, n;
        uint8_t digest[32], buf[sizeof(kat)];

        assert_non_null(dir);
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(dfd >= 0);

        build_rich(&rich, &rich_size);
        n = gen_tree(5, g, ELEMENTSOF(g));
        for (size_t i = 0; i < n; i++)
                order[i] = i;
        build_gen(g, order, n, &gen, &gen_size, digest);

        assert_int_equal(write_at(dfd, "valid-kat", kat, sizeof(kat)), 0);
        assert_int_equal(write_at(dfd, "valid-rich", rich, rich_size), 0);
        assert_int_equal(write_at(dfd, "valid-generated", gen, gen_size), 0);
        for (size_t i = 0; i < ELEMENTSOF(raw_cases); i++) {
                char name[64], *p;

                snprintf(name, sizeof(name), "%s-%s", raw_cases[i].r == 0 ? "valid" : "bad",
                         raw_cases[i].what);
                for (p = name; *p; p++)
                        if (*p == ' ')
                                *p = '-';
                assert_int_equal(write_at(dfd, name, raw, raw_write(raw_cases[i].e, raw_cases[i].n, raw,
                                                                    sizeof(raw))),
                                 0);
        }
        assert_int_equal(write_at(dfd, "bad-truncated", rich, rich_size - 8), 0);
        memcpy(buf, kat, sizeof(kat));
        buf[E(3, 0)] = 0;
        assert_int_equal(write_at(dfd, "bad-parent", buf, sizeof(buf)), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_path_normalize),
                cmocka_unit_test(test_known_answer),
                cmocka_unit_test(test_orders),
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_root_only),
                cmocka_unit_test(test_implicit_parents),
                cmocka_unit_test(test_replace),
                cmocka_unit_test(test_replace_churn),
                cmocka_unit_test(test_bad_entries),
                cmocka_unit_test(test_hard_links),
                cmocka_unit_test(test_large),
                cmocka_unit_test(test_lookup_resolve_path),
                cmocka_unit_test(test_truncated),
                cmocka_unit_test(test_corrupt_fields),
                cmocka_unit_test(test_raw_cases),
                cmocka_unit_test(test_byte_flips),
                cmocka_unit_test(test_open_at),
        };
        const struct CMUnitTest corpus[] = {
                cmocka_unit_test(test_write_corpus),
        };

        if (getenv("NANO_MANIFEST_CORPUS"))
                return cmocka_run_group_tests(corpus, NULL, NULL);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
