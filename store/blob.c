/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "blob.h"
#include "macros.h"
#include "util.h"

/* Layout (doc/formats.md): header, frames back to back, chunk table, trailer. */
#define TRAILER_OFF_SIZE         0
#define TRAILER_OFF_CHUNK_SHIFT  8
#define TRAILER_OFF_N_CHUNKS     12
#define TRAILER_OFF_TABLE_XXH3   16
#define TRAILER_OFF_TRAILER_XXH3 24
#define TRAILER_OFF_MAGIC        32

/* A chunk table entry on disk: u64 end offset of the frame, u64 XXH3_64bits of the frame's bytes.
 * In a delta container, the end's top bit tells a delta frame. */
#define TABLE_ENTRY_SIZE 16u
#define END_DELTA        (UINT64_C(1) << 63)

/* A chunk table entry in host byte order. The reader converts the table in place, entry by entry,
 * hence the same size as on disk. */
typedef struct ChunkEntry {
        uint64_t end;  /* offset one past the frame's last byte, | END_DELTA for a delta frame */
        uint64_t xxh3; /* of the compressed frame, so that every stored bit is covered */
} ChunkEntry;
_Static_assert(sizeof(ChunkEntry) == TABLE_ENTRY_SIZE, "ChunkEntry must match the on-disk entry");

/* Frame_Header_Descriptor bit telling that the frame ends with an XXH64 of its content (RFC 8878). */
#define ZSTD_FHD_CHECKSUM_FLAG 0x04u

struct NanoChunkCompressor {
        ZSTD_CCtx *cctx;
        uint8_t *buf;
        size_t buf_size;
};

/* A writer gathers what it writes in a buffer of up to this many bytes: a small object (header, one
 * frame, table and trailer) becomes one write instead of three. */
#define WRITE_BUFFER_MAX (192u << 10)

struct NanoBlobWriter {
        int fd;
        unsigned chunk_shift;
        uint64_t offset;    /* where the next frame goes */
        uint8_t *pending;   /* bytes not written yet, from file offset pending_off */
        size_t n_pending, pending_allocated;
        uint64_t pending_off;
        uint64_t usize;     /* uncompressed bytes so far */
        ChunkEntry *chunks; /* one per frame written */
        size_t n_chunks, n_allocated;
        bool partial; /* the last chunk was short: nothing may follow it */
        bool finished;
        bool has_base;
        uint8_t base_id[32];
        uint64_t base_n_chunks;
        uint64_t n_delta; /* delta frames written */
};

struct NanoBlob {
        int fd;
        unsigned chunk_shift;
        uint64_t size;
        uint64_t n_chunks;
        uint64_t stored_size;
        ChunkEntry *chunks;
        uint64_t id; /* unique per open, keys the thread-local chunk cache */
        bool delta;
        uint8_t base_id[32];
        uint64_t delta_span; /* 1 + the index of the last delta frame: the base needs that many chunks */
        NanoBlob *base;      /* owned; NULL until nano_blob_set_base() */
};

/* Per-thread decompression state. One DCtx per thread keeps reads lock-free without creating a
 * context (hundreds of KiB of tables) per call. The last chunk decompressed into `chunk` for a
 * partial read stays cached, so that sequential small reads (FUSE asks for 4-128 KiB at a time)
 * decompress each chunk once instead of once per read. */
typedef struct ThreadState {
        ZSTD_DCtx *dctx;
        uint8_t *frame;
        size_t frame_allocated;
        uint8_t *chunk;
        size_t chunk_allocated;
        uint8_t *prefix; /* a base chunk, for the delta frame decompressed next */
        size_t prefix_allocated;
        uint64_t cached_blob_id; /* 0: nothing cached */
        uint64_t cached_idx;
} ThreadState;

static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_key;
static int thread_key_error;
/* The key exists only to run the destructor at thread exit; the pointer itself is read from static
 * TLS, which is cheaper than pthread_getspecific() and visible to leak checkers. */
