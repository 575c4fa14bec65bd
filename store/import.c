/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "import.h"
#include "util.h"

/* Chunks read but not yet written, over all objects. With 128 KiB chunks this bounds the data held
 * in memory to 8 MiB (plus one compressed frame per thread). */
#define INFLIGHT_MAX 64u
#define THREADS_MAX 16u
#define PROGRESS_INTERVAL_NS (100 * 1000 * 1000ULL)
#define HASH_BLOCK (1u << 20)
/* Stored bytes between two syncfs() of the writeback thread. */
#define WRITEBACK_STEP (UINT64_C(64) << 20)

/* A file's content read in one piece (small files): shared by its chunk jobs. */
typedef struct Buffer {
        atomic_uint refs;
        uint8_t data[];
} Buffer;

typedef struct Object Object;

typedef struct Job {
        struct Job *next;
        Object *obj;
        uint64_t idx;
        const uint8_t *data;
        size_t len;
        Buffer *buf;      /* owner of data, or NULL when data is the job's own allocation */
        uint8_t *frame;   /* the compressed frame, once done */
        size_t frame_size;
        bool delta;       /* the frame is a delta against the base's chunk idx */
} Job;

struct Object {
        Object *prev, *next; /* live objects */
        int fd;              /* created by the first thread that writes to the object */
        char tmp[64];
        NanoBlobWriter *writer;
        uint8_t digest[32];
        uint64_t n_submitted, n_written;
        bool sealed;  /* every chunk submitted and the digest known */
        bool writing; /* a thread is appending frames */
        NanoBlob *base; /* the previous version's object at the same path, for delta frames; owned */
        uint8_t base_id[32];
        Job *ready[INFLIGHT_MAX]; /* compressed, waiting for their turn: ready[idx % INFLIGHT_MAX] */
};

struct Importer {
        NanoStore *store;
        NanoManifestBuilder *builder;
        NanoError *err;
        NanoAddOptions opts;
        NanoPrevious prev; /* the release's previous version (or itself, added again): where delta bases
                            * are found, a hint of which content is stored already, the manifest's base */
        unsigned chunk_shift;
        size_t chunk_size;
        size_t small_max; /* files up to this size are read whole */
        int level;

        pthread_mutex_t lock;
        pthread_cond_t cond_work;  /* a job was queued, or stop */
        pthread_cond_t cond_space; /* inflight went down, or failure */
        pthread_cond_t cond_done;  /* an object was finished, or failure */
        Job *queue_head, *queue_tail;
        unsigned idle_workers;  /* waiting on cond_work: only then is a signal worth a wake-up */
        bool producer_waiting;  /* waiting on cond_space */
        unsigned inflight;
        Object *live;
        unsigned n_live;
        int failed; /* first error, negative */
        bool stop;
        pthread_t threads[THREADS_MAX];
        unsigned n_threads;

        /* Writeback: objects are not synced one by one, and the kernel starts writing dirty pages
         * back only past a share of the RAM, so an import of a few hundred MB used to leave it all
         * to the syncfs() before its ref, which then waited on idle CPUs. A thread syncs every
         * WRITEBACK_STEP stored bytes instead, while compression goes on. */
        pthread_t writeback;
        bool writeback_started;
        pthread_cond_t cond_writeback;
        uint64_t stored_bytes, synced_bytes; /* under lock */

        DigestSet submitted; /* producer only: digests already stored or on their way */
        EVP_MD_CTX *sha;
        uint8_t *hash_buf;

        NanoAddResult result;
        NanoImportProgress progress;
        uint64_t start_ns, last_progress_ns;
};

NanoError *importer_error(Importer *imp)
{
        return imp->err;
}

void importer_warn(Importer *imp, const char *fmt, ...)
{
        char buf[1024];
        va_list ap;

        if (!imp->opts.warning)
                return;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        imp->opts.warning(buf, imp->opts.userdata);
}

static void report_progress(Importer *imp, bool done)
{
        uint64_t now = now_ns();

        if (!imp->opts.progress || (!done && now - imp->last_progress_ns < PROGRESS_INTERVAL_NS))
                return;
        imp->last_progress_ns = now;
        imp->progress.elapsed_ns = now - imp->start_ns;
        imp->progress.done = done;
        imp->opts.progress(&imp->progress, imp->opts.userdata);
}

/* Records the first failure and wakes everyone. Called with the lock held. */
static void fail_locked(Importer *imp, int r)
{
        if (imp->failed == 0)
                imp->failed = r < 0 ? r : -EIO;
        pthread_cond_broadcast(&imp->cond_space);
        pthread_cond_broadcast(&imp->cond_done);
}

static void buffer_unref(Buffer *b)
{
        if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
                free(b);
}

static void job_free_data(Importer *imp, Job *j)
{
        (void)imp;
        if (j->buf)
                buffer_unref(j->buf);
        else
                free((void *)j->data);
        j->data = NULL;
        j->buf = NULL;
}

static void job_free(Importer *imp, Job *j)
{
        if (j->data)
                job_free_data(imp, j);
        free(j->frame);
        free(j);
}

