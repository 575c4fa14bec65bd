/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Blob containers from untrusted bytes: open, read every chunk, a few preads; any result is fine
 * except a crash, a leak, or a read that claims success with the wrong length. The input is parsed
 * twice, as is and with its frame, table and trailer checksums recomputed, since mutations would
 * otherwise hardly ever get past the trailer_xxh3 check (or a frame past its frame_xxh3) to the rules
 * behind it. A delta container with 4 KiB chunks gets a fixed base, so that its delta frames are
 * decoded too. Then the input as an object's content: written as a container, reopened, and read back
 * byte for byte; and written again as a delta of a slightly different base, and read back. */
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#include "blob.h"
#include "macros.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd_with(const uint8_t *data, size_t size)
{
        _cleanup_close_ int fd = memfd_create("fuzz-blob", MFD_CLOEXEC);

        if (fd < 0 || write_all(fd, data, size) < 0)
                return -EBADF;
        return TAKE_FD(fd);
}

/* Writes content as a container of 4 KiB chunks into a memfd and opens it, as a delta of base for the
 * chunks whose index is even if base is not NULL. */
static NanoBlob *write_blob(const uint8_t *data, size_t size, NanoBlob *base)
{
        _cleanup_(nano_chunk_compressor_freep) NanoChunkCompressor *c = NULL;
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        _cleanup_close_ int fd = memfd_create("fuzz-blob-rt", MFD_CLOEXEC);
        const size_t chunk = (size_t)1 << NANO_BLOB_CHUNK_SHIFT_MIN;
        _cleanup_free_ uint8_t *prefix = malloc(chunk);
        static const uint8_t base_id[32] = { 0xba, 0x5e };
        NanoBlob *b = NULL;
        int64_t total;

        /* Resource failures are not what this looks for; anything else must work. */
        if (fd < 0 || !prefix || nano_chunk_compressor_new(1, &c) < 0 ||
            nano_blob_writer_new(fd, NANO_BLOB_CHUNK_SHIFT_MIN, &w) < 0)
                return NULL;
        if (base && nano_blob_writer_set_base(w, base, base_id) < 0)
                abort();
        for (size_t off = 0, i = 0; off < size; off += chunk, i++) {
                size_t len = MIN(chunk, size - off);
                if (base && i % 2 == 0 && i < nano_blob_n_chunks(base)) {
                        const void *frame;
                        size_t n;
                        ssize_t plen = nano_blob_read_chunk(base, i, prefix);
                        if (plen <= 0 ||
                            nano_chunk_compress_delta(c, data + off, len, prefix, (size_t)plen, &frame, &n) < 0 ||
                            nano_blob_writer_add_delta_frame(w, frame, n, len) < 0)
                                abort();
                } else if (nano_blob_writer_add_chunk(w, c, data + off, len) < 0)
                        abort();
        }
        total = nano_blob_writer_finish(w);
        if (total < (int64_t)NANO_BLOB_MIN_SIZE)
                abort();
        if (nano_blob_open_fd(fd, &b) < 0)
                abort();
        TAKE_FD(fd);
        if (nano_blob_size(b) != size || nano_blob_stored_size(b) != (uint64_t)total)
                abort();
        return b;
}

/* The base given to delta containers with 4 KiB chunks: three chunks and a half of text-like bytes. */
static NanoBlob *fixed_base(void)
{
        uint8_t content[3 * 4096 + 2048];

        for (size_t i = 0; i < sizeof content; i++)
                content[i] = (uint8_t)("nano delta base "[i % 16] + i / 4096);
        return write_blob(content, sizeof content, NULL);
}