static __thread ThreadState *thread_state;

static uint64_t blob_id_counter;

static void thread_state_free(void *p)
{
        ThreadState *t = p;

        if (!t)
                return;
        if (thread_state == t)
                thread_state = NULL;
        ZSTD_freeDCtx(t->dctx);
        free(t->frame);
        free(t->chunk);
        free(t->prefix);
        free(t);
}

static void thread_key_init(void)
{
        thread_key_error = -pthread_key_create(&thread_key, thread_state_free);
}

static int get_thread_state(ThreadState **ret)
{
        ThreadState *t = NULL;
        int r;

        if (_likely_(thread_state)) {
                *ret = thread_state;
                return 0;
        }

        r = pthread_once(&thread_key_once, thread_key_init);
        if (r != 0)
                return -r;
        if (thread_key_error < 0)
                return thread_key_error;

        t = calloc(1, sizeof(ThreadState));
        if (!t)
                return -ENOMEM;
        t->dctx = ZSTD_createDCtx();
        if (!t->dctx) {
                free(t);
                return -ENOMEM;
        }
        r = pthread_setspecific(thread_key, t);
        if (r != 0) {
                thread_state_free(t);
                return -r;
        }

        *ret = thread_state = t;
        return 0;
}

/* Grows a scratch buffer whose old contents do not matter, so free + malloc rather than realloc. */
static int buffer_reserve(uint8_t **buf, size_t *allocated, size_t need)
{
        uint8_t *p;

        if (*allocated >= need)
                return 0;

        p = malloc(need);
        if (!p)
                return -ENOMEM;
        free(*buf);
        *buf = p;
        *allocated = need;
        return 0;
}

/* A thread keeps its frame and base-chunk buffers for its next chunk up to THREAD_BUFFER_KEEP. A larger
 * one is handed to the next thread that needs one through a single spare: the mount's workers would
 * otherwise each keep the largest compressed chunk they have read (up to 16 MiB each, idle), and a
 * fresh buffer for each chunk read made a miss of a 16 MiB chunk ~25 % slower (its page faults). */
#define THREAD_BUFFER_KEEP ((size_t)1 << 20)

static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *spare;
static size_t spare_size;

/* buffer_reserve(), from the spare when it is large enough. */
static int buffer_reserve_shared(uint8_t **buf, size_t *allocated, size_t need)
{
        if (*allocated < need && need > THREAD_BUFFER_KEEP) {
                pthread_mutex_lock(&spare_lock);
                if (spare && spare_size >= need) {
                        free(*buf);
                        *buf = TAKE_PTR(spare);
                        *allocated = spare_size;
                        spare_size = 0;
                }
                pthread_mutex_unlock(&spare_lock);
        }
        return buffer_reserve(buf, allocated, need);
}

/* Gives a buffer larger than THREAD_BUFFER_KEEP up: to the spare if it is larger than the spare's. */
static void buffer_trim(uint8_t **buf, size_t *allocated)
{
        uint8_t *drop = *buf;

        if (*allocated <= THREAD_BUFFER_KEEP)
                return;
        pthread_mutex_lock(&spare_lock);
        if (!spare || spare_size < *allocated) {
                drop = spare;
                spare = *buf;
                spare_size = *allocated;
        }
        pthread_mutex_unlock(&spare_lock);
        free(drop);
        *buf = NULL;
        *allocated = 0;
}

/* True if [frame, frame + size) is exactly one zstd frame that declares `usize` content bytes and
 * carries a content checksum. Without the checksum flag test a crafted frame's output would go
 * unverified (the table's XXH3 vouches for the compressed bytes, not for what they decode to);
 * without the single-frame test, trailing (or skippable) frames could ride along. */
static bool frame_valid(const void *frame, size_t size, size_t usize)
{
        const uint8_t *p = frame;

        if (size < 5 || le32_read(p) != ZSTD_MAGICNUMBER || !(p[4] & ZSTD_FHD_CHECKSUM_FLAG))
                return false;
        if (ZSTD_getFrameContentSize(frame, size) != (unsigned long long)usize)
                return false;
        return ZSTD_findFrameCompressedSize(frame, size) == size;
}

