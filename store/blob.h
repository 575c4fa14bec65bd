/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Blob containers: an object's content as independent zstd frames of 2^chunk_shift bytes, with a
 * chunk table and a trailer at the end (doc/formats.md). Random reads decompress only the chunks
 * they touch, and every decompression verifies the chunk's checksum.
 *
 * All functions return >= 0 on success or -errno; -EBADMSG means the container is malformed or a
 * checksum failed. Nothing here logs. */

#include <stdint.h>
#include <sys/types.h>

#define NANO_BLOB_MAGIC "NANOBLB\x01"
#define NANO_BLOB_END_MAGIC "NANOBEND"
#define NANO_BLOB_HEADER_SIZE 8u
#define NANO_BLOB_TRAILER_SIZE 40u
#define NANO_BLOB_MIN_SIZE (NANO_BLOB_HEADER_SIZE + NANO_BLOB_TRAILER_SIZE)
#define NANO_BLOB_CHUNK_SHIFT_DEFAULT 17u
#define NANO_BLOB_CHUNK_SHIFT_MIN 12u
#define NANO_BLOB_CHUNK_SHIFT_MAX 24u
#define NANO_BLOB_SIZE_MAX (UINT64_C(1) << 50)
#define NANO_BLOB_LEVEL_DEFAULT 3

/* ---- Compression of one chunk (thread-safe given one context per thread). */

typedef struct NanoChunkCompressor NanoChunkCompressor;

/* A compressor at zstd level `level`, with the content checksum and content size flags set. */
int nano_chunk_compressor_new(int level, NanoChunkCompressor **ret);
NanoChunkCompressor *nano_chunk_compressor_free(NanoChunkCompressor *c);
/* Compresses len bytes (len <= 2^NANO_BLOB_CHUNK_SHIFT_MAX) into one zstd frame. *ret_frame points into
 * the compressor's own buffer, valid until the next call on the same compressor. */
int nano_chunk_compress(NanoChunkCompressor *c, const void *data, size_t len, const void **ret_frame,
                        size_t *ret_frame_size);

/* ---- Writing a container to an fd, frame by frame, in order. */

typedef struct NanoBlobWriter NanoBlobWriter;

/* Starts a container on fd (which must be empty, positioned anywhere: writes use pwrite from 0).
 * The header is written at once. The fd is not owned. */
int nano_blob_writer_new(int fd, unsigned chunk_shift, NanoBlobWriter **ret);
NanoBlobWriter *nano_blob_writer_free(NanoBlobWriter *w);
/* Appends an already compressed frame holding `usize` uncompressed bytes. Every chunk but the
 * last must hold exactly 2^chunk_shift bytes (-EINVAL otherwise). */
int nano_blob_writer_add_frame(NanoBlobWriter *w, const void *frame, size_t frame_size, size_t usize);
/* Compresses and appends one chunk (convenience for single-threaded writers). */
int nano_blob_writer_add_chunk(NanoBlobWriter *w, NanoChunkCompressor *c, const void *data, size_t len);
/* Writes the chunk table and the trailer. Returns the container's total size in bytes. */
int64_t nano_blob_writer_finish(NanoBlobWriter *w);
uint64_t nano_blob_writer_size(const NanoBlobWriter *w); /* uncompressed bytes so far */

/* ---- Reading. */

typedef struct NanoBlob NanoBlob;

/* Validates the trailer and the chunk table of the container on fd (owned by the NanoBlob on success
 * and closed by nano_blob_free()). */
int nano_blob_open_fd(int fd, NanoBlob **ret);
NanoBlob *nano_blob_free(NanoBlob *b);
uint64_t nano_blob_size(const NanoBlob *b);
unsigned nano_blob_chunk_shift(const NanoBlob *b);
uint64_t nano_blob_n_chunks(const NanoBlob *b);
uint64_t nano_blob_stored_size(const NanoBlob *b); /* size of the container file */
/* Decompresses chunk idx into buf (of at least 2^chunk_shift bytes) and verifies it. Returns the
 * chunk's length. Thread-safe: each call uses its own or a thread-local decompression context. */
ssize_t nano_blob_read_chunk(NanoBlob *b, uint64_t idx, void *buf);
/* Reads up to len bytes at off into buf, decompressing at most DIV_ROUND_UP(len, chunk) + 1 chunks.
 * Returns the number of bytes read (short only at end of object). */
ssize_t nano_blob_pread(NanoBlob *b, void *buf, size_t len, uint64_t off);

static inline void nano_blob_freep(NanoBlob **b)
{
        if (*b)
                nano_blob_free(*b);
}
static inline void nano_blob_writer_freep(NanoBlobWriter **w)
{
        if (*w)
                nano_blob_writer_free(*w);
}
static inline void nano_chunk_compressor_freep(NanoChunkCompressor **c)
{
        if (*c)
                nano_chunk_compressor_free(*c);
}
