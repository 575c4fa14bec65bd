/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <zstd.h>

#include <cmocka.h>

#include "blob.h"
#include "macros.h"
#include "util.h"

/* ---- Helpers. Everything lives in memfds: no root, no files left behind. */

static int new_memfd(void)
{
        int fd = memfd_create("test-blob", MFD_CLOEXEC);
        assert_true(fd >= 0);
        return fd;
}

static uint64_t rng_next(uint64_t *s)
{
        /* xorshift64*: deterministic, so a failure reproduces. */
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        return *s * UINT64_C(2685821657736338717);
}

/* Random bytes (zstd stores them as raw blocks) or text-like bytes that compress well. */
static uint8_t *make_data(size_t n, bool compressible, uint64_t seed)
{
        static const char words[] = "the quick brown fox jumps over the lazy dog; nano stores blobs. ";
        uint8_t *p = malloc(n ? n : 1);
        uint64_t s = seed | 1;

        assert_non_null(p);
        for (size_t i = 0; i < n; i++) {
                if (compressible)
                        p[i] = (uint8_t)(i % 997 == 0 ? rng_next(&s)
                                                      : (uint64_t)words[i % (sizeof(words) - 1)]);
                else
                        p[i] = (uint8_t)rng_next(&s);
        }
        return p;
}

static int64_t write_blob(int fd, unsigned shift, const uint8_t *data, size_t size)
{
        _cleanup_(nano_chunk_compressor_freep) NanoChunkCompressor *c = NULL;
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        size_t chunk = (size_t)1 << shift;
        int64_t total;

        assert_int_equal(nano_chunk_compressor_new(NANO_BLOB_LEVEL_DEFAULT, &c), 0);
        assert_int_equal(nano_blob_writer_new(fd, shift, &w), 0);
        for (size_t off = 0; off < size; off += chunk) {
                assert_int_equal(nano_blob_writer_add_chunk(w, c, data + off, MIN(chunk, size - off)), 0);
                assert_int_equal(nano_blob_writer_size(w), MIN(off + chunk, size));
        }
        total = nano_blob_writer_finish(w);
        assert_true(total >= (int64_t)NANO_BLOB_MIN_SIZE);
        return total;
}

/* Opens a blob on a duplicate of fd, so that the test keeps its own fd to corrupt the file. */
static int open_dup(int fd, NanoBlob **ret)
{
        int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        int r;

        assert_true(dfd >= 0);
        r = nano_blob_open_fd(dfd, ret);
        if (r < 0)
                safe_close(dfd);
        return r;
}

static uint64_t fd_size(int fd)
{
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        return (uint64_t)st.st_size;
}

static uint8_t *read_all(int fd, size_t *ret_size)
{
        size_t n = (size_t)fd_size(fd);
        uint8_t *p = malloc(n ? n : 1);

        assert_non_null(p);
        assert_int_equal(pread_full(fd, p, n, 0), (ssize_t)n);
        *ret_size = n;
        return p;
}

static int memfd_from(const void *p, size_t n)
{
        int fd = new_memfd();
        assert_int_equal(pwrite_all(fd, p, n, 0), 0);
        return fd;
}

static void xor_byte(int fd, uint64_t off, uint8_t mask)
{
        uint8_t b;
        assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
        b ^= mask;
        assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
}

/* The chunk table: 16 bytes per frame, its end offset then the XXH3 of its bytes. */
#define ENTRY_SIZE 16u

static uint64_t table_off(int fd, uint64_t n_chunks)
{
        return fd_size(fd) - NANO_BLOB_TRAILER_SIZE - ENTRY_SIZE * n_chunks;
}

/* Frame i spans [frame_start(i), table_entry(i)). */
static uint64_t table_entry(int fd, uint64_t n_chunks, uint64_t i)
{
        uint8_t b[8];
        assert_int_equal(pread(fd, b, 8, (off_t)(table_off(fd, n_chunks) + ENTRY_SIZE * i)), 8);
        return le64_read(b);
}

static uint64_t frame_start(int fd, uint64_t n_chunks, uint64_t i)
{
        return i == 0 ? NANO_BLOB_HEADER_SIZE : table_entry(fd, n_chunks, i - 1);
}

/* Rewrites the frame checksum of entry idx from the frame's current bytes, then the table and trailer
 * checksums: the container is consistent again, whatever was done to the frame. */
static void reseal_frame(int fd, uint64_t n_chunks, uint64_t idx)
{
        uint64_t start = frame_start(fd, n_chunks, idx), end = table_entry(fd, n_chunks, idx);
        uint64_t off = table_off(fd, n_chunks);
        size_t table_size = ENTRY_SIZE * n_chunks;
        _cleanup_free_ uint8_t *frame = malloc(end - start), *table = malloc(table_size);
        uint8_t trailer[NANO_BLOB_TRAILER_SIZE], sum[8];

        assert_non_null(frame);
        assert_non_null(table);
        assert_int_equal(pread_full(fd, frame, end - start, (off_t)start), (ssize_t)(end - start));
        le64_write(sum, XXH3_64bits(frame, end - start));
        assert_int_equal(pwrite_all(fd, sum, 8, (off_t)(off + ENTRY_SIZE * idx + 8)), 0);

        assert_int_equal(pread_full(fd, table, table_size, (off_t)off), (ssize_t)table_size);
        assert_int_equal(pread_full(fd, trailer, sizeof(trailer), (off_t)(off + table_size)),
                         (ssize_t)sizeof(trailer));
        le64_write(trailer + 16, XXH3_64bits(table, table_size));
        le64_write(trailer + 24, XXH3_64bits(trailer, 24));
        assert_int_equal(pwrite_all(fd, trailer, sizeof(trailer), (off_t)(off + table_size)), 0);
}

/* Writes a container from parts: the end offsets in `table`, the frame checksums in `sums`. */
static void craft_with_sums(int fd, uint64_t size, uint32_t shift, uint32_t n_chunks, const uint64_t *table,
                            const uint64_t *sums, size_t n_table, const void *frames, size_t frames_size)
{
        uint8_t trailer[NANO_BLOB_TRAILER_SIZE];
        _cleanup_free_ uint8_t *t = calloc(n_table + 1, ENTRY_SIZE);

        assert_non_null(t);
        for (size_t i = 0; i < n_table; i++) {
                le64_write(t + ENTRY_SIZE * i, table[i]);
                le64_write(t + ENTRY_SIZE * i + 8, sums[i]);
        }
        le64_write(trailer, size);
        le32_write(trailer + 8, shift);
        le32_write(trailer + 12, n_chunks);
        le64_write(trailer + 16, XXH3_64bits(t, ENTRY_SIZE * n_table));
        le64_write(trailer + 24, XXH3_64bits(trailer, 24));
        memcpy(trailer + 32, NANO_BLOB_END_MAGIC, 8);

        assert_int_equal(ftruncate(fd, 0), 0);
        assert_int_equal(pwrite_all(fd, NANO_BLOB_MAGIC, 8, 0), 0);
        assert_int_equal(pwrite_all(fd, frames, frames_size, 8), 0);
        assert_int_equal(pwrite_all(fd, t, ENTRY_SIZE * n_table, (off_t)(8 + frames_size)), 0);
        assert_int_equal(
                pwrite_all(fd, trailer, sizeof(trailer), (off_t)(8 + frames_size + ENTRY_SIZE * n_table)),
                0);
}