static void parse(const uint8_t *data, size_t size)
{
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_close_ int fd = memfd_with(data, size);
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t n_chunks, bsize;
        size_t chunk;

        if (fd < 0 || nano_blob_open_fd(fd, &b) < 0)
                return;
        TAKE_FD(fd);
        if (nano_blob_is_delta(b, NULL) && nano_blob_chunk_shift(b) == NANO_BLOB_CHUNK_SHIFT_MIN) {
                NanoBlob *base = fixed_base();
                if (base && nano_blob_set_base(b, base) < 0)
                        nano_blob_free(base);
        }

        chunk = (size_t)1 << nano_blob_chunk_shift(b);
        n_chunks = nano_blob_n_chunks(b);
        bsize = nano_blob_size(b);
        if (n_chunks != DIV_ROUND_UP(bsize, chunk) || nano_blob_stored_size(b) != size)
                abort();

        buf = malloc(2 * chunk + 1);
        if (!buf)
                return;

        for (uint64_t i = 0; i < n_chunks; i++) {
                ssize_t n = nano_blob_read_chunk(b, i, buf);
                if (n >= 0 && (uint64_t)n != MIN((uint64_t)chunk, bsize - i * chunk))
                        abort();
        }

        const uint64_t offs[] = {0,     1,         chunk - 1, chunk, bsize / 2, bsize > 0 ? bsize - 1 : 0,
                                 bsize, UINT64_MAX};
        const size_t lens[] = {0, 1, 4096, chunk, 2 * chunk + 1};
        for (size_t i = 0; i < ELEMENTSOF(offs); i++)
                for (size_t j = 0; j < ELEMENTSOF(lens); j++) {
                        ssize_t n = nano_blob_pread(b, buf, lens[j], offs[i]);
                        uint64_t want = offs[i] >= bsize ? 0 : MIN((uint64_t)lens[j], bsize - offs[i]);
                        if (n >= 0 && (uint64_t)n != want)
                                abort();
                }
}

/* Makes the checksums of the frames, the table and the trailer of a container of `size` bytes right.
 * A frame checksum is rewritten only where the end offsets describe a range before the table: the
 * reader refuses anything else before it hashes a frame. */
static void reseal(uint8_t *p, size_t size)
{
        uint8_t *trailer = p + size - NANO_BLOB_TRAILER_SIZE;
        uint64_t n_chunks = le32_read(trailer + 12);
        size_t extra = memcmp(p, NANO_BLOB_MAGIC_DELTA, NANO_BLOB_HEADER_SIZE) == 0 ? NANO_BLOB_BASE_ID_SIZE : 0;

        if (size >= NANO_BLOB_MIN_SIZE + extra && n_chunks <= (size - NANO_BLOB_MIN_SIZE - extra) / 16) {
                uint8_t *table = trailer - extra - 16 * n_chunks;
                uint64_t start = NANO_BLOB_HEADER_SIZE;

                for (uint64_t i = 0; i < n_chunks; i++) {
                        uint64_t end = le64_read(table + 16 * i) & ~(UINT64_C(1) << 63);

                        if (end >= start && end <= (uint64_t)(table - p))
                                le64_write(table + 16 * i + 8, XXH3_64bits(p + start, end - start));
                        start = end;
                }
                le64_write(trailer + 16, XXH3_64bits(table, 16 * n_chunks + extra));
        }
        le64_write(trailer + 24, XXH3_64bits(trailer, 24));
}

static void check_content(NanoBlob *b, const uint8_t *data, size_t size)
{
        _cleanup_free_ uint8_t *buf = malloc(size + 1);

        if (!buf)
                return;
        if (nano_blob_pread(b, buf, size + 1, 0) != (ssize_t)size || memcmp(buf, data, size) != 0)
                abort();
        if (size > 2 && (nano_blob_pread(b, buf, size - 2, 1) != (ssize_t)size - 2 ||
                         memcmp(buf, data + 1, size - 2) != 0))
                abort();
}

static void roundtrip(const uint8_t *data, size_t size)
{
        _cleanup_(nano_blob_freep) NanoBlob *b = write_blob(data, size, NULL), *base = NULL, *d = NULL;
        _cleanup_free_ uint8_t *other = malloc(size + 1);

        if (!b || !other)
                return;
        check_content(b, data, size);

        /* The same content as a delta of a base that differs in a few bytes. */
        memcpy(other, data, size);
        for (size_t i = 0; i < size; i += 97)
                other[i]++;
        base = write_blob(other, size, NULL);
        d = base ? write_blob(data, size, base) : NULL;
        if (!d)
                return;
        if (nano_blob_is_delta(d, NULL) != (size > 0)) /* chunk 0 is a delta frame when there is one */
                abort();
        if (size > 0) {
                uint8_t one;
                if (nano_blob_pread(d, &one, 1, 0) != -ENOLINK) /* no base yet */
                        abort();
                if (nano_blob_set_base(d, TAKE_PTR(base)) < 0)
                        abort();
        }
        check_content(d, data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        parse(data, size);
        if (size >= NANO_BLOB_MIN_SIZE) {
                _cleanup_free_ uint8_t *copy = malloc(size);
                if (copy) {
                        memcpy(copy, data, size);
                        reseal(copy, size);
                        parse(copy, size);
                }
        }
        roundtrip(data, size);
        return 0;
}