static void object_discard(Importer *imp, Object *o)
{
        for (size_t i = 0; i < INFLIGHT_MAX; i++)
                if (o->ready[i])
                        job_free(imp, o->ready[i]);
        nano_blob_writer_free(o->writer);
        nano_blob_free(o->base);
        if (o->fd >= 0) {
                safe_close(o->fd);
                if (o->tmp[0])
                        (void)unlinkat(imp->store->tmp_fd, o->tmp, 0);
        }
        free(o);
}

/* Creates the object's temporary file. Only the thread that writes the object calls it, so the
 * producer never waits on file creation. */
static int object_open(Importer *imp, Object *o)
{
        int r;

        o->fd = nano_store_objfile(imp->store, o->tmp);
        if (o->fd < 0) {
                r = o->fd;
                o->fd = -EBADF;
                return r;
        }
        r = nano_blob_writer_new(o->fd, imp->chunk_shift, &o->writer);
        if (r >= 0 && o->base)
                r = nano_blob_writer_set_base(o->writer, o->base, o->base_id);
        if (r < 0) {
                o->writer = nano_blob_writer_free(o->writer);
                o->fd = safe_close(o->fd);
                if (o->tmp[0])
                        (void)unlinkat(imp->store->tmp_fd, o->tmp, 0);
        }
        return r;
}

static void unlink_live_locked(Importer *imp, Object *o)
{
        if (o->prev)
                o->prev->next = o->next;
        else
                imp->live = o->next;
        if (o->next)
                o->next->prev = o->prev;
        imp->n_live--;
        pthread_cond_broadcast(&imp->cond_done);
}

/* Writes the table and trailer and moves the object to its final name. Called without the lock,
 * by the one thread that saw the object complete. */
static void object_finalize(Importer *imp, Object *o)
{
        char path[NANO_FANOUT_PATH_SIZE];
        int64_t size = 0;
        uint64_t content_size = 0;
        int r = 0;

        if (!o->writer)
                r = object_open(imp, o); /* an empty object: nothing was written yet */
        if (r >= 0) {
                content_size = nano_blob_writer_size(o->writer);
                size = nano_blob_writer_finish(o->writer);
                r = size < 0 ? (int)size : 0;
        }
        o->writer = nano_blob_writer_free(o->writer);
        /* Content streamed from an archive is hashed as it goes, so its base was chosen before its
         * digest was known: content identical to its base is in the store already, and a delta of
         * itself must never replace it. */
        if (r >= 0 && !(o->base && memcmp(o->digest, o->base_id, 32) == 0)) {
                nano_fanout_path(o->digest, path);
                r = nano_store_publish_fd(imp->store, o->fd, o->tmp, imp->store->objects_fd, path,
                                          (int64_t)content_size);
        } else if (r >= 0 && o->tmp[0])
                (void)unlinkat(imp->store->tmp_fd, o->tmp, 0);
        o->fd = safe_close(o->fd);

        pthread_mutex_lock(&imp->lock);
        if (r < 0) {
                char id[NANO_ID_STRING_SIZE];
                nano_error_set(imp->err, r, "cannot store object '%s' in '%s/store': %m", nano_id_format(o->digest, id),
                               nano_store_home(imp->store));
                fail_locked(imp, r);
        } else if (r > 0) {
                imp->result.new_objects++;
                imp->result.new_bytes += (uint64_t)size;
                imp->stored_bytes += (uint64_t)size;
                if (imp->stored_bytes - imp->synced_bytes >= WRITEBACK_STEP)
                        pthread_cond_signal(&imp->cond_writeback);
        }
        unlink_live_locked(imp, o);
        pthread_mutex_unlock(&imp->lock);
        if (r < 0 && o->tmp[0])
                (void)unlinkat(imp->store->tmp_fd, o->tmp, 0);
        nano_blob_free(o->base);
        free(o);
}

/* Appends, in order, the frames of o that are ready. Called with the lock held, returns with it held.
 * Returns true when o is complete and the caller must finalize it. */
static bool object_drain_locked(Importer *imp, Object *o)
{
        Job *j;

        if (o->writing)
                return false;
        o->writing = true;
        while ((j = o->ready[o->n_written % INFLIGHT_MAX]) && j->idx == o->n_written) {
                int failed = imp->failed, r;
                o->ready[o->n_written % INFLIGHT_MAX] = NULL;
                pthread_mutex_unlock(&imp->lock);
                r = failed ? failed : o->writer ? 0 : object_open(imp, o);
                if (r >= 0)
                        r = (j->delta ? nano_blob_writer_add_delta_frame
                                      : nano_blob_writer_add_frame)(o->writer, j->frame, j->frame_size, j->len);
                free(j->frame);
                free(j);
                pthread_mutex_lock(&imp->lock);
                if (r < 0) {
                        if (!imp->failed)
                                nano_error_set(imp->err, r, "cannot write to the store in '%s/store': %m",
                                               nano_store_home(imp->store));
                        fail_locked(imp, r);
                }
                o->n_written++;
                imp->inflight--;
                if (imp->producer_waiting)
                        pthread_cond_signal(&imp->cond_space);
        }
        o->writing = false;
        if (o->sealed && o->n_written == o->n_submitted && !imp->failed) {
                o->sealed = false; /* nobody else finalizes it */
                return true;
        }
        return false;
}

