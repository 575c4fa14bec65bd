/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A bounded cache of decompressed chunks shared by all of the daemon's threads (doc/mount.md).
 *
 * Key: (blob digest, chunk size, chunk index). Each chunk is decompressed and verified by
 * nano_blob_read_chunk() when it is filled, once: concurrent readers of a chunk being filled wait for
 * that one decompression instead of repeating it. Memory is bounded by the configured size (CLOCK
 * eviction per shard), plus the newest chunk larger than a shard's share, plus the chunks that readers
 * still hold after their eviction, whatever the chunk size. Sharded, so threads reading different
 * chunks rarely meet on a lock. */

#include <stdint.h>

#include "blob.h"

typedef struct ChunkCache ChunkCache;

/* A referenced, verified, immutable chunk: data[0..len) is its content. */
typedef struct Chunk Chunk;

typedef struct ChunkCacheStats {
        uint64_t hits, misses, waits, errors; /* waits: hits that waited for a fill in progress */
        uint64_t bytes, budget;
        uint64_t pooled; /* free chunk buffers kept for reuse */
} ChunkCacheStats;

/* budget 0 disables caching: chunks are still shared by concurrent readers, then dropped. */
int chunk_cache_new(uint64_t budget, ChunkCache **ret);
ChunkCache *chunk_cache_free(ChunkCache *c);

/* Returns chunk idx of blob b (whose content digest is digest), referenced. -EBADMSG if the chunk
 * is corrupt, -ENOMEM, or the I/O error. */
int chunk_cache_get(ChunkCache *c, NanoBlob *b, const uint8_t digest[32], uint64_t idx, Chunk **ret);
void chunk_unref(ChunkCache *c, Chunk *k);
const uint8_t *chunk_data(const Chunk *k);
size_t chunk_size(const Chunk *k);

void chunk_cache_stats(ChunkCache *c, ChunkCacheStats *ret);
