/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Blob containers: an object's content as independent zstd frames of 2^chunk_shift bytes, with a
 * chunk table and a trailer at the end (doc/formats.md). Random reads decompress only the chunks
 * they touch, and every decompression verifies the chunk's checksum.
 *
 * A delta container names a base object (a plain container with the same chunk size): some of its
 * frames were compressed with the base's chunk of the same index as zstd prefix, and reading one of
 * those decompresses that base chunk first. So a read of one chunk decompresses at most two frames,
 * and the base is never itself a delta.
 *
 * All functions return >= 0 on success or -errno; -EBADMSG means the container is malformed or a
 * checksum failed. Nothing here logs. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define NANO_BLOB_MAGIC "NANOBLB\x01"
#define NANO_BLOB_MAGIC_DELTA "NANOBLB\x02"
#define NANO_BLOB_END_MAGIC "NANOBEND"
#define NANO_BLOB_HEADER_SIZE 8u
#define NANO_BLOB_TRAILER_SIZE 40u
#define NANO_BLOB_MIN_SIZE (NANO_BLOB_HEADER_SIZE + NANO_BLOB_TRAILER_SIZE)
#define NANO_BLOB_BASE_ID_SIZE 32u /* a delta container's base id, between its chunk table and trailer */
#define NANO_BLOB_CHUNK_SHIFT_DEFAULT 17u
#define NANO_BLOB_CHUNK_SHIFT_MIN 12u
#define NANO_BLOB_CHUNK_SHIFT_MAX 24u
#define NANO_BLOB_SIZE_MAX (UINT64_C(1) << 50)
#define NANO_BLOB_LEVEL_DEFAULT 3

typedef struct NanoBlob NanoBlob;

/* ---- Compression of one chunk (thread-safe given one context per thread). */

typedef struct NanoChunkCompressor NanoChunkCompressor;

/* A compressor at zstd level `level`, with the content checksum and content size flags set. */
int nano_chunk_compressor_new(int level, NanoChunkCompressor **ret);
NanoChunkCompressor *nano_chunk_compressor_free(NanoChunkCompressor *c);
/* Compresses len bytes (len <= 2^NANO_BLOB_CHUNK_SHIFT_MAX) into one zstd frame. *ret_frame points into
 * the compressor's own buffer, valid until the next call on the same compressor. */
int nano_chunk_compress(NanoChunkCompressor *c, const void *data, size_t len, const void **ret_frame,
                        size_t *ret_frame_size);
/* The same with prefix (prefix_len > 0 bytes: the base object's chunk of the same index) as the
 * frame's zstd prefix: the frame decodes only with that prefix. */
int nano_chunk_compress_delta(NanoChunkCompressor *c, const void *data, size_t len, const void *prefix,
                              size_t prefix_len, const void **ret_frame, size_t *ret_frame_size);

/* ---- Writing a container to an fd, frame by frame, in order. */

typedef struct NanoBlobWriter NanoBlobWriter;

/* Starts a container on fd (which must be empty, positioned anywhere: writes use pwrite from 0).
 * Writes are gathered (up to 192 KiB) and all made by the time nano_blob_writer_finish() returns; the
 * file is complete only then. The fd is not owned. */
int nano_blob_writer_new(int fd, unsigned chunk_shift, NanoBlobWriter **ret);
NanoBlobWriter *nano_blob_writer_free(NanoBlobWriter *w);
/* Appends an already compressed frame holding `usize` uncompressed bytes. Every chunk but the
 * last must hold exactly 2^chunk_shift bytes (-EINVAL otherwise). */
int nano_blob_writer_add_frame(NanoBlobWriter *w, const void *frame, size_t frame_size, size_t usize);
/* Compresses and appends one chunk (convenience for single-threaded writers). */
int nano_blob_writer_add_chunk(NanoBlobWriter *w, NanoChunkCompressor *c, const void *data, size_t len);
/* Lets frames be deltas against base (an open plain container with the writer's chunk size, whose
 * content's sha256 is base_id; not kept). -EINVAL if base is a delta or its chunk size differs. */
int nano_blob_writer_set_base(NanoBlobWriter *w, const NanoBlob *base, const uint8_t base_id[32]);
/* Appends a frame made by nano_chunk_compress_delta() with the base's chunk of the same index. The
 * container becomes a delta container once one such frame is in it; until then it is a plain one. */
int nano_blob_writer_add_delta_frame(NanoBlobWriter *w, const void *frame, size_t frame_size, size_t usize);
/* Writes the chunk table (and a delta container's base id) and the trailer. Returns the
 * container's total size in bytes. */
int64_t nano_blob_writer_finish(NanoBlobWriter *w);
uint64_t nano_blob_writer_size(const NanoBlobWriter *w); /* uncompressed bytes so far */

/* ---- Reading. */

/* Validates the trailer and the chunk table of the container on fd (owned by the NanoBlob on success
 * and closed by nano_blob_free()). A delta container opens without its base: reading a delta frame
 * gives -ENOLINK until nano_blob_set_base() provides it. */
int nano_blob_open_fd(int fd, NanoBlob **ret);
NanoBlob *nano_blob_free(NanoBlob *b);
/* True for a delta container, with the id of its base in ret_base_id (if not NULL). */
bool nano_blob_is_delta(const NanoBlob *b, uint8_t ret_base_id[32]);
/* Gives a delta container its base, which it then owns. -EINVAL if b is not a delta; -EBADMSG if base
 * cannot be its base (a delta itself, another chunk size, fewer chunks than b's deltas need). The
 * caller checks that base is the object b names. */
int nano_blob_set_base(NanoBlob *b, NanoBlob *base);
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