static size_t frame_size_max(unsigned chunk_shift)
{
        return ZSTD_compressBound((size_t)1 << chunk_shift);
}

int nano_chunk_compressor_new(int level, NanoChunkCompressor **ret)
{
        NanoChunkCompressor *c;

        if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
                return -EINVAL;

        c = calloc(1, sizeof(NanoChunkCompressor));
        if (!c)
                return -ENOMEM;
        c->cctx = ZSTD_createCCtx();
        if (!c->cctx) {
                free(c);
                return -ENOMEM;
        }
        if (ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_contentSizeFlag, 1))) {
                nano_chunk_compressor_free(c);
                return -EINVAL;
        }

        *ret = c;
        return 0;
}

NanoChunkCompressor *nano_chunk_compressor_free(NanoChunkCompressor *c)
{
        if (!c)
                return NULL;
        ZSTD_freeCCtx(c->cctx);
        free(c->buf);
        free(c);
        return NULL;
}

static int chunk_compress(NanoChunkCompressor *c, const void *data, size_t len, const void *prefix,
                          size_t prefix_len, const void **ret_frame, size_t *ret_frame_size)
{
        size_t bound, n;
        int r;

        if (!c || (!data && len > 0) || len > (size_t)1 << NANO_BLOB_CHUNK_SHIFT_MAX)
                return -EINVAL;

        bound = ZSTD_compressBound(len);
        r = buffer_reserve(&c->buf, &c->buf_size, bound);
        if (r < 0)
                return r;

        /* A prefix is raw content, used for the next frame only. */
        if (prefix && ZSTD_isError(ZSTD_CCtx_refPrefix(c->cctx, prefix, prefix_len)))
                return -EINVAL;
        n = ZSTD_compress2(c->cctx, c->buf, bound, data ?: "", len);
        if (ZSTD_isError(n) && prefix)
                (void)ZSTD_CCtx_refPrefix(c->cctx, NULL, 0); /* not left for the next frame */
        if (ZSTD_isError(n))
                return ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation ? -ENOMEM : -EIO;

        *ret_frame = c->buf;
        *ret_frame_size = n;
        return 0;
}

int nano_chunk_compress(NanoChunkCompressor *c, const void *data, size_t len, const void **ret_frame,
                        size_t *ret_frame_size)
{
        return chunk_compress(c, data, len, NULL, 0, ret_frame, ret_frame_size);
}

int nano_chunk_compress_delta(NanoChunkCompressor *c, const void *data, size_t len, const void *prefix,
                              size_t prefix_len, const void **ret_frame, size_t *ret_frame_size)
{
        if (!prefix || prefix_len == 0 || prefix_len > (size_t)1 << NANO_BLOB_CHUNK_SHIFT_MAX)
                return -EINVAL;
        return chunk_compress(c, data, len, prefix, prefix_len, ret_frame, ret_frame_size);
}

/* Writes out the pending bytes. */
static int writer_flush(NanoBlobWriter *w)
{
        int r;

        if (w->n_pending == 0)
                return 0;
        r = pwrite_all(w->fd, w->pending, w->n_pending, (off_t)w->pending_off);
        if (r < 0)
                return r;
        w->pending_off += w->n_pending;
        w->n_pending = 0;
        return 0;
}

/* Appends data at the end of what was written, through the buffer unless it is large. */
static int writer_append(NanoBlobWriter *w, const void *data, size_t size)
{
        int r;

        if (w->n_pending + size > WRITE_BUFFER_MAX) {
                r = writer_flush(w);
                if (r < 0)
                        return r;
                if (size > WRITE_BUFFER_MAX / 2) {
                        r = pwrite_all(w->fd, data, size, (off_t)w->pending_off);
                        if (r < 0)
                                return r;
                        w->pending_off += size;
                        return 0;
                }
        }
        if (w->n_pending + size > w->pending_allocated) {
                size_t n = MIN(MAX(w->pending_allocated * 2, w->n_pending + size), (size_t)WRITE_BUFFER_MAX);
                uint8_t *p = realloc(w->pending, MAX(n, (size_t)4096));
                if (!p)
                        return -ENOMEM;
                w->pending = p;
                w->pending_allocated = MAX(n, (size_t)4096);
        }
        memcpy(w->pending + w->n_pending, data, size);
        w->n_pending += size;
        return 0;
}