/* Writes a container from parts with correct checksums (the frame checksums too, wherever the end
 * offsets describe a range of `frames`), so that the reader's semantic checks, not the checksums,
 * are what rejects it. */
static void craft(int fd, uint64_t size, uint32_t shift, uint32_t n_chunks, const uint64_t *table,
                  size_t n_table, const void *frames, size_t frames_size)
{
        _cleanup_free_ uint64_t *sums = calloc(n_table + 1, sizeof(uint64_t));
        const uint8_t *f = frames;

        assert_non_null(sums);
        for (size_t i = 0; i < n_table; i++) {
                uint64_t start = i > 0 ? table[i - 1] : 8;
                if (start >= 8 && start <= table[i] && table[i] <= 8 + frames_size)
                        sums[i] = XXH3_64bits(f + start - 8, table[i] - start);
        }
        craft_with_sums(fd, size, shift, n_chunks, table, sums, n_table, frames, frames_size);
}

static void check_contents(NanoBlob *b, const uint8_t *data, size_t size)
{
        size_t chunk = (size_t)1 << nano_blob_chunk_shift(b);
        _cleanup_free_ uint8_t *buf = malloc(size + chunk + 1);

        assert_non_null(buf);
        assert_int_equal(nano_blob_size(b), size);
        assert_int_equal(nano_blob_n_chunks(b), DIV_ROUND_UP(size, chunk));

        for (uint64_t i = 0; i < nano_blob_n_chunks(b); i++) {
                size_t len = MIN(chunk, size - i * chunk);
                assert_int_equal(nano_blob_read_chunk(b, i, buf), (ssize_t)len);
                assert_memory_equal(buf, data + i * chunk, len);
        }
        assert_int_equal(nano_blob_read_chunk(b, nano_blob_n_chunks(b), buf), -EINVAL);

        memset(buf, 0xaa, size + chunk + 1);
        assert_int_equal(nano_blob_pread(b, buf, size + chunk + 1, 0), (ssize_t)size);
        if (size > 0)
                assert_memory_equal(buf, data, size);
        assert_int_equal(buf[size], 0xaa);
}

/* ---- Tests. */

static void test_empty(void **state)
{
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_close_ int fd = new_memfd();
        _cleanup_free_ uint8_t *raw = NULL;
        uint8_t buf[16];
        size_t n;

        assert_int_equal(write_blob(fd, 18, NULL, 0), 48);

        /* Known answer: the whole 48-byte empty container. */
        raw = read_all(fd, &n);
        assert_int_equal(n, 48);
        assert_memory_equal(raw, "NANOBLB\x01", 8);
        assert_int_equal(le64_read(raw + 8), 0);
        assert_int_equal(le32_read(raw + 16), 18);
        assert_int_equal(le32_read(raw + 20), 0);
        assert_int_equal(le64_read(raw + 24), UINT64_C(0x2D06800538D394C2)); /* XXH3_64bits("") */
        assert_int_equal(le64_read(raw + 32), XXH3_64bits(raw + 8, 24));
        assert_memory_equal(raw + 40, "NANOBEND", 8);

        assert_int_equal(open_dup(fd, &b), 0);
        assert_int_equal(nano_blob_size(b), 0);
        assert_int_equal(nano_blob_n_chunks(b), 0);
        assert_int_equal(nano_blob_chunk_shift(b), 18);
        assert_int_equal(nano_blob_stored_size(b), 48);
        assert_int_equal(nano_blob_pread(b, buf, sizeof(buf), 0), 0);
        assert_int_equal(nano_blob_pread(b, buf, sizeof(buf), 12345), 0);
        assert_int_equal(nano_blob_read_chunk(b, 0, buf), -EINVAL);
}

/* The chunk table as doc/formats.md describes it, read from the bytes rather than through the reader:
 * per frame its end offset, then the XXH3 of its compressed bytes. */
static void test_table_layout(void **state)
{
        const size_t size = 2 * 4096 + 100;
        _cleanup_close_ int fd = new_memfd();
        _cleanup_free_ uint8_t *data = make_data(size, true, 3), *raw = NULL;
        const uint8_t *table, *trailer;
        uint64_t prev = NANO_BLOB_HEADER_SIZE;
        size_t n;

        write_blob(fd, 12, data, size);
        raw = read_all(fd, &n);
        assert_true(n > NANO_BLOB_MIN_SIZE + 3 * ENTRY_SIZE);
        trailer = raw + n - NANO_BLOB_TRAILER_SIZE;
        table = trailer - 3 * ENTRY_SIZE;
        assert_int_equal(le64_read(trailer), size);
        assert_int_equal(le32_read(trailer + 8), 12);
        assert_int_equal(le32_read(trailer + 12), 3);
        assert_int_equal(le64_read(trailer + 16), XXH3_64bits(table, 3 * ENTRY_SIZE));

        for (size_t i = 0; i < 3; i++) {
                uint64_t end = le64_read(table + ENTRY_SIZE * i);

                assert_true(end > prev);
                assert_int_equal(le64_read(table + ENTRY_SIZE * i + 8), XXH3_64bits(raw + prev, end - prev));
                assert_int_equal(ZSTD_getFrameContentSize(raw + prev, end - prev),
                                 MIN(4096, size - i * 4096));
                prev = end;
        }
        assert_int_equal(prev, (uint64_t)(table - raw));
}

static void test_roundtrip(void **state)
{
        static const unsigned shifts[] = {12, 18};

        for (size_t s = 0; s < ELEMENTSOF(shifts); s++) {
                size_t c = (size_t)1 << shifts[s];
                const size_t sizes[] = {0, 1, c - 1, c, c + 1, 3 * c, 5 * c + 123};

                for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                        for (int compressible = 0; compressible <= 1; compressible++) {
                                _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
                                _cleanup_close_ int fd = new_memfd();
                                _cleanup_free_ uint8_t *data = make_data(sizes[i], compressible, i + 1);
                                int64_t total = write_blob(fd, shifts[s], data, sizes[i]);

                                assert_int_equal((uint64_t)total, fd_size(fd));
                                assert_int_equal(open_dup(fd, &b), 0);
                                assert_int_equal(nano_blob_chunk_shift(b), shifts[s]);
                                assert_int_equal(nano_blob_stored_size(b), (uint64_t)total);
                                check_contents(b, data, sizes[i]);
                                if (compressible && sizes[i] >= 3 * c)
                                        assert_true((uint64_t)total < sizes[i] / 4);
                        }
        }
}