/* Keeps a copy of the compressor's output in the job. */
static int job_set_frame(Job *j, const void *frame, size_t n, bool delta)
{
        uint8_t *p = malloc(n);

        if (!p)
                return -ENOMEM;
        memcpy(p, frame, n);
        free(j->frame);
        j->frame = p;
        j->frame_size = n;
        j->delta = delta;
        return 0;
}

/* Compresses the job's chunk, as a delta against the base's chunk of the same index where that pays
 * (doc/store.md, "Delta objects"): a delta that shrinks the chunk 8 times over is taken at once;
 * otherwise the chunk is also compressed alone, and the delta kept only if it is at least 1/8
 * smaller, since reading it costs a second decompression. prefix: a chunk-sized buffer. */
static int compress_job(NanoChunkCompressor *c, Job *j, uint8_t *prefix)
{
        const Object *o = j->obj;
        const void *frame;
        size_t n, delta_size = SIZE_MAX;
        int r;

        if (o->base && j->idx < nano_blob_n_chunks(o->base)) {
                /* A base that fails to read (damaged since it was chosen) is simply not used. */
                ssize_t plen = nano_blob_read_chunk(o->base, j->idx, prefix);
                if (plen > 0 && nano_chunk_compress_delta(c, j->data, j->len, prefix, (size_t)plen, &frame, &n) >= 0) {
                        r = job_set_frame(j, frame, n, true);
                        if (r < 0)
                                return r;
                        if (n <= j->len / 8)
                                return 0;
                        delta_size = n;
                }
        }
        r = nano_chunk_compress(c, j->data, j->len, &frame, &n);
        if (r < 0)
                return r;
        if (delta_size != SIZE_MAX && delta_size + delta_size / 8 < n)
                return 0;
        return job_set_frame(j, frame, n, false);
}

static void *worker(void *userdata)
{
        Importer *imp = userdata;
        _cleanup_(nano_chunk_compressor_freep) NanoChunkCompressor *c = NULL;
        _cleanup_free_ uint8_t *prefix = NULL;
        int r;

        r = nano_chunk_compressor_new(imp->level, &c);
        pthread_mutex_lock(&imp->lock);
        if (r < 0) {
                nano_error_set(imp->err, r, "cannot create a zstd compressor: %m");
                fail_locked(imp, r);
        }
        for (;;) {
                Job *j;
                while (!imp->queue_head && !imp->stop) {
                        imp->idle_workers++;
                        pthread_cond_wait(&imp->cond_work, &imp->lock);
                        imp->idle_workers--;
                }
                if (imp->stop)
                        break;
                j = imp->queue_head;
                imp->queue_head = j->next;
                if (!imp->queue_head)
                        imp->queue_tail = NULL;
                bool failed = imp->failed != 0 || !c;
                pthread_mutex_unlock(&imp->lock);

                if (!failed) {
                        r = 0;
                        if (j->obj->base && !prefix) {
                                prefix = malloc(imp->chunk_size);
                                if (!prefix)
                                        r = -ENOMEM;
                        }
                        if (r >= 0)
                                r = compress_job(c, j, prefix);
                        if (r < 0) {
                                pthread_mutex_lock(&imp->lock);
                                nano_error_set(imp->err, r, "cannot compress: %m");
                                fail_locked(imp, r);
                                pthread_mutex_unlock(&imp->lock);
                        }
                }
                job_free_data(imp, j);

                pthread_mutex_lock(&imp->lock);
                Object *o = j->obj;
                o->ready[j->idx % INFLIGHT_MAX] = j;
                if (object_drain_locked(imp, o)) {
                        pthread_mutex_unlock(&imp->lock);
                        object_finalize(imp, o);
                        pthread_mutex_lock(&imp->lock);
                }
        }
        pthread_mutex_unlock(&imp->lock);
        return NULL;
}

static void *writeback(void *userdata)
{
        Importer *imp = userdata;

        pthread_mutex_lock(&imp->lock);
        for (;;) {
                while (!imp->stop && imp->stored_bytes - imp->synced_bytes < WRITEBACK_STEP)
                        pthread_cond_wait(&imp->cond_writeback, &imp->lock);
                if (imp->stop)
                        break;
                imp->synced_bytes = imp->stored_bytes;
                pthread_mutex_unlock(&imp->lock);
                /* Errors are the final syncfs()'s to report. */
                (void)syncfs(imp->store->store_fd);
                pthread_mutex_lock(&imp->lock);
        }
        pthread_mutex_unlock(&imp->lock);
        return NULL;
}