int nano_blob_writer_new(int fd, unsigned chunk_shift, NanoBlobWriter **ret)
{
        _cleanup_(nano_blob_writer_freep) NanoBlobWriter *w = NULL;
        int r;

        if (fd < 0)
                return -EBADF;
        if (chunk_shift < NANO_BLOB_CHUNK_SHIFT_MIN || chunk_shift > NANO_BLOB_CHUNK_SHIFT_MAX)
                return -EINVAL;

        w = calloc(1, sizeof(NanoBlobWriter));
        if (!w)
                return -ENOMEM;
        *w = (NanoBlobWriter){
                .fd = fd,
                .chunk_shift = chunk_shift,
                .offset = NANO_BLOB_HEADER_SIZE,
        };

        r = writer_append(w, NANO_BLOB_MAGIC, NANO_BLOB_HEADER_SIZE);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(w);
        return 0;
}

NanoBlobWriter *nano_blob_writer_free(NanoBlobWriter *w)
{
        if (!w)
                return NULL;
        free(w->chunks);
        free(w->pending);
        free(w);
        return NULL;
}

static int add_frame(NanoBlobWriter *w, const void *frame, size_t frame_size, size_t usize, bool delta)
{
        size_t chunk;
        int r;

        if (!w || !frame || w->finished)
                return -EINVAL;
        if (delta && (!w->has_base || w->n_chunks >= w->base_n_chunks))
                return -EINVAL;

        chunk = (size_t)1 << w->chunk_shift;
        /* Readers locate a byte by offset >> chunk_shift, so only the very last chunk may be short. */
        if (w->partial || usize == 0 || usize > chunk)
                return -EINVAL;
        /* Refuse what a reader would refuse, rather than write a container nobody can open. */
        if (frame_size == 0 || frame_size > frame_size_max(w->chunk_shift) ||
            !frame_valid(frame, frame_size, usize))
                return -EINVAL;
        if (w->n_chunks >= UINT32_MAX || w->usize + usize > NANO_BLOB_SIZE_MAX)
                return -EFBIG;

        if (w->n_chunks >= w->n_allocated) {
                size_t n = MAX(w->n_allocated * 2, (size_t)64);
                ChunkEntry *p = reallocarray(w->chunks, n, sizeof(ChunkEntry));
                if (!p)
                        return -ENOMEM;
                w->chunks = p;
                w->n_allocated = n;
        }

        r = writer_append(w, frame, frame_size);
        if (r < 0)
                return r;

        w->offset += frame_size;
        w->usize += usize;
        /* The hash is of the bytes handed to pwrite(), so that whatever happens to them afterwards,
         * on disk or on the way there, fails at read time. */
        w->chunks[w->n_chunks++] = (ChunkEntry){
                .end = w->offset | (delta ? END_DELTA : 0),
                .xxh3 = XXH3_64bits(frame, frame_size),
        };
        w->n_delta += delta;
        w->partial = usize < chunk;
        return 0;
}

int nano_blob_writer_add_frame(NanoBlobWriter *w, const void *frame, size_t frame_size, size_t usize)
{
        return add_frame(w, frame, frame_size, usize, false);
}

int nano_blob_writer_add_delta_frame(NanoBlobWriter *w, const void *frame, size_t frame_size, size_t usize)
{
        return add_frame(w, frame, frame_size, usize, true);
}