static void test_pread_offsets(void **state)
{
        const size_t c = 4096, size = 5 * c + 100;
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_close_ int fd = new_memfd();
        _cleanup_free_ uint8_t *data = make_data(size, false, 7);
        _cleanup_free_ uint8_t *buf = malloc(size + 2 * c);
        const uint64_t offs[] = {0,        1,         c - 1,           c,         c + 1,    2 * c - 1,
                                 2 * c,    5 * c - 1, 5 * c,           5 * c + 1, size - 1, size,
                                 size + 1, size + c,  UINT64_MAX - 10, UINT64_MAX};
        const size_t lens[] = {0, 1, 2, 100, c - 1, c, c + 1, 2 * c, 3 * c + 5, size, size + 1, SIZE_MAX};
        uint64_t rng = 99;

        assert_non_null(buf);
        write_blob(fd, 12, data, size);
        assert_int_equal(open_dup(fd, &b), 0);

        for (size_t i = 0; i < ELEMENTSOF(offs); i++)
                for (size_t j = 0; j < ELEMENTSOF(lens); j++) {
                        uint64_t off = offs[i];
                        size_t want = off >= size ? 0 : (size_t)MIN((uint64_t)lens[j], size - off);

                        /* buf holds all lens but SIZE_MAX, which the object's size cuts short. */
                        assert_int_equal(nano_blob_pread(b, buf, lens[j], off), (ssize_t)want);
                        if (want > 0)
                                assert_memory_equal(buf, data + off, want);
                }

        for (int k = 0; k < 2000; k++) {
                uint64_t off = rng_next(&rng) % (size + 10);
                size_t len = (size_t)(rng_next(&rng) % (3 * c));
                size_t want = off >= size ? 0 : (size_t)MIN((uint64_t)len, size - off);

                assert_int_equal(nano_blob_pread(b, buf, len, off), (ssize_t)want);
                if (want > 0)
                        assert_memory_equal(buf, data + off, want);
        }
}

/* Corrupts every frame but those of the chunks [first, last], then shows that a read of that range
 * still succeeds: so it decompressed nothing else. */
static void check_read_touches(const uint8_t *container, size_t container_size, const uint8_t *data,
                               size_t size, unsigned shift, uint64_t off, size_t len)
{
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_close_ int fd = memfd_from(container, container_size);
        _cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
        _cleanup_free_ uint8_t *chunk = malloc((size_t)1 << shift);
        uint64_t n = DIV_ROUND_UP((uint64_t)size, UINT64_C(1) << shift);
        uint64_t first = off >> shift, last = (off + len - 1) >> shift;
        size_t want = (size_t)MIN((uint64_t)len, size - off);

        assert_non_null(buf);
        assert_non_null(chunk);
        for (uint64_t i = 0; i < n; i++) {
                uint64_t s = frame_start(fd, n, i), e = table_entry(fd, n, i);
                if (i < first || i > last)
                        xor_byte(fd, s + (e - s) / 2, 0xff);
        }

        assert_int_equal(open_dup(fd, &b), 0);
        assert_int_equal(nano_blob_pread(b, buf, len, off), (ssize_t)want);
        assert_memory_equal(buf, data + off, want);

        /* The corruption is real: the other chunks fail. */
        for (uint64_t i = 0; i < n; i++)
                if (i < first || i > last)
                        assert_int_equal(nano_blob_read_chunk(b, i, chunk), -EBADMSG);
}

static void test_read_touches_only_needed_chunks(void **state)
{
        static const unsigned shifts[] = {12, 18};

        for (size_t s = 0; s < ELEMENTSOF(shifts); s++)
                for (int compressible = 0; compressible <= 1; compressible++) {
                        size_t c = (size_t)1 << shifts[s], size = 8 * c - 1000;
                        _cleanup_close_ int fd = new_memfd();
                        _cleanup_free_ uint8_t *data = make_data(size, compressible, 3);
                        _cleanup_free_ uint8_t *container = NULL;
                        size_t container_size;
                        const uint64_t offs[] = {0,          1,           c - 4096,   c - 4095,
                                                 c - 1,      c,           c + 1,      3 * c - 2048,
                                                 6 * c + 17, size - 4096, size - 4095};

                        write_blob(fd, shifts[s], data, size);
                        container = read_all(fd, &container_size);

                        /* 4 KiB reads touch one chunk, or two across a boundary, never more. */
                        for (size_t i = 0; i < ELEMENTSOF(offs); i++)
                                check_read_touches(container, container_size, data, size, shifts[s], offs[i],
                                                   4096);

                        /* Whole chunks, and a range spanning three. */
                        check_read_touches(container, container_size, data, size, shifts[s], c, 2 * c);
                        check_read_touches(container, container_size, data, size, shifts[s], c + 1, 2 * c);
                        check_read_touches(container, container_size, data, size, shifts[s], 7 * c,
                                           size - 7 * c);
                }
}

/* Every byte of every frame, flipped three ways: every read of the chunk fails with -EBADMSG, since
 * the frame's XXH3 in the table covers every byte of it ("a flipped byte in a stored object is
 * reported by fsck").
 *
 * Then, with the table resealed to match the flipped frame, what zstd alone makes of it: -EBADMSG
 * or the original bytes, never other ones. The latter happens: a few bits of a compressed block do
 * not influence its output (the content checksum covers the output only), which is why the table
 * carries a checksum of each frame. It is merely counted. */
static void test_frame_corruption(void **state)
{
        static const uint8_t masks[] = {0xff, 0x01, 0x80};

        for (int compressible = 0; compressible <= 1; compressible++) {
                const size_t c = 4096, size = 3 * c + 700;
                _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
                _cleanup_close_ int fd = new_memfd();
                _cleanup_free_ uint8_t *data = make_data(size, compressible, 11);
                _cleanup_free_ uint8_t *buf = malloc(size);
                const uint64_t n = 4;
                unsigned flips = 0, harmless = 0;

                assert_non_null(buf);
                write_blob(fd, 12, data, size);
                assert_int_equal(open_dup(fd, &b), 0);

                for (uint64_t idx = 0; idx < n; idx++)
                        for (uint64_t pos = frame_start(fd, n, idx); pos < table_entry(fd, n, idx); pos++)
                                for (size_t m = 0; m < ELEMENTSOF(masks); m++) {
                                        size_t len = MIN(c, size - idx * c);
                                        ssize_t r;

                                        xor_byte(fd, pos, masks[m]);
                                        flips++;

                                        assert_int_equal(nano_blob_read_chunk(b, idx, buf), -EBADMSG);
                                        assert_int_equal(nano_blob_pread(b, buf, size, 0), -EBADMSG);

                                        /* A fresh blob each time: a partial read may come from the
                                         * thread's cached chunk, verified when it was decompressed. */
                                        {
                                                _cleanup_(nano_blob_freep) NanoBlob *b2 = NULL;
                                                assert_int_equal(open_dup(fd, &b2), 0);
                                                assert_int_equal(
                                                        nano_blob_pread(b2, buf, 10, idx * c + len / 2),
                                                        -EBADMSG);
                                        }

                                        /* zstd on its own. */
                                        reseal_frame(fd, n, idx);
                                        {
                                                _cleanup_(nano_blob_freep) NanoBlob *b3 = NULL;
                                                assert_int_equal(open_dup(fd, &b3), 0);
                                                memset(buf, 0, size);
                                                r = nano_blob_read_chunk(b3, idx, buf);
                                                if (r != -EBADMSG) {
                                                        assert_int_equal(r, (ssize_t)len);
                                                        assert_memory_equal(buf, data + idx * c, len);
                                                        harmless++;
                                                }
                                        }

                                        xor_byte(fd, pos, masks[m]);
                                        reseal_frame(fd, n, idx);
                                }

                /* Raw blocks (incompressible data) have no such bits. */
                if (!compressible)
                        assert_int_equal(harmless, 0);
                assert_true(harmless * 100 < flips);
                print_message(
                        "# %s data: all %u frame byte flips detected; %u would have decoded identically "
                        "without the frame checksums\n",
                        compressible ? "compressible" : "random", flips, harmless);

                /* Restored: everything reads again. */
                check_contents(b, data, size);
        }
}