int importer_new(NanoStore *s, const NanoAddOptions *opts, NanoError *err, Importer **ret)
{
        Importer *imp;
        long ncpu;
        int r;

        imp = calloc(1, sizeof *imp);
        if (!imp)
                return -ENOMEM;
        imp->store = s;
        imp->err = err;
        if (opts)
                imp->opts = *opts;
        imp->chunk_shift = imp->opts.chunk_shift ? imp->opts.chunk_shift : NANO_BLOB_CHUNK_SHIFT_DEFAULT;
        if (imp->chunk_shift < NANO_BLOB_CHUNK_SHIFT_MIN || imp->chunk_shift > NANO_BLOB_CHUNK_SHIFT_MAX) {
                free(imp);
                return nano_error_set(err, EINVAL, "chunk size must be 2^%u..2^%u bytes", NANO_BLOB_CHUNK_SHIFT_MIN,
                                      NANO_BLOB_CHUNK_SHIFT_MAX);
        }
        imp->chunk_size = (size_t)1 << imp->chunk_shift;
        imp->small_max = MIN((size_t)4 << 20, imp->chunk_size * (INFLIGHT_MAX / 2));
        imp->level = imp->opts.level ? imp->opts.level : NANO_BLOB_LEVEL_DEFAULT;
        pthread_mutex_init(&imp->lock, NULL);
        pthread_cond_init(&imp->cond_work, NULL);
        pthread_cond_init(&imp->cond_space, NULL);
        pthread_cond_init(&imp->cond_done, NULL);
        pthread_cond_init(&imp->cond_writeback, NULL);
        imp->start_ns = imp->last_progress_ns = now_ns();

        r = nano_manifest_builder_new(&imp->builder);
        imp->sha = EVP_MD_CTX_new();
        imp->hash_buf = malloc(HASH_BLOCK);
        if (r < 0 || !imp->sha || !imp->hash_buf) {
                importer_free(imp);
                return -ENOMEM;
        }

        ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        imp->n_threads = imp->opts.threads ? imp->opts.threads : (unsigned)MAX(ncpu, 1);
        imp->n_threads = MIN(imp->n_threads, THREADS_MAX);
        for (unsigned i = 0; i < imp->n_threads; i++) {
                r = -pthread_create(&imp->threads[i], NULL, worker, imp);
                if (r < 0) {
                        imp->n_threads = i;
                        importer_free(imp);
                        return nano_error_set(err, r, "cannot start compression threads: %m");
                }
        }
        /* Without it, everything is synced at the end, as before. */
        imp->writeback_started = pthread_create(&imp->writeback, NULL, writeback, imp) == 0;
        *ret = imp;
        return 0;
}

Importer *importer_free(Importer *imp)
{
        if (!imp)
                return NULL;
        pthread_mutex_lock(&imp->lock);
        imp->stop = true;
        if (!imp->failed)
                imp->failed = -ECANCELED;
        pthread_cond_broadcast(&imp->cond_work);
        pthread_cond_signal(&imp->cond_writeback);
        pthread_mutex_unlock(&imp->lock);
        for (unsigned i = 0; i < imp->n_threads; i++)
                pthread_join(imp->threads[i], NULL);
        if (imp->writeback_started)
                pthread_join(imp->writeback, NULL);

        /* Threads are gone: no locking needed from here, but job_free takes the lock for buffers. */
        while (imp->queue_head) {
                Job *j = imp->queue_head;
                imp->queue_head = j->next;
                job_free(imp, j);
        }
        while (imp->live) {
                Object *o = imp->live;
                imp->live = o->next;
                object_discard(imp, o);
        }
        nano_manifest_builder_free(imp->builder);
        nano_previous_done(&imp->prev);
        digest_set_done(&imp->submitted);
        EVP_MD_CTX_free(imp->sha);
        free(imp->hash_buf);
        pthread_mutex_destroy(&imp->lock);
        pthread_cond_destroy(&imp->cond_work);
        pthread_cond_destroy(&imp->cond_space);
        pthread_cond_destroy(&imp->cond_done);
        pthread_cond_destroy(&imp->cond_writeback);
        free(imp);
        return NULL;
}

/* Waits until n more chunks may be held in memory. */
static int reserve(Importer *imp, unsigned n)
{
        int r;

        pthread_mutex_lock(&imp->lock);
        while (imp->inflight + n > INFLIGHT_MAX && !imp->failed) {
                imp->producer_waiting = true;
                pthread_cond_wait(&imp->cond_space, &imp->lock);
                imp->producer_waiting = false;
        }
        r = imp->failed;
        if (r == 0)
                imp->inflight += n;
        pthread_mutex_unlock(&imp->lock);
        return r;
}

static void unreserve(Importer *imp, unsigned n)
{
        pthread_mutex_lock(&imp->lock);
        imp->inflight -= n;
        pthread_cond_broadcast(&imp->cond_space);
        pthread_mutex_unlock(&imp->lock);
}

static int object_new(Importer *imp, Object **ret)
{
        Object *o = calloc(1, sizeof *o);

        if (!o)
                return nano_error_set(imp->err, ENOMEM, "out of memory");
        o->fd = -EBADF;
        pthread_mutex_lock(&imp->lock);
        o->next = imp->live;
        if (o->next)
                o->next->prev = o;
        imp->live = o;
        imp->n_live++;
        pthread_mutex_unlock(&imp->lock);
        *ret = o;
        return 0;
}

/* The base for new content at path: the previous version's object at the same path, or that object's
 * own base if it is a delta (a base is always a plain object), when it has the import's chunk size.
 * None is no error: the content is then compressed on its own. Called by the producer, before the
 * object's first chunk is submitted. */