int nano_blob_writer_set_base(NanoBlobWriter *w, const NanoBlob *base, const uint8_t base_id[32])
{
        if (!w || !base || !base_id || w->finished || w->n_chunks > 0 || base->delta ||
            base->chunk_shift != w->chunk_shift)
                return -EINVAL;
        w->has_base = true;
        memcpy(w->base_id, base_id, 32);
        w->base_n_chunks = base->n_chunks;
        return 0;
}

int nano_blob_writer_add_chunk(NanoBlobWriter *w, NanoChunkCompressor *c, const void *data, size_t len)
{
        const void *frame;
        size_t frame_size;
        int r;

        if (!w || !c)
                return -EINVAL;
        /* Check before spending time compressing. */
        if (w->finished || w->partial || len == 0 || len > (size_t)1 << w->chunk_shift)
                return -EINVAL;

        r = nano_chunk_compress(c, data, len, &frame, &frame_size);
        if (r < 0)
                return r;
        return nano_blob_writer_add_frame(w, frame, frame_size, len);
}

int64_t nano_blob_writer_finish(NanoBlobWriter *w)
{
        _cleanup_free_ uint8_t *buf = NULL;
        size_t table_size, total;
        uint8_t *trailer;
        int r;

        if (!w || w->finished)
                return -EINVAL;

        /* n_chunks < 2^32 (checked on add), so this cannot overflow on 64-bit. A delta container's
         * base id follows its table, covered by the table's checksum. */
        table_size = w->n_chunks * TABLE_ENTRY_SIZE + (w->n_delta > 0 ? NANO_BLOB_BASE_ID_SIZE : 0);
        total = table_size + NANO_BLOB_TRAILER_SIZE;
        buf = malloc(total);
        if (!buf)
                return -ENOMEM;

        for (size_t i = 0; i < w->n_chunks; i++) {
                le64_write(buf + i * TABLE_ENTRY_SIZE, w->chunks[i].end);
                le64_write(buf + i * TABLE_ENTRY_SIZE + 8, w->chunks[i].xxh3);
        }
        if (w->n_delta > 0) {
                memcpy(buf + w->n_chunks * TABLE_ENTRY_SIZE, w->base_id, NANO_BLOB_BASE_ID_SIZE);
                /* The header was written plain: the first frames could not know whether a delta
                 * would follow. */
                if (w->pending_off == 0)
                        memcpy(w->pending, NANO_BLOB_MAGIC_DELTA, NANO_BLOB_HEADER_SIZE);
                else {
                        r = pwrite_all(w->fd, NANO_BLOB_MAGIC_DELTA, NANO_BLOB_HEADER_SIZE, 0);
                        if (r < 0)
                                return r;
                }
        }

        trailer = buf + table_size;
        le64_write(trailer + TRAILER_OFF_SIZE, w->usize);
        le32_write(trailer + TRAILER_OFF_CHUNK_SHIFT, w->chunk_shift);
        le32_write(trailer + TRAILER_OFF_N_CHUNKS, (uint32_t)w->n_chunks);
        le64_write(trailer + TRAILER_OFF_TABLE_XXH3, XXH3_64bits(buf, table_size));
        le64_write(trailer + TRAILER_OFF_TRAILER_XXH3, XXH3_64bits(trailer, TRAILER_OFF_TRAILER_XXH3));
        memcpy(trailer + TRAILER_OFF_MAGIC, NANO_BLOB_END_MAGIC, 8);

        r = writer_append(w, buf, total);
        if (r >= 0)
                r = writer_flush(w);
        if (r < 0)
                return r;

        w->finished = true;
        return (int64_t)(w->offset + total);
}

uint64_t nano_blob_writer_size(const NanoBlobWriter *w)
{
        return w ? w->usize : 0;
}