/* Every byte of the header, the table and the trailer, flipped: open fails with -EBADMSG. */
static void test_metadata_corruption(void **state)
{
        const size_t size = 5 * 4096 + 1;
        _cleanup_close_ int fd = new_memfd();
        _cleanup_free_ uint8_t *data = make_data(size, true, 5);
        uint64_t total, table_off;

        total = (uint64_t)write_blob(fd, 12, data, size);
        table_off = total - NANO_BLOB_TRAILER_SIZE - ENTRY_SIZE * 6;

        for (uint64_t pos = 0; pos < total; pos++) {
                if (pos == NANO_BLOB_HEADER_SIZE)
                        pos = table_off;
                for (unsigned bit = 0; bit < 8; bit++) {
                        NanoBlob *b = NULL;

                        xor_byte(fd, pos, (uint8_t)(1u << bit));
                        assert_int_equal(open_dup(fd, &b), -EBADMSG);
                        assert_null(b);
                        xor_byte(fd, pos, (uint8_t)(1u << bit));
                }
        }
}

static void test_truncated(void **state)
{
        for (int compressible = 0; compressible <= 1; compressible++) {
                const size_t size = 3 * 4096 + 500;
                _cleanup_close_ int fd = new_memfd();
                _cleanup_free_ uint8_t *data = make_data(size, compressible, 13);
                _cleanup_free_ uint8_t *container = NULL, *buf = malloc(size);
                size_t container_size;

                assert_non_null(buf);
                write_blob(fd, 12, data, size);
                container = read_all(fd, &container_size);

                for (size_t len = 0; len < container_size; len++) {
                        _cleanup_close_ int t = memfd_from(container, len);
                        NanoBlob *b = NULL;
                        assert_int_equal(open_dup(t, &b), -EBADMSG);
                }

                /* Trailing garbage moves the trailer: refused too. */
                {
                        _cleanup_close_ int t = memfd_from(container, container_size);
                        NanoBlob *b = NULL;
                        assert_int_equal(pwrite_all(t, "", 1, (off_t)container_size), 0);
                        assert_int_equal(open_dup(t, &b), -EBADMSG);
                }

                /* Truncated after open: reads of the missing frames fail, earlier ones still work. */
                {
                        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
                        _cleanup_close_ int t = memfd_from(container, container_size);
                        uint64_t cut;

                        assert_int_equal(open_dup(t, &b), 0);
                        cut = frame_start(t, 4, 2) + 3;
                        assert_int_equal(ftruncate(t, (off_t)cut), 0);
                        assert_int_equal(nano_blob_read_chunk(b, 0, buf), 4096);
                        assert_int_equal(nano_blob_read_chunk(b, 2, buf), -EBADMSG);
                        assert_int_equal(nano_blob_read_chunk(b, 3, buf), -EBADMSG);
                        assert_int_equal(nano_blob_pread(b, buf, size, 0), -EBADMSG);
                        assert_int_equal(nano_blob_pread(b, buf, 100, 4000), 100);
                        assert_memory_equal(buf, data + 4000, 100);
                }
        }
}

static size_t compress_plain(void *dst, size_t cap, const void *src, size_t len, int checksum,
                             int content_size)
{
        ZSTD_CCtx *cctx = ZSTD_createCCtx();
        size_t n;

        assert_non_null(cctx);
        assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, checksum)));
        assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, content_size)));
        n = ZSTD_compress2(cctx, dst, cap, src, len);
        assert_false(ZSTD_isError(n));
        ZSTD_freeCCtx(cctx);
        return n;
}