static void object_find_base(Importer *imp, Object *o, const char *path)
{
        NanoBlob *b = NULL;
        uint32_t idx;
        NanoEntry e;

        if (!imp->prev.manifest || imp->opts.no_delta || nano_manifest_resolve(imp->prev.manifest, path, &idx) < 0)
                return;
        nano_manifest_entry(imp->prev.manifest, idx, &e);
        if (e.type != NANO_ENTRY_REGULAR || e.size == 0 || nano_store_open_plain_blob(imp->store, e.digest, &b) < 0)
                return;
        if (nano_blob_is_delta(b, e.digest)) {
                nano_blob_free(b);
                if (nano_store_open_plain_blob(imp->store, e.digest, &b) < 0)
                        return;
        }
        if (nano_blob_is_delta(b, NULL) || nano_blob_chunk_shift(b) != imp->chunk_shift) {
                nano_blob_free(b);
                return;
        }
        o->base = b;
        memcpy(o->base_id, e.digest, 32);
}

/* Queues one chunk (its inflight slot is already reserved). */
static void submit(Importer *imp, Object *o, const uint8_t *data, size_t len, Buffer *buf, Job *j)
{
        j->obj = o;
        j->data = data;
        j->len = len;
        j->buf = buf;
        if (buf)
                atomic_fetch_add_explicit(&buf->refs, 1, memory_order_relaxed);
        pthread_mutex_lock(&imp->lock);
        j->idx = o->n_submitted++;
        if (imp->queue_tail)
                imp->queue_tail->next = j;
        else
                imp->queue_head = j;
        imp->queue_tail = j;
        if (imp->idle_workers > 0)
                pthread_cond_signal(&imp->cond_work);
        pthread_mutex_unlock(&imp->lock);
}

/* No more chunks for o: its digest is known. Finalizes it here if the threads are done with it. */
static int seal(Importer *imp, Object *o, const uint8_t digest[32])
{
        bool finalize;
        int r;

        pthread_mutex_lock(&imp->lock);
        memcpy(o->digest, digest, 32);
        o->sealed = true;
        finalize = object_drain_locked(imp, o);
        r = imp->failed;
        pthread_mutex_unlock(&imp->lock);
        if (finalize)
                object_finalize(imp, o);
        return r;
}

static int add_regular(Importer *imp, const char *path, const char *display, const uint8_t digest[32], uint64_t size,
                       const NanoEntry *attrs)
{
        NanoEntry e = *attrs;
        int r;

        e.type = NANO_ENTRY_REGULAR;
        e.size = size;
        memcpy(e.digest, digest, 32);
        r = nano_manifest_builder_add(imp->builder, path, &e);
        if (r < 0)
                return nano_error_set(imp->err, r, "cannot add %s to the manifest: %m", display);
        imp->result.files++;
        imp->result.bytes += size;
        imp->progress.files++;
        report_progress(imp, false);
        return 0;
}

/* Small content held whole in buf (owned), at path in the release: stores it unless the store has it
 * already. */
static int store_buffer(Importer *imp, const char *path, const char *display, Buffer *buf, size_t size,
                        const uint8_t digest[32])
{
        Object *o = NULL;
        unsigned n_chunks = (unsigned)DIV_ROUND_UP(size, imp->chunk_size);
        int r;

        r = digest_set_add(&imp->submitted, digest);
        if (r <= 0 || nano_store_has_object(imp->store, digest, size)) {
                free(buf);
                return r < 0 ? nano_error_set(imp->err, r, "out of memory") : 0;
        }
        r = reserve(imp, n_chunks);
        if (r < 0) {
                free(buf);
                return r;
        }
        r = object_new(imp, &o);
        if (r < 0) {
                unreserve(imp, n_chunks);
                free(buf);
                return r;
        }
        object_find_base(imp, o, path);
        /* The producer holds one reference while it submits, dropped below. */
        atomic_init(&buf->refs, 1);
        for (size_t off = 0; off < size; off += imp->chunk_size) {
                Job *j = calloc(1, sizeof *j);
                if (!j) {
                        /* The slots of the chunks not submitted are given back. */
                        unreserve(imp, n_chunks - (unsigned)(off / imp->chunk_size));
                        pthread_mutex_lock(&imp->lock);
                        fail_locked(imp, -ENOMEM);
                        pthread_mutex_unlock(&imp->lock);
                        buffer_unref(buf);
                        return nano_error_set(imp->err, ENOMEM, "out of memory");
                }
                submit(imp, o, buf->data + off, MIN(imp->chunk_size, size - off), buf, j);
        }
        buffer_unref(buf);
        return seal(imp, o, digest);
}