int nano_blob_open_fd(int fd, NanoBlob **ret)
{
        _cleanup_free_ ChunkEntry *chunks = NULL;
        uint8_t header[NANO_BLOB_HEADER_SIZE], trailer[NANO_BLOB_TRAILER_SIZE];
        uint64_t file_size, size, n_chunks, table_off, prev, max_frame, delta_span = 0;
        unsigned chunk_shift;
        size_t table_size, extra;
        bool delta;
        struct stat st;
        NanoBlob *b;
        ssize_t n;

        if (fd < 0)
                return -EBADF;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return S_ISDIR(st.st_mode) ? -EISDIR : -EBADFD;
        if (st.st_size < (off_t)NANO_BLOB_MIN_SIZE)
                return -EBADMSG;
        file_size = (uint64_t)st.st_size;

        n = pread_full(fd, header, sizeof(header), 0);
        if (n < 0)
                return (int)n;
        if ((size_t)n != sizeof(header))
                return -EBADMSG;
        delta = memcmp(header, NANO_BLOB_MAGIC_DELTA, NANO_BLOB_HEADER_SIZE) == 0;
        if (!delta && memcmp(header, NANO_BLOB_MAGIC, NANO_BLOB_HEADER_SIZE) != 0)
                return -EBADMSG;
        extra = delta ? NANO_BLOB_BASE_ID_SIZE : 0;

        n = pread_full(fd, trailer, sizeof(trailer), (off_t)(file_size - NANO_BLOB_TRAILER_SIZE));
        if (n < 0)
                return (int)n;
        if ((size_t)n != sizeof(trailer) ||
            memcmp(trailer + TRAILER_OFF_MAGIC, NANO_BLOB_END_MAGIC, 8) != 0 ||
            le64_read(trailer + TRAILER_OFF_TRAILER_XXH3) != XXH3_64bits(trailer, TRAILER_OFF_TRAILER_XXH3))
                return -EBADMSG;

        size = le64_read(trailer + TRAILER_OFF_SIZE);
        chunk_shift = le32_read(trailer + TRAILER_OFF_CHUNK_SHIFT);
        n_chunks = le32_read(trailer + TRAILER_OFF_N_CHUNKS);
        if (chunk_shift < NANO_BLOB_CHUNK_SHIFT_MIN || chunk_shift > NANO_BLOB_CHUNK_SHIFT_MAX ||
            size > NANO_BLOB_SIZE_MAX || n_chunks != DIV_ROUND_UP(size, UINT64_C(1) << chunk_shift))
                return -EBADMSG;

        /* The table (and base id) must fit between the header and the trailer: this bounds the
         * allocation below by the file size, whatever n_chunks claims. */
        if (file_size < NANO_BLOB_MIN_SIZE + extra ||
            n_chunks > (file_size - NANO_BLOB_MIN_SIZE - extra) / TABLE_ENTRY_SIZE)
                return -EBADMSG;
        table_size = (size_t)n_chunks * TABLE_ENTRY_SIZE;
        table_off = file_size - NANO_BLOB_TRAILER_SIZE - extra - table_size;

        chunks = malloc(table_size + extra + 1);
        if (!chunks)
                return -ENOMEM;

        n = pread_full(fd, chunks, table_size + extra, (off_t)table_off);
        if (n < 0)
                return (int)n;
        if ((size_t)n != table_size + extra ||
            le64_read(trailer + TRAILER_OFF_TABLE_XXH3) != XXH3_64bits(chunks, table_size + extra))
                return -EBADMSG;

        /* Converted in place from little endian: each entry is read whole before it is overwritten.
         * The frame checksums are checked when a frame is read, so that open does not cost reading the
         * whole object. */
        prev = NANO_BLOB_HEADER_SIZE;
        max_frame = frame_size_max(chunk_shift);
        for (size_t i = 0; i < n_chunks; i++) {
                const uint8_t *raw = (const uint8_t *)(chunks + i);
                uint64_t end = le64_read(raw), xxh3 = le64_read(raw + 8), flag = end & END_DELTA;

                end &= ~END_DELTA;
                if (end <= prev || end - prev > max_frame || (flag && !delta))
                        return -EBADMSG;
                if (flag)
                        delta_span = i + 1;
                chunks[i] = (ChunkEntry){.end = end | flag, .xxh3 = xxh3};
                prev = end;
        }
        /* A delta container holds at least one delta frame: a writer with none writes a plain one. */
        if (prev != table_off || (delta && delta_span == 0))
                return -EBADMSG;

        b = calloc(1, sizeof(NanoBlob));
        if (!b)
                return -ENOMEM;
        *b = (NanoBlob){
                .fd = fd,
                .chunk_shift = chunk_shift,
                .size = size,
                .n_chunks = n_chunks,
                .stored_size = file_size,
                .id = __atomic_add_fetch(&blob_id_counter, 1, __ATOMIC_RELAXED),
                .delta = delta,
                .delta_span = delta_span,
        };
        if (delta)
                memcpy(b->base_id, (const uint8_t *)chunks + table_size, NANO_BLOB_BASE_ID_SIZE);
        b->chunks = TAKE_PTR(chunks);

        *ret = b;
        return 0;
}