/* Containers whose checksums are right but whose contents break a rule of doc/formats.md. */
static void test_crafted(void **state)
{
        _cleanup_close_ int fd = new_memfd();
        _cleanup_free_ uint8_t *data = make_data(8192, true, 17);
        _cleanup_free_ uint8_t *frames = malloc(3 * ZSTD_compressBound(8192));
        _cleanup_free_ uint8_t *buf = malloc(1 << 13);
        NanoBlob *b = NULL;
        size_t f0, f1, f;
        uint64_t t[3];

        assert_non_null(frames);
        assert_non_null(buf);

        /* Two well-formed chunks of 4 KiB: the baseline opens and reads. */
        f0 = compress_plain(frames, ZSTD_compressBound(4096), data, 4096, 1, 1);
        f1 = compress_plain(frames + f0, ZSTD_compressBound(4096), data + 4096, 4096, 1, 1);
        t[0] = 8 + f0;
        t[1] = 8 + f0 + f1;
        craft(fd, 8192, 12, 2, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), 0);
        check_contents(b, data, 8192);
        b = nano_blob_free(b);

        /* A frame checksum off by one bit, or taken over the content instead of the frame: open
         * succeeds (frames are checked when read), reads of that chunk fail, the other chunk reads. */
        for (int k = 0; k < 2; k++) {
                uint64_t sums[2] = {XXH3_64bits(frames, f0), k == 0 ? XXH3_64bits(frames + f0, f1) ^ 1
                                                                    : XXH3_64bits(data + 4096, 4096)};

                craft_with_sums(fd, 8192, 12, 2, t, sums, 2, frames, f0 + f1);
                assert_int_equal(open_dup(fd, &b), 0);
                assert_int_equal(nano_blob_read_chunk(b, 0, buf), 4096);
                assert_memory_equal(buf, data, 4096);
                assert_int_equal(nano_blob_read_chunk(b, 1, buf), -EBADMSG);
                assert_int_equal(nano_blob_pread(b, buf, 100, 4096 + 10), -EBADMSG);
                assert_int_equal(nano_blob_pread(b, buf, 8192, 0), -EBADMSG);
                b = nano_blob_free(b);
        }

        /* chunk_shift out of range (n_chunks consistent with it). */
        craft(fd, 8192, 11, 4, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        craft(fd, 8192, 25, 1, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        /* n_chunks does not match size. */
        craft(fd, 8192, 12, 3, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        craft(fd, 8193, 12, 2, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        /* n_chunks claims a table larger than the file. */
        craft(fd, (uint64_t)UINT32_MAX << 12, 12, UINT32_MAX, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        /* size above the limit. */
        craft(fd, NANO_BLOB_SIZE_MAX + 1, 24, (uint32_t)((NANO_BLOB_SIZE_MAX >> 24) + 1), t, 2, frames,
              f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        /* Non-increasing, empty first frame, or not ending at the table. */
        t[0] = 8 + f0 + f1;
        craft(fd, 8192, 12, 2, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        t[0] = 8;
        craft(fd, 8192, 12, 2, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        t[0] = 8 + f0;
        t[1] = 8 + f0 + f1 - 1;
        craft(fd, 8192, 12, 2, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        t[0] = 8 + f0 + f1 + 1;
        t[1] = 8 + f0 + f1;
        craft(fd, 8192, 12, 2, t, 2, frames, f0 + f1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        /* A frame larger than ZSTD_compressBound(chunk). */
        memset(frames, 0, ZSTD_compressBound(4096) + 1);
        t[0] = 8 + ZSTD_compressBound(4096) + 1;
        craft(fd, 4096, 12, 1, t, 1, frames, ZSTD_compressBound(4096) + 1);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);
        /* An empty object that still has a frame. */
        t[0] = 8 + 10;
        craft(fd, 0, 12, 0, t, 0, frames, 10);
        assert_int_equal(open_dup(fd, &b), -EBADMSG);

        /* Frames the table accepts but decompression must refuse. Each case: one 4 KiB chunk. */
        for (int k = 0; k < 6; k++) {
                size_t size = 4096;

                switch (k) {
                case 0: /* no content checksum: it could not be verified */
                        f = compress_plain(frames, ZSTD_compressBound(4096), data, 4096, 0, 1);
                        break;
                case 1: /* no content size */
                        f = compress_plain(frames, ZSTD_compressBound(4096), data, 4096, 1, 0);
                        break;
                case 2: /* frame for fewer bytes than the chunk */
                        f = compress_plain(frames, ZSTD_compressBound(4096), data, 4095, 1, 1);
                        break;
                case 3: /* a valid frame followed by an empty one */
                        f = compress_plain(frames, ZSTD_compressBound(4096), data, 4096, 1, 1);
                        f += compress_plain(frames + f, 64, "", 0, 1, 1);
                        break;
                case 4: /* a valid frame followed by a skippable frame */
                        f = compress_plain(frames, ZSTD_compressBound(4096), data, 4096, 1, 1);
                        le32_write(frames + f, 0x184D2A50);
                        le32_write(frames + f + 4, 4);
                        memset(frames + f + 8, 0, 4);
                        f += 12;
                        break;
                case 5: /* last chunk shorter than the frame's content */
                        f = compress_plain(frames, ZSTD_compressBound(4096), data, 4096, 1, 1);
                        size = 4000;
                        break;
                }
                t[0] = 8 + f;
                craft(fd, size, 12, 1, t, 1, frames, f);
                assert_int_equal(open_dup(fd, &b), 0);
                assert_int_equal(nano_blob_read_chunk(b, 0, buf), -EBADMSG);
                assert_int_equal(nano_blob_pread(b, buf, 100, 0), -EBADMSG);
                assert_int_equal(nano_blob_pread(b, buf, size, 0), -EBADMSG);
                b = nano_blob_free(b);
        }

        /* Not a regular file. */
        {
                int p[2];
                assert_int_equal(pipe2(p, O_CLOEXEC), 0);
                assert_int_equal(nano_blob_open_fd(p[0], &b), -EBADFD);
                safe_close(p[0]);
                safe_close(p[1]);
        }
}

static void test_writer_misuse(void **state)
{
        _cleanup_(nano_chunk_compressor_freep) NanoChunkCompressor *c = NULL;
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_close_ int fd = new_memfd();
        _cleanup_free_ uint8_t *data = make_data(3 * 4096, false, 23);
        NanoChunkCompressor *c2 = NULL;
        NanoBlobWriter *w2 = NULL;
        const void *frame;
        size_t frame_size;
        int64_t total;

        assert_int_equal(nano_chunk_compressor_new(ZSTD_maxCLevel() + 1, &c2), -EINVAL);
        assert_null(c2);
        assert_int_equal(nano_blob_writer_new(fd, 11, &w2), -EINVAL);
        assert_int_equal(nano_blob_writer_new(fd, 25, &w2), -EINVAL);
        assert_int_equal(nano_blob_writer_new(-EBADF, 12, &w2), -EBADF);
        assert_null(w2);

        assert_int_equal(nano_chunk_compressor_new(1, &c), 0);
        assert_int_equal(nano_chunk_compress(c, data, ((size_t)1 << NANO_BLOB_CHUNK_SHIFT_MAX) + 1, &frame,
                                             &frame_size),
                         -EINVAL);
        assert_int_equal(nano_blob_writer_new(fd, 12, &w), 0);

        /* Chunk too big or empty. */
        assert_int_equal(nano_blob_writer_add_chunk(w, c, data, 4097), -EINVAL);
        assert_int_equal(nano_blob_writer_add_chunk(w, c, data, 0), -EINVAL);
        /* A frame whose content size is not the usize claimed. */
        assert_int_equal(nano_chunk_compress(c, data, 4096, &frame, &frame_size), 0);
        assert_int_equal(nano_blob_writer_add_frame(w, frame, frame_size, 4095), -EINVAL);
        assert_int_equal(nano_blob_writer_add_frame(w, frame, frame_size - 1, 4096), -EINVAL);
        assert_int_equal(nano_blob_writer_add_frame(w, "garbage!", 8, 4096), -EINVAL);

        /* A full chunk, then a short one: nothing may follow a short chunk. */
        assert_int_equal(nano_blob_writer_add_frame(w, frame, frame_size, 4096), 0);
        assert_int_equal(nano_blob_writer_add_chunk(w, c, data + 4096, 100), 0);
        assert_int_equal(nano_blob_writer_add_chunk(w, c, data + 4196, 4096), -EINVAL);
        assert_int_equal(nano_chunk_compress(c, data + 4196, 4096, &frame, &frame_size), 0);
        assert_int_equal(nano_blob_writer_add_frame(w, frame, frame_size, 4096), -EINVAL);
        assert_int_equal(nano_blob_writer_size(w), 4196);

        /* The refusals left the writer usable: its container holds the two accepted chunks. */
        total = nano_blob_writer_finish(w);
        assert_int_equal(total, (int64_t)fd_size(fd));
        assert_int_equal(nano_blob_writer_finish(w), -EINVAL);
        assert_int_equal(nano_blob_writer_add_chunk(w, c, data, 1), -EINVAL);
        assert_int_equal(open_dup(fd, &b), 0);
        check_contents(b, data, 4196);
}

/* Frames compressed on several threads, each with its own compressor, then added in order: the way a
 * parallel importer uses the API. */
typedef struct CompressJob {
        const uint8_t *data;
        size_t len;
        void *frame;
        size_t frame_size;
        int r;
} CompressJob;

static void *compress_thread(void *p)
{
        CompressJob *j = p;
        NanoChunkCompressor *c = NULL;
        const void *f;

        j->r = nano_chunk_compressor_new(NANO_BLOB_LEVEL_DEFAULT, &c);
        if (j->r < 0)
                return NULL;
        j->r = nano_chunk_compress(c, j->data, j->len, &f, &j->frame_size);
        if (j->r >= 0) {
                j->frame = malloc(j->frame_size);
                if (j->frame)
                        memcpy(j->frame, f, j->frame_size);
                else
                        j->r = -ENOMEM;
        }
        nano_chunk_compressor_free(c);
        return NULL;
}

static void test_parallel_compress(void **state)
{
        const size_t c = 1 << 14, size = 6 * c + 1;
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_close_ int fd = new_memfd();
        _cleanup_free_ uint8_t *data = make_data(size, true, 29);
        CompressJob jobs[7];
        pthread_t th[7];
        int64_t total;

        for (size_t i = 0; i < 7; i++) {
                jobs[i] = (CompressJob){.data = data + i * c, .len = MIN(c, size - i * c)};
                assert_int_equal(pthread_create(&th[i], NULL, compress_thread, &jobs[i]), 0);
        }
        assert_int_equal(nano_blob_writer_new(fd, 14, &w), 0);
        for (size_t i = 0; i < 7; i++) {
                assert_int_equal(pthread_join(th[i], NULL), 0);
                assert_int_equal(jobs[i].r, 0);
                assert_int_equal(
                        nano_blob_writer_add_frame(w, jobs[i].frame, jobs[i].frame_size, jobs[i].len), 0);
                free(jobs[i].frame);
        }
        total = nano_blob_writer_finish(w);
        assert_int_equal(total, (int64_t)fd_size(fd));
        assert_int_equal(open_dup(fd, &b), 0);
        check_contents(b, data, size);
}

typedef struct ReadJob {
        NanoBlob *blob;
        const uint8_t *data;
        size_t size;
        uint64_t seed;
        unsigned failures;
} ReadJob;

static void *read_thread(void *p)
{
        ReadJob *j = p;
        size_t c = (size_t)1 << nano_blob_chunk_shift(j->blob);
        uint8_t *buf = malloc(3 * c);
        uint64_t s = j->seed;

        if (!buf) {
                j->failures++;
                return NULL;
        }
        for (int k = 0; k < 3000; k++) {
                uint64_t off = rng_next(&s) % (j->size + 1);
                size_t len = (size_t)(rng_next(&s) % (3 * c)),
                       want = (size_t)MIN((uint64_t)len, j->size - off);

                if (k % 10 == 0) {
                        uint64_t idx = rng_next(&s) % nano_blob_n_chunks(j->blob);
                        want = MIN(c, j->size - idx * c);
                        if (nano_blob_read_chunk(j->blob, idx, buf) != (ssize_t)want ||
                            memcmp(buf, j->data + idx * c, want) != 0)
                                j->failures++;
                        continue;
                }
                if (nano_blob_pread(j->blob, buf, len, off) != (ssize_t)want ||
                    memcmp(buf, j->data + off, want) != 0)
                        j->failures++;
        }
        free(buf);
        return NULL;
}

static void test_concurrent_reads(void **state)
{
        const size_t size = 40 * 4096 + 333;
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_close_ int fd = new_memfd();
        _cleanup_free_ uint8_t *data = make_data(size, true, 31);
        ReadJob jobs[8];
        pthread_t th[8];

        /* Some incompressible stretches too, so that frames differ in kind. */
        for (size_t i = 0; i < size; i += 3 * 4096)
                for (size_t k = i; k < MIN(size, i + 4096); k++)
                        data[k] = (uint8_t)(k * 2654435761u >> 13);

        write_blob(fd, 12, data, size);
        assert_int_equal(open_dup(fd, &b), 0);

        for (size_t i = 0; i < ELEMENTSOF(th); i++) {
                jobs[i] = (ReadJob){.blob = b, .data = data, .size = size, .seed = i + 1};
                assert_int_equal(pthread_create(&th[i], NULL, read_thread, &jobs[i]), 0);
        }
        for (size_t i = 0; i < ELEMENTSOF(th); i++) {
                assert_int_equal(pthread_join(th[i], NULL), 0);
                assert_int_equal(jobs[i].failures, 0);
        }
}

/* Two blobs read alternately in one thread: the per-thread chunk cache must never serve one blob's
 * chunk for the other's, even when a blob is freed and another takes its memory. */
static void test_cache_isolation(void **state)
{
        const size_t size = 4 * 4096;
        _cleanup_free_ uint8_t *d1 = make_data(size, false, 41), *d2 = make_data(size, false, 43);
        _cleanup_close_ int fd1 = new_memfd(), fd2 = new_memfd();
        uint8_t buf[100];

        write_blob(fd1, 12, d1, size);
        write_blob(fd2, 12, d2, size);
        for (int k = 0; k < 20; k++) {
                _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
                int fd = k % 2 ? fd2 : fd1;
                const uint8_t *d = k % 2 ? d2 : d1;

                assert_int_equal(open_dup(fd, &b), 0);
                assert_int_equal(nano_blob_pread(b, buf, sizeof(buf), 4096 + 10), (ssize_t)sizeof(buf));
                assert_memory_equal(buf, d + 4096 + 10, sizeof(buf));
                assert_int_equal(nano_blob_pread(b, buf, sizeof(buf), 4096 + 200), (ssize_t)sizeof(buf));
                assert_memory_equal(buf, d + 4096 + 200, sizeof(buf));
        }
}

/* ---- Delta containers. */

/* Writes data as a delta of base (chunk i against the base's chunk i where the base has one). */
static int64_t write_delta(int fd, unsigned shift, const uint8_t *data, size_t size, NanoBlob *base,
                           const uint8_t base_id[32])
{
        _cleanup_(nano_chunk_compressor_freep) NanoChunkCompressor *c = NULL;
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        size_t chunk = (size_t)1 << shift;
        _cleanup_free_ uint8_t *prefix = malloc(chunk);
        int64_t total;

        assert_non_null(prefix);
        assert_int_equal(nano_chunk_compressor_new(NANO_BLOB_LEVEL_DEFAULT, &c), 0);
        assert_int_equal(nano_blob_writer_new(fd, shift, &w), 0);
        assert_int_equal(nano_blob_writer_set_base(w, base, base_id), 0);
        for (size_t off = 0, i = 0; off < size; off += chunk, i++) {
                size_t len = MIN(chunk, size - off);
                if (i < nano_blob_n_chunks(base)) {
                        const void *frame;
                        size_t n;
                        ssize_t plen = nano_blob_read_chunk(base, i, prefix);
                        assert_true(plen > 0);
                        assert_int_equal(
                                nano_chunk_compress_delta(c, data + off, len, prefix, (size_t)plen, &frame, &n), 0);
                        assert_int_equal(nano_blob_writer_add_delta_frame(w, frame, n, len), 0);
                } else
                        assert_int_equal(nano_blob_writer_add_chunk(w, c, data + off, len), 0);
        }
        total = nano_blob_writer_finish(w);
        assert_true(total >= (int64_t)NANO_BLOB_MIN_SIZE);
        return total;
}

typedef struct DeltaFixture {
        unsigned shift;
        size_t size, base_size;
        uint8_t *data, *base_data;
        uint8_t base_id[32];
        int base_fd, fd;
        int64_t plain_size, delta_size;
} DeltaFixture;

/* A base of 5.5 chunks of random bytes (incompressible, so only the base can shrink the delta) and a
 * new version: a few bytes changed in chunks 0 and 3, and 2 chunks more at the end. */
static void delta_fixture(DeltaFixture *f)
{
        _cleanup_(nano_blob_freep) NanoBlob *base = NULL;
        int plain_fd = new_memfd();
        size_t chunk;

        *f = (DeltaFixture){ .shift = 12 };
        chunk = (size_t)1 << f->shift;
        f->base_size = 5 * chunk + chunk / 2;
        f->size = f->base_size + 2 * chunk;
        f->base_data = make_data(f->base_size, false, 11);
        f->data = make_data(f->size, false, 12);
        memcpy(f->data, f->base_data, f->base_size);
        memcpy(f->data + 100, "changed!", 8);
        memcpy(f->data + 3 * chunk + 17, "and here", 8);
        memset(f->base_id, 0x42, sizeof f->base_id);

        f->base_fd = new_memfd();
        write_blob(f->base_fd, f->shift, f->base_data, f->base_size);
        f->plain_size = write_blob(plain_fd, f->shift, f->data, f->size);
        safe_close(plain_fd);
        assert_int_equal(open_dup(f->base_fd, &base), 0);
        f->fd = new_memfd();
        f->delta_size = write_delta(f->fd, f->shift, f->data, f->size, base, f->base_id);
}

static void delta_fixture_done(DeltaFixture *f)
{
        free(f->data);
        free(f->base_data);
        safe_close(f->base_fd);
        safe_close(f->fd);
}

static void test_delta_roundtrip(void **state)
{
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        NanoBlob *base = NULL;
        DeltaFixture f;
        uint8_t id[32], buf[16];
        char magic[8];

        (void)state;
        delta_fixture(&f);
        /* The 5.5 chunks the base has cost next to nothing; the 2 new ones what they cost alone. */
        assert_true(f.delta_size < f.plain_size * 2 / 5);
        assert_int_equal(pread(f.fd, magic, 8, 0), 8);
        assert_memory_equal(magic, NANO_BLOB_MAGIC_DELTA, 8);

        assert_int_equal(open_dup(f.fd, &b), 0);
        assert_true(nano_blob_is_delta(b, id));
        assert_memory_equal(id, f.base_id, 32);
        /* Without its base, the delta frames cannot be read; the plain ones can. */
                assert_int_equal(nano_blob_pread(b, buf, sizeof buf, 0), -ENOLINK);
        assert_int_equal(nano_blob_pread(b, buf, sizeof buf, f.size - sizeof buf), (ssize_t)sizeof buf);
        assert_memory_equal(buf, f.data + f.size - sizeof buf, sizeof buf);

        assert_int_equal(open_dup(f.base_fd, &base), 0);
        assert_false(nano_blob_is_delta(base, NULL));
        assert_int_equal(nano_blob_set_base(b, base), 0);
        check_contents(b, f.data, f.size);
        delta_fixture_done(&f);
}

static void test_delta_rules(void **state)
{
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL, *plain = NULL, *other_shift = NULL, *short_base = NULL,
                                            *delta_base = NULL;
        _cleanup_(nano_chunk_compressor_freep) NanoChunkCompressor *c = NULL;
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        _cleanup_close_ int fd13 = new_memfd(), fd_short = new_memfd(), wfd = new_memfd();
        DeltaFixture f;
        const void *frame;
        size_t n;
        char magic[8];

        (void)state;
        delta_fixture(&f);
        assert_int_equal(open_dup(f.fd, &b), 0);
        assert_int_equal(open_dup(f.base_fd, &plain), 0);

        /* Not a base: another chunk size, too few chunks for the delta frames, a delta itself. */
        write_blob(fd13, 13, f.base_data, f.base_size);
        assert_int_equal(open_dup(fd13, &other_shift), 0);
        assert_int_equal(nano_blob_set_base(b, other_shift), -EBADMSG);
        write_blob(fd_short, f.shift, f.base_data, 3 * ((size_t)1 << f.shift));
        assert_int_equal(open_dup(fd_short, &short_base), 0);
        assert_int_equal(nano_blob_set_base(b, short_base), -EBADMSG);
        assert_int_equal(open_dup(f.fd, &delta_base), 0);
        assert_int_equal(nano_blob_set_base(b, delta_base), -EBADMSG);
        /* A plain container takes no base. */
        assert_int_equal(nano_blob_set_base(plain, short_base), -EINVAL);

        /* The writer refuses the same. */
        assert_int_equal(nano_chunk_compressor_new(NANO_BLOB_LEVEL_DEFAULT, &c), 0);
        assert_int_equal(nano_blob_writer_new(wfd, f.shift, &w), 0);
        assert_int_equal(nano_chunk_compress_delta(c, f.data, 4096, f.base_data, 4096, &frame, &n), 0);
        assert_int_equal(nano_blob_writer_add_delta_frame(w, frame, n, 4096), -EINVAL); /* no base */
        assert_int_equal(nano_blob_writer_set_base(w, delta_base, f.base_id), -EINVAL);
        assert_int_equal(nano_blob_writer_set_base(w, other_shift, f.base_id), -EINVAL);
        assert_int_equal(nano_blob_writer_set_base(w, short_base, f.base_id), 0);
        for (unsigned i = 0; i < 3; i++) {
                assert_int_equal(nano_chunk_compress_delta(c, f.data + 4096 * i, 4096, f.base_data + 4096 * i, 4096,
                                                           &frame, &n),
                                 0);
                assert_int_equal(nano_blob_writer_add_delta_frame(w, frame, n, 4096), 0);
        }
        /* The base has 3 chunks: a 4th delta frame has nothing to refer to. */
        assert_int_equal(nano_chunk_compress_delta(c, f.data + 4096 * 3, 4096, f.base_data, 4096, &frame, &n), 0);
        assert_int_equal(nano_blob_writer_add_delta_frame(w, frame, n, 4096), -EINVAL);
        w = nano_blob_writer_free(w);

        /* A writer given a base but no delta frame writes a plain container. */
        assert_int_equal(ftruncate(wfd, 0), 0);
        assert_int_equal(nano_blob_writer_new(wfd, f.shift, &w), 0);
        assert_int_equal(nano_blob_writer_set_base(w, plain, f.base_id), 0);
        assert_int_equal(nano_blob_writer_add_chunk(w, c, f.data, 4096), 0);
        assert_true(nano_blob_writer_finish(w) > 0);
        assert_int_equal(pread(wfd, magic, 8, 0), 8);
        assert_memory_equal(magic, NANO_BLOB_MAGIC, 8);
        assert_int_equal(fd_size(wfd), 8 + (table_entry(wfd, 1, 0) - 8) + 16 + NANO_BLOB_TRAILER_SIZE);
        delta_fixture_done(&f);
}

/* Rewrites the table and trailer checksums of a plain container after its table was edited. */
static void reseal_table(int fd, uint64_t n_chunks)
{
        uint64_t off = table_off(fd, n_chunks);
        size_t table_size = ENTRY_SIZE * n_chunks;
        _cleanup_free_ uint8_t *table = malloc(table_size);
        uint8_t trailer[NANO_BLOB_TRAILER_SIZE];

        assert_non_null(table);
        assert_int_equal(pread_full(fd, table, table_size, (off_t)off), (ssize_t)table_size);
        assert_int_equal(pread_full(fd, trailer, sizeof trailer, (off_t)(off + table_size)), (ssize_t)sizeof trailer);
        le64_write(trailer + 16, XXH3_64bits(table, table_size));
        le64_write(trailer + 24, XXH3_64bits(trailer, 24));
        assert_int_equal(pwrite_all(fd, trailer, sizeof trailer, (off_t)(off + table_size)), 0);
}

/* Damage anywhere gives -EBADMSG, never other bytes: in the base's frames, in the base id, with the
 * wrong base, with a delta flag in a plain container or a delta magic without a base id. */
static void test_delta_corruption(void **state)
{
        size_t chunk = 4096;
        uint64_t n_chunks, toff;
        DeltaFixture f;
        uint8_t buf[64];

        (void)state;
        delta_fixture(&f);
        n_chunks = DIV_ROUND_UP(f.size, chunk);
        toff = fd_size(f.fd) - NANO_BLOB_TRAILER_SIZE - NANO_BLOB_BASE_ID_SIZE - ENTRY_SIZE * n_chunks;

        /* A flipped byte in the base's frame 3: the delta's chunk 3 fails, its chunk 2 reads. */
        {
                _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
                NanoBlob *base = NULL;
                uint64_t bn = DIV_ROUND_UP(f.base_size, chunk);
                uint64_t at = frame_start(f.base_fd, bn, 3) + 5;
                xor_byte(f.base_fd, at, 0x10);
                assert_int_equal(open_dup(f.fd, &b), 0);
                assert_int_equal(open_dup(f.base_fd, &base), 0);
                assert_int_equal(nano_blob_set_base(b, base), 0);
                assert_int_equal(nano_blob_pread(b, buf, sizeof buf, 3 * chunk + 10), -EBADMSG);
                assert_int_equal(nano_blob_pread(b, buf, sizeof buf, 2 * chunk + 10), (ssize_t)sizeof buf);
                assert_memory_equal(buf, f.data + 2 * chunk + 10, sizeof buf);
                xor_byte(f.base_fd, at, 0x10);
        }
        /* The wrong base (same size and chunks, other bytes): each delta frame fails its checksum. */
        {
                _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
                _cleanup_free_ uint8_t *other = make_data(f.base_size, false, 99);
                NanoBlob *base = NULL;
                int ofd = new_memfd();
                write_blob(ofd, f.shift, other, f.base_size);
                assert_int_equal(open_dup(ofd, &base), 0);
                safe_close(ofd);
                assert_int_equal(open_dup(f.fd, &b), 0);
                assert_int_equal(nano_blob_set_base(b, base), 0);
                for (uint64_t i = 0; i < DIV_ROUND_UP(f.base_size, chunk); i++)
                        assert_int_equal(nano_blob_pread(b, buf, sizeof buf, i * chunk), -EBADMSG);
        }
        /* A flipped bit of the base id: the table checksum covers it. */
        {
                NanoBlob *b = NULL;
                xor_byte(f.fd, toff + ENTRY_SIZE * n_chunks + 7, 0x01);
                assert_int_equal(open_dup(f.fd, &b), -EBADMSG);
                xor_byte(f.fd, toff + ENTRY_SIZE * n_chunks + 7, 0x01);
        }
        /* The delta magic turned plain: the base id is read as part of the table, which fails. */
        {
                NanoBlob *b = NULL;
                assert_int_equal(pwrite_all(f.fd, NANO_BLOB_MAGIC, 8, 0), 0);
                assert_int_equal(open_dup(f.fd, &b), -EBADMSG);
                assert_int_equal(pwrite_all(f.fd, NANO_BLOB_MAGIC_DELTA, 8, 0), 0);
        }
        /* A plain container with a delta flag in its table, resealed: refused. And the delta magic on
         * a plain container: no base id where it should be, refused. */
        {
                _cleanup_close_ int pfd = new_memfd();
                NanoBlob *b = NULL;
                uint8_t e[8];
                write_blob(pfd, f.shift, f.base_data, f.base_size);
                uint64_t bn = DIV_ROUND_UP(f.base_size, chunk);
                assert_int_equal(pread(pfd, e, 8, (off_t)table_off(pfd, bn)), 8);
                e[7] |= 0x80;
                assert_int_equal(pwrite_all(pfd, e, 8, (off_t)table_off(pfd, bn)), 0);
                reseal_table(pfd, bn);
                assert_int_equal(open_dup(pfd, &b), -EBADMSG);
                e[7] &= 0x7f;
                assert_int_equal(pwrite_all(pfd, e, 8, (off_t)table_off(pfd, bn)), 0);
                reseal_table(pfd, bn);
                assert_int_equal(open_dup(pfd, &b), 0);
                b = nano_blob_free(b);
                assert_int_equal(pwrite_all(pfd, NANO_BLOB_MAGIC_DELTA, 8, 0), 0);
                assert_int_equal(open_dup(pfd, &b), -EBADMSG);
        }
        /* A flipped byte in a delta frame: -EBADMSG for its chunk only. */
        {
                _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
                NanoBlob *base = NULL;
                xor_byte(f.fd, 8 + 3, 0x04); /* frame 0 */
                assert_int_equal(open_dup(f.fd, &b), 0);
                assert_int_equal(open_dup(f.base_fd, &base), 0);
                assert_int_equal(nano_blob_set_base(b, base), 0);
                assert_int_equal(nano_blob_pread(b, buf, sizeof buf, 0), -EBADMSG);
                assert_int_equal(nano_blob_pread(b, buf, sizeof buf, chunk), (ssize_t)sizeof buf);
                assert_memory_equal(buf, f.data + chunk, sizeof buf);
        }
        delta_fixture_done(&f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_empty),
                cmocka_unit_test(test_table_layout),
                cmocka_unit_test(test_roundtrip),
                cmocka_unit_test(test_pread_offsets),
                cmocka_unit_test(test_read_touches_only_needed_chunks),
                cmocka_unit_test(test_frame_corruption),
                cmocka_unit_test(test_metadata_corruption),
                cmocka_unit_test(test_truncated),
                cmocka_unit_test(test_crafted),
                cmocka_unit_test(test_writer_misuse),
                cmocka_unit_test(test_parallel_compress),
                cmocka_unit_test(test_concurrent_reads),
                cmocka_unit_test(test_cache_isolation),
                cmocka_unit_test(test_delta_roundtrip),
                cmocka_unit_test(test_delta_rules),
                cmocka_unit_test(test_delta_corruption),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