/* Reads exactly len bytes from fn unless it ends first. */
static ssize_t read_exact(ImportReadFn fn, void *userdata, uint8_t *buf, size_t len)
{
        size_t done = 0;

        while (done < len) {
                ssize_t n = fn(userdata, buf + done, len - done);
                if (n < 0)
                        return n;
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        return (ssize_t)done;
}

/* Streams content from fn into a new object for path, chunk by chunk, hashing as it goes. If expect is
 * set, the content must hash to it. live: the content is a file that may change meanwhile (not an
 * archive member), which is what a size mismatch then means. */
static int store_stream(Importer *imp, const char *path, const char *display, ImportReadFn fn, void *userdata,
                        int64_t size, const uint8_t *expect, bool live, uint8_t ret_digest[32], uint64_t *ret_size)
{
        Object *o = NULL;
        uint64_t total = 0;
        uint8_t digest[32];
        unsigned dlen = 32;
        int r;

        r = object_new(imp, &o);
        if (r < 0)
                return r;
        object_find_base(imp, o, path);
        EVP_DigestInit_ex(imp->sha, EVP_sha256(), NULL);
        for (;;) {
                uint8_t *data;
                Job *j;
                ssize_t n;

                r = reserve(imp, 1);
                if (r < 0)
                        return r;
                data = malloc(imp->chunk_size);
                j = calloc(1, sizeof *j);
                if (!data || !j) {
                        free(data);
                        free(j);
                        unreserve(imp, 1);
                        return nano_error_set(imp->err, ENOMEM, "out of memory");
                }
                n = read_exact(fn, userdata, data, imp->chunk_size);
                if (n <= 0) {
                        free(data);
                        free(j);
                        unreserve(imp, 1);
                        if (n < 0)
                                return n; /* the reader recorded the error */
                        break;
                }
                EVP_DigestUpdate(imp->sha, data, (size_t)n);
                total += (uint64_t)n;
                imp->progress.bytes += (uint64_t)n;
                if (size >= 0 && total > (uint64_t)size) {
                        free(data);
                        free(j);
                        unreserve(imp, 1);
                        if (live)
                                return nano_error_set(imp->err, EBUSY, "%s changed while it was being imported",
                                                      display);
                        return nano_error_set(imp->err, EBADMSG, "%s has more data than its size (%lld bytes)",
                                              display, (long long)size);
                }
                submit(imp, o, data, (size_t)n, NULL, j);
                report_progress(imp, false);
                if ((size_t)n < imp->chunk_size)
                        break;
        }
        if (size >= 0 && total != (uint64_t)size && live)
                return nano_error_set(imp->err, EBUSY, "%s changed while it was being imported", display);
        if (size >= 0 && total != (uint64_t)size)
                return nano_error_set(imp->err, EBADMSG, "%s is truncated: %llu bytes of %lld", display,
                                      (unsigned long long)total, (long long)size);
        EVP_DigestFinal_ex(imp->sha, digest, &dlen);
        if (expect && memcmp(expect, digest, 32) != 0)
                return nano_error_set(imp->err, EBUSY, "%s changed while it was being imported", display);
        r = digest_set_add(&imp->submitted, digest);
        if (r < 0)
                return nano_error_set(imp->err, r, "out of memory");
        r = seal(imp, o, digest);
        if (r < 0)
                return r;
        memcpy(ret_digest, digest, 32);
        *ret_size = total;
        return 0;
}

/* Whether a large file's content is likely in the store already: the release's previous version (or
 * the release itself, added again) has a file of the same size at the same path. Then hashing it
 * first, in a pass of its own, spares compressing it; otherwise that pass would read it twice for
 * nothing. A wrong guess costs time, never correctness. */
static bool likely_stored(Importer *imp, const char *path, uint64_t size)
{
        uint32_t idx;
        NanoEntry e;

        if (!imp->prev.manifest || nano_manifest_resolve(imp->prev.manifest, path, &idx) < 0)
                return false;
        nano_manifest_entry(imp->prev.manifest, idx, &e);
        return e.type == NANO_ENTRY_REGULAR && e.size == size;
}

struct fd_reader {
        Importer *imp;
        const char *display;
        int fd;
};

static ssize_t fd_read(void *userdata, void *buf, size_t len)
{
        struct fd_reader *fr = userdata;
        ssize_t n;

        do
                n = read(fr->fd, buf, len);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return nano_error_set(fr->imp->err, errno, "cannot read %s: %m", fr->display);
        return n;
}

int importer_add_fd(Importer *imp, const char *path, const char *display, int fd, uint64_t size,
                    const NanoEntry *attrs, uint8_t ret_digest[32])
{
        struct fd_reader fr = { imp, display, fd };
        uint8_t digest[32];
        unsigned dlen = 32;
        uint64_t total = 0;
        int r;

        if (size <= imp->small_max) {
                Buffer *buf = malloc(sizeof(Buffer) + size + 1);
                ssize_t n;
                if (!buf)
                        return nano_error_set(imp->err, ENOMEM, "out of memory");
                /* One byte more than announced tells a file that grew since it was stat'ed. */
                n = read_exact(fd_read, &fr, buf->data, size + 1);
                if (n < 0) {
                        free(buf);
                        return (int)n;
                }
                if ((uint64_t)n != size) {
                        free(buf);
                        return nano_error_set(imp->err, EBUSY, "%s changed while it was being imported", display);
                }
                imp->progress.bytes += size;
                nano_sha256(buf->data, size, digest);
                r = store_buffer(imp, path, display, buf, size, digest);
                if (r < 0)
                        return r;
                memcpy(ret_digest, digest, 32);
                return add_regular(imp, path, display, digest, size, attrs);
        }

        /* A large file that is likely new is read once, hashed while it is compressed; if it turns out
         * to be stored already, the copy is dropped. */
        if (!likely_stored(imp, path, size)) {
                r = store_stream(imp, path, display, fd_read, &fr, (int64_t)size, NULL, true, digest, &total);
                if (r < 0)
                        return r;
                memcpy(ret_digest, digest, 32);
                return add_regular(imp, path, display, digest, size, attrs);
        }

        /* Likely stored: hash it first, so that content the store already has is never compressed. */
        EVP_DigestInit_ex(imp->sha, EVP_sha256(), NULL);
        for (;;) {
                ssize_t n = read_exact(fd_read, &fr, imp->hash_buf, HASH_BLOCK);
                if (n < 0)
                        return (int)n;
                if (n == 0)
                        break;
                EVP_DigestUpdate(imp->sha, imp->hash_buf, (size_t)n);
                total += (uint64_t)n;
                if ((size_t)n < HASH_BLOCK)
                        break;
        }
        EVP_DigestFinal_ex(imp->sha, digest, &dlen);
        if (total != size)
                return nano_error_set(imp->err, EBUSY, "%s changed while it was being imported", display);
        if (digest_set_contains(&imp->submitted, digest) || nano_store_has_object(imp->store, digest, size)) {
                imp->progress.bytes += size;
                memcpy(ret_digest, digest, 32);
                return add_regular(imp, path, display, digest, size, attrs);
        }
        if (lseek(fd, 0, SEEK_SET) < 0)
                return nano_error_set(imp->err, errno, "cannot read %s: %m", display);
        uint8_t got[32];
        r = store_stream(imp, path, display, fd_read, &fr, (int64_t)size, digest, true, got, &total);
        if (r < 0)
                return r;
        memcpy(ret_digest, digest, 32);
        return add_regular(imp, path, display, digest, size, attrs);
}

int importer_add_stream(Importer *imp, const char *path, const char *display, ImportReadFn fn, void *userdata,
                        int64_t size, const NanoEntry *attrs)
{
        uint8_t digest[32];
        uint64_t total;
        int r;

        if (size >= 0 && (uint64_t)size <= imp->small_max) {
                Buffer *buf = malloc(sizeof(Buffer) + (size_t)size + 1);
                ssize_t n;
                if (!buf)
                        return nano_error_set(imp->err, ENOMEM, "out of memory");
                n = read_exact(fn, userdata, buf->data, (size_t)size + 1);
                if (n < 0) {
                        free(buf);
                        return (int)n;
                }
                if (n != size) {
                        free(buf);
                        return nano_error_set(imp->err, EBADMSG, "%s is %s its announced size (%lld bytes)",
                                              display, n < size ? "shorter than" : "longer than", (long long)size);
                }
                imp->progress.bytes += (uint64_t)size;
                nano_sha256(buf->data, (size_t)size, digest);
                r = store_buffer(imp, path, display, buf, (size_t)size, digest);
                if (r < 0)
                        return r;
                return add_regular(imp, path, display, digest, (uint64_t)size, attrs);
        }
        r = store_stream(imp, path, display, fn, userdata, size, NULL, false, digest, &total);
        if (r < 0)
                return r;
        return add_regular(imp, path, display, digest, total, attrs);
}

int importer_add_entry(Importer *imp, const char *path, const char *display, const NanoEntry *e)
{
        int r = nano_manifest_builder_add(imp->builder, path, e);

        if (r == -ENOTDIR)
                return nano_error_set(imp->err, r, "%s: a parent of this path is not a directory", display);
        if (r == -E2BIG)
                return nano_error_set(imp->err, r, "%s: the tree exceeds nano's limits (16M entries, 2 GiB of names)",
                                      display);
        if (r < 0)
                return nano_error_set(imp->err, r, "cannot add %s: %m", display);
        if (e->type == NANO_ENTRY_DIRECTORY)
                imp->result.directories++;
        else if (e->type == NANO_ENTRY_SYMLINK)
                imp->result.symlinks++;
        imp->progress.files++;
        report_progress(imp, false);
        return 0;
}

int importer_add_link(Importer *imp, const char *path, const char *target, const char *display)
{
        int r = nano_manifest_builder_link(imp->builder, path, target);

        if (r == -ENOENT)
                return nano_error_set(imp->err, EINVAL,
                                      "%s is a hard link to '%s', which is not in the archive before it", display,
                                      target);
        if (r < 0)
                return nano_error_set(imp->err, r, "%s is a hard link to '%s', which is not a regular file", display,
                                      target);
        imp->result.files++;
        imp->progress.files++;
        return 0;
}

/* The result describes the release, not the input: an archive may list a path twice or leave its
 * directories implied, so count what the manifest holds. */
static int count_entries(Importer *imp, const uint8_t *data, size_t size)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        int r = nano_manifest_parse(data, size, &m);

        if (r < 0)
                return r;
        imp->result.files = imp->result.directories = imp->result.symlinks = imp->result.bytes = 0;
        for (uint32_t i = 0, n = nano_manifest_count(m); i < n; i++) {
                NanoEntry e;
                nano_manifest_entry(m, i, &e);
                if (e.type == NANO_ENTRY_REGULAR) {
                        imp->result.files++;
                        imp->result.bytes += e.size;
                } else if (e.type == NANO_ENTRY_DIRECTORY)
                        imp->result.directories++;
                else
                        imp->result.symlinks++;
        }
        return 0;
}