NanoBlob *nano_blob_free(NanoBlob *b)
{
        if (!b)
                return NULL;
        safe_close(b->fd);
        free(b->chunks);
        nano_blob_free(b->base);
        free(b);
        return NULL;
}

bool nano_blob_is_delta(const NanoBlob *b, uint8_t ret_base_id[32])
{
        if (b->delta && ret_base_id)
                memcpy(ret_base_id, b->base_id, 32);
        return b->delta;
}

int nano_blob_set_base(NanoBlob *b, NanoBlob *base)
{
        if (!b || !base || !b->delta || b == base)
                return -EINVAL;
        if (base->delta || base->chunk_shift != b->chunk_shift || base->n_chunks < b->delta_span)
                return -EBADMSG;
        nano_blob_free(b->base);
        b->base = base;
        return 0;
}

uint64_t nano_blob_size(const NanoBlob *b)
{
        return b->size;
}

unsigned nano_blob_chunk_shift(const NanoBlob *b)
{
        return b->chunk_shift;
}

uint64_t nano_blob_n_chunks(const NanoBlob *b)
{
        return b->n_chunks;
}

uint64_t nano_blob_stored_size(const NanoBlob *b)
{
        return b->stored_size;
}

static size_t chunk_length(const NanoBlob *b, uint64_t idx)
{
        if (idx + 1 < b->n_chunks)
                return (size_t)1 << b->chunk_shift;
        return (size_t)(b->size - (idx << b->chunk_shift));
}

static uint64_t frame_end(const NanoBlob *b, uint64_t idx)
{
        return b->chunks[idx].end & ~END_DELTA;
}

/* Decompresses frame idx (< n_chunks) into dst, which holds exactly the chunk's length, with prefix
 * (prefix_len bytes) as the frame's prefix if not NULL. */
static int decompress_frame(NanoBlob *b, ThreadState *t, uint64_t idx, void *dst, const void *prefix,
                            size_t prefix_len)
{
        uint64_t start = idx > 0 ? frame_end(b, idx - 1) : NANO_BLOB_HEADER_SIZE;
        size_t frame_size = (size_t)(frame_end(b, idx) - start), len = chunk_length(b, idx), n;
        ssize_t k;
        int r;

        r = buffer_reserve_shared(&t->frame, &t->frame_allocated, frame_size);
        if (r < 0)
                return r;

        k = pread_full(b->fd, t->frame, frame_size, (off_t)start);
        if (k < 0)
                return (int)k;
        if ((size_t)k != frame_size) /* truncated after open */
                return -EBADMSG;

        /* zstd's content checksum covers the decompressed output only, and a few bits of a compressed
         * block do not change what it decodes to: flipping one would go unnoticed. The table's XXH3
         * covers every byte of the frame, and is checked before zstd parses any of it. */
        if (XXH3_64bits(t->frame, frame_size) != b->chunks[idx].xxh3)
                return -EBADMSG;

        if (!frame_valid(t->frame, frame_size, len))
                return -EBADMSG;

        /* Verifies the frame's XXH64 content checksum; dst's capacity is exactly the chunk length, so
         * a frame that lies about its size fails instead of writing past it. The prefix is raw content
         * (never parsed as a dictionary), for this frame only. */
        if (prefix && ZSTD_isError(ZSTD_DCtx_refPrefix(t->dctx, prefix, prefix_len)))
                return -ENOMEM;
        n = ZSTD_decompressDCtx(t->dctx, dst, len, t->frame, frame_size);
        if (ZSTD_isError(n))
                return ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation ? -ENOMEM : -EBADMSG;
        if (n != len)
                return -EBADMSG;
        return 0;
}