int importer_finish(Importer *imp, NanoAddResult *ret)
{
        _cleanup_free_ uint8_t *data = NULL;
        uint64_t stored = 0;
        uint8_t id[32];
        size_t size;
        int r;

        pthread_mutex_lock(&imp->lock);
        while (imp->n_live > 0 && !imp->failed)
                pthread_cond_wait(&imp->cond_done, &imp->lock);
        r = imp->failed;
        pthread_mutex_unlock(&imp->lock);
        if (r < 0)
                return r;

        r = nano_manifest_builder_finish(imp->builder, &data, &size, id);
        if (r < 0)
                return nano_error_set(imp->err, r, "cannot build the manifest: %m");
        r = count_entries(imp, data, size);
        if (r < 0)
                return nano_error_set(imp->err, r, "the manifest built does not parse: %m");
        /* Packed against the manifest of another version of the release, if there is one: the base is
         * reachable from that version's ref, and gc, which takes the store lock exclusively, cannot
         * remove it before this import's ref (written under our shared lock) makes it reachable from
         * the new manifest too (doc/store.md, "Packed manifests"). */
        r = nano_store_put_manifest(imp->store, data, size, id, &imp->prev, &stored);
        if (r < 0) {
                char idbuf[NANO_ID_STRING_SIZE];
                return nano_error_set(imp->err, r, "cannot store the manifest %s: %m", nano_id_format(id, idbuf));
        }
        imp->result.new_bytes += stored;

        report_progress(imp, true);
        *ret = imp->result;
        memcpy(ret->id, id, 32);
        return 0;
}