/* Decompresses chunk idx (< n_chunks) into dst, which holds exactly the chunk's length: a delta frame
 * after its base's chunk of the same index. */
static int decompress_chunk(NanoBlob *b, ThreadState *t, uint64_t idx, void *dst)
{
        size_t prefix_len;
        int r;

        if (!(b->chunks[idx].end & END_DELTA))
                return decompress_frame(b, t, idx, dst, NULL, 0);
        if (!b->base)
                return -ENOLINK;
        /* idx < base->n_chunks: nano_blob_set_base() checked the delta span. */
        prefix_len = chunk_length(b->base, idx);
        r = buffer_reserve_shared(&t->prefix, &t->prefix_allocated, (size_t)1 << b->chunk_shift);
        if (r < 0)
                return r;
        r = decompress_frame(b->base, t, idx, t->prefix, NULL, 0);
        if (r < 0)
                return r;
        return decompress_frame(b, t, idx, dst, t->prefix, prefix_len);
}

ssize_t nano_blob_read_chunk(NanoBlob *b, uint64_t idx, void *buf)
{
        ThreadState *t = NULL;
        int r;

        if (!b || !buf || idx >= b->n_chunks)
                return -EINVAL;

        r = get_thread_state(&t);
        if (r < 0)
                return r;

        r = decompress_chunk(b, t, idx, buf);
        buffer_trim(&t->frame, &t->frame_allocated);
        buffer_trim(&t->prefix, &t->prefix_allocated);
        if (r < 0)
                return r;
        return (ssize_t)chunk_length(b, idx);
}

ssize_t nano_blob_pread(NanoBlob *b, void *buf, size_t len, uint64_t off)
{
        uint8_t *p = buf;
        ThreadState *t = NULL;
        size_t done = 0;
        int r;

        if (!b || (!buf && len > 0))
                return -EINVAL;
        if (off >= b->size || len == 0)
                return 0;
        len = (size_t)MIN((uint64_t)MIN(len, (size_t)SSIZE_MAX), b->size - off);

        r = get_thread_state(&t);
        if (r < 0)
                return r;

        while (done < len) {
                uint64_t idx = off >> b->chunk_shift;
                size_t in_chunk = (size_t)(off & (((uint64_t)1 << b->chunk_shift) - 1));
                size_t clen = chunk_length(b, idx), n = MIN(clen - in_chunk, len - done);

                if (in_chunk == 0 && n == clen) {
                        /* The whole chunk is wanted: skip the copy. */
                        r = decompress_chunk(b, t, idx, p + done);
                        if (r < 0)
                                return r;
                } else {
                        if (t->cached_blob_id != b->id || t->cached_idx != idx) {
                                /* Invalid until the decompression below succeeds. Blob ids are never
                                 * reused, so a freed blob's entry can never match another blob. */
                                t->cached_blob_id = 0;
                                r = buffer_reserve(&t->chunk, &t->chunk_allocated,
                                                   (size_t)1 << b->chunk_shift);
                                if (r < 0)
                                        return r;
                                r = decompress_chunk(b, t, idx, t->chunk);
                                if (r < 0)
                                        return r;
                                t->cached_blob_id = b->id;
                                t->cached_idx = idx;
                        }
                        memcpy(p + done, t->chunk + in_chunk, n);
                }

                done += n;
                off += n;
        }

        return (ssize_t)done;
}