int nano_store_add(NanoStore *s, const char *source, const char *name, const char *version,
                   const NanoAddOptions *opts, NanoAddResult *ret, NanoError *err)
{
        Importer *imp = NULL;
        NanoAddResult res = { 0 };
        uint8_t old[32];
        bool had_ref;
        struct stat st;
        int r;

        if (!nano_name_is_valid(name))
                return nano_error_set(err, EINVAL, "invalid release name '%s': use [A-Za-z0-9][A-Za-z0-9._+-]{0,127}",
                                      name);
        if (!nano_name_is_valid(version))
                return nano_error_set(err, EINVAL, "invalid version '%s': use [A-Za-z0-9][A-Za-z0-9._+-]{0,127}",
                                      version);
        if (nano_name_is_reserved(name))
                return nano_error_set(err, EINVAL,
                                      "release name '%s' is reserved for the mount's by-id view "
                                      "(/by-id/sha256:<id>); choose another name",
                                      name);
        if (stat(source, &st) < 0)
                return nano_error_set(err, errno, "cannot import '%s': %m", source);
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
                return nano_error_set(err, EINVAL, "cannot import '%s': not a directory, an archive or a .deb", source);

        r = nano_ref_read(s, name, version, old);
        had_ref = r >= 0;

        /* Shared: concurrent imports proceed together; gc and fsck wait for them. */
        r = nano_store_lock(s, LOCK_SH);
        if (r < 0)
                return nano_error_set(err, r, "cannot lock the store: %m");

        r = importer_new(s, opts, err, &imp);
        if (r >= 0) {
                /* Without a previous version, every file is compressed on its own. */
                r = nano_store_open_previous(s, name, version, &imp->prev);
                if (r == -ENOMEM)
                        nano_error_set(err, r, "out of memory");
                else if (r < 0)
                        r = 0;
        }
        if (r >= 0)
                r = S_ISDIR(st.st_mode) ? import_directory(imp, source) : import_archive(imp, source);
        if (r >= 0)
                r = importer_finish(imp, &res);
        importer_free(imp);
        if (r < 0) {
                nano_store_unlock(s);
                if (r == -ENOSPC && (!err || err->error == ENOSPC))
                        return nano_error_set(err, r, "the disk holding '%s' is full: nothing was stored",
                                              nano_store_home(s));
                return nano_error_set(err, r, "cannot import '%s': %m", source);
        }
        if (had_ref && memcmp(old, res.id, 32) != 0) {
                char id[NANO_ID_STRING_SIZE];
                nano_store_unlock(s);
                return nano_error_set(err, EEXIST,
                                      "release '%s@%s' already exists with other content (%s); remove it first with "
                                      "'nano store rm %s@%s'",
                                      name, version, nano_id_format(old, id), name, version);
        }
        r = nano_ref_write(s, name, version, res.id);
        nano_store_unlock(s);
        if (r == -EEXIST) {
                char id[NANO_ID_STRING_SIZE];
                (void)nano_ref_read(s, name, version, old);
                return nano_error_set(err, r, "release '%s@%s' was just added with other content (%s)", name, version,
                                      nano_id_format(old, id));
        }
        if (r < 0)
                return nano_error_set(err, r, "cannot write the ref of '%s@%s': %m", name, version);
        res.existed = r == 0;
        *ret = res;
        return 0;
}
