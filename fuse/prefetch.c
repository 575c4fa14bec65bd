/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reading ahead of the programs, in a few background threads:
 *
 * Sibling prefetch: when a second file of a directory has its object opened for the first time, the
 * objects of the other small files of that directory are read ahead into the page cache.
 * Objects are files of their own, placed by hash: a cold read of a small file costs the disk one
 * read for its fan-out directory, one for its inode and one for its data, in a row, where a
 * squashfs image keeps a directory's small files together (fragments) and gets them in one read.
 * Programs read the files of a directory together (an interpreter importing a package's modules
 * from one __pycache__, tar and cp copying a tree), so starting those reads at the first one lets the
 * disk work on them in parallel instead of one request at a time. Each directory is prefetched
 * once, at its second file read (later in large directories, below), only files up to
 * PREFETCH_FILE_MAX, at most PREFETCH_DIR_MAX per directory; the queue is bounded and drops what does
 * not fit: prefetching is a hint, never a debt.
 *
 * Decompression ahead: a file read out of order (a program or library mapped and paged in by its
 * faults, a database read at random) has all of its chunks decompressed into the chunk cache, in
 * order, while the program waits on the chunk it faulted on: each of the ~50 faults of python3.11's
 * 6.8 MB binary otherwise waits for the one or two chunks under the 128 KiB the kernel asks for to be
 * decompressed, one fault after the other, with the second CPU idle.
 * Sequential readers need none of it: the kernel's readahead already asks for the next chunks in
 * parallel. One job fewer than CPUs runs at a time (one on two), so that the program keeps a CPU. */
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include "fuse-internal.h"
#include "util.h"

#define PREFETCH_FILE_MAX (256u * 1024) /* uncompressed bytes: small files, where latency dominates */
#define PREFETCH_DIR_MAX  256u          /* files queued per directory */
#define PREFETCH_QUEUE    1024u         /* objects waiting */
#define PREFETCH_SEEN     4096u         /* directories remembered as done (then forgotten at once) */
#define AHEAD_QUEUE       64u           /* objects waiting to be decompressed ahead */

struct Prefetch {
        NanoFuse *f;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint8_t (*queue)[32];
        size_t head, n;
        struct {
                uint8_t digest[32];
                uint64_t ino, size;
        } ahead[AHEAD_QUEUE];
        size_t ahead_head, ahead_n;
        unsigned ahead_running, ahead_max;
        uint64_t seen[PREFETCH_SEEN]; /* open addressing; 0 is empty */
        size_t n_seen;
        atomic_bool stop;
        unsigned n_threads;
        pthread_t threads[PREFETCH_THREADS];
};

/* The first reads of files in a directory before it is prefetched: two (one read in a directory says
 * little: a program reading one configuration file among a hundred; two say that it reads that
 * directory), more in a large directory, where a few reads say less about the rest: Python reads 3 of
 * the 122 modules of encodings/ at every start, and prefetching the other 119 made a cold
 * `python3 -c pass` send the disk 450 requests instead of 100, the ones it waited for among them. */
#define PREFETCH_READS_MIN 2u
#define PREFETCH_READS_MAX 16u
#define PREFETCH_READS_PER 16u /* entries of the directory per read asked for */

/* Counts a first read in the directory with this key: true at the want-th, which is when it is
 * prefetched; false before and after. Under lock. */
static bool seen_enough_locked(Prefetch *p, uint64_t key, unsigned want)
{
        size_t i;

        key &= ~UINT64_C(0xff); /* the low byte counts reads: never 0; 0xff once prefetched */
        if (p->n_seen >= PREFETCH_SEEN / 2) {
                /* Forget them all: at worst a directory is prefetched twice. */
                memset(p->seen, 0, sizeof p->seen);
                p->n_seen = 0;
        }
        for (i = (key >> 8) % PREFETCH_SEEN; p->seen[i]; i = (i + 1) % PREFETCH_SEEN)
                if ((p->seen[i] & ~UINT64_C(0xff)) == key) {
                        unsigned count = (unsigned)(p->seen[i] & 0xff);
                        if (count == 0xff)
                                return false; /* prefetched already */
                        if (++count >= want) {
                                p->seen[i] = key | 0xff;
                                return true;
                        }
                        p->seen[i] = key | count;
                        return false;
                }
        p->seen[i] = key | 1;
        p->n_seen++;
        return false;
}

/* Decompresses every chunk of the object of inode ino into the chunk cache, through its own blob
 * (the reader's belongs to a node that the kernel may forget meanwhile), and hands each chunk to the
 * kernel's page cache of the inode (FUSE_NOTIFY_STORE): the program's next faults there are then
 * served without a request. A chunk already cached costs a probe; one being filled by a reader is
 * waited for, not done twice; a corrupt one ends the job and is left to the reader, who gets the EIO
 * and logs it. Only verified chunks reach the kernel, as with a read. */
static void decompress_object(Prefetch *p, const uint8_t digest[32], uint64_t ino, uint64_t size)
{
        NanoFuse *f = p->f;
        NanoBlob *b = NULL;
        bool store;
        unsigned shift;

        if (object_blob_open(f, digest, false, &b) < 0)
                return;
        /* The size is the inode's, so a store cannot extend the file; the inode number is checked to be
         * this content's still (it is derived from the content, but a collision moves a number). */
        store = nano_blob_size(b) == size && node_ino_is(f, ino, digest);
        shift = nano_blob_chunk_shift(b);
        for (uint64_t i = 0; i < nano_blob_n_chunks(b) && !p->stop; i++) {
                Chunk *k;
                if (chunk_cache_get(f->cache, b, digest, i, &k) < 0)
                        break;
                if (store) {
                        struct fuse_bufvec v = FUSE_BUFVEC_INIT(chunk_size(k));
                        v.buf[0].mem = (void *)chunk_data(k);
                        /* -ENOENT: the kernel forgot the inode; nothing more to give it. */
                        if (fuse_lowlevel_notify_store(f->se, ino, (off_t)(i << shift), &v, 0) < 0)
                                store = false;
                }
                chunk_unref(f->cache, k);
        }
        nano_blob_free(b);
}

static void *prefetch_thread(void *userdata)
{
        Prefetch *p = userdata;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                bool ahead;
                while (!p->stop && p->n == 0 && (p->ahead_n == 0 || p->ahead_running >= p->ahead_max))
                        pthread_cond_wait(&p->cond, &p->lock);
                if (p->stop)
                        break;
                ahead = p->ahead_n > 0 && p->ahead_running < p->ahead_max;
                if (ahead) {
                        uint8_t digest[32];
                        uint64_t ino = p->ahead[p->ahead_head].ino, size = p->ahead[p->ahead_head].size;
                        memcpy(digest, p->ahead[p->ahead_head].digest, 32);
                        p->ahead_head = (p->ahead_head + 1) % AHEAD_QUEUE;
                        p->ahead_n--;
                        p->ahead_running++;
                        pthread_mutex_unlock(&p->lock);

                        decompress_object(p, digest, ino, size);

                        pthread_mutex_lock(&p->lock);
                        p->ahead_running--;
                        pthread_cond_broadcast(&p->cond);
                        continue;
                }
                uint8_t digest[32];
                memcpy(digest, p->queue[p->head], 32);
                p->head = (p->head + 1) % PREFETCH_QUEUE;
                p->n--;
                pthread_mutex_unlock(&p->lock);

                /* Opening reads the inode (and the fan-out directory); WILLNEED starts reading the
                 * data without waiting for it. Errors do not matter: the real read reports them. */
                int fd = nano_store_open_object(p->f->store, digest);
                if (fd >= 0) {
                        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
                        close(fd);
                }
                pthread_mutex_lock(&p->lock);
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int prefetch_new(NanoFuse *f, unsigned n_threads, Prefetch **ret)
{
        Prefetch *p = calloc(1, sizeof *p);

        if (!p)
                return -ENOMEM;
        p->queue = calloc(PREFETCH_QUEUE, sizeof *p->queue);
        if (!p->queue) {
                free(p);
                return -ENOMEM;
        }
        p->f = f;
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        p->ahead_max = cpus > 2 ? (unsigned)MIN(cpus - 1, (long)n_threads) : 1;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        for (unsigned i = 0; i < MIN(n_threads, (unsigned)PREFETCH_THREADS); i++) {
                if (pthread_create(&p->threads[i], NULL, prefetch_thread, p) != 0)
                        break;
                p->n_threads++;
        }
        *ret = p;
        return 0;
}

Prefetch *prefetch_free(Prefetch *p)
{
        if (!p)
                return NULL;
        pthread_mutex_lock(&p->lock);
        p->stop = true;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p->queue);
        free(p);
        return NULL;
}

void prefetch_siblings(Prefetch *p, const Tree *t, uint32_t idx)
{
        const NanoManifest *m = t->mnf->m;
        NanoEntry e, dir;
        uint8_t key[36];
        unsigned queued = 0;

        if (!p || p->n_threads == 0)
                return;
        nano_manifest_entry(m, idx, &e);
        nano_manifest_entry(m, e.parent, &dir);
        if (dir.size < 2)
                return;
        /* Keyed by manifest and directory: the same directory seen through two names is one. */
        memcpy(key, t->mnf->id, 32);
        le32_write(key + 32, e.parent);

        pthread_mutex_lock(&p->lock);
        if (!seen_enough_locked(p, XXH3_64bits(key, sizeof key),
                                MIN(MAX(dir.size / PREFETCH_READS_PER, PREFETCH_READS_MIN), PREFETCH_READS_MAX))) {
                pthread_mutex_unlock(&p->lock);
                return;
        }
        for (uint32_t i = 0; i < dir.size && queued < PREFETCH_DIR_MAX && p->n < PREFETCH_QUEUE; i++) {
                NanoEntry c;
                uint32_t ci = dir.first_child + i;
                if (ci == idx)
                        continue;
                nano_manifest_entry(m, ci, &c);
                if (c.type != NANO_ENTRY_REGULAR || c.size == 0 || c.size > PREFETCH_FILE_MAX)
                        continue;
                memcpy(p->queue[(p->head + p->n) % PREFETCH_QUEUE], c.digest, 32);
                p->n++;
                queued++;
        }
        if (queued > 0)
                pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
}

void prefetch_decompress(Prefetch *p, const Node *n)
{
        if (!p || p->n_threads == 0)
                return;
        pthread_mutex_lock(&p->lock);
        if (p->ahead_n < AHEAD_QUEUE) {
                size_t i = (p->ahead_head + p->ahead_n) % AHEAD_QUEUE;
                memcpy(p->ahead[i].digest, n->digest, 32);
                p->ahead[i].ino = n->ino;
                p->ahead[i].size = n->size;
                p->ahead_n++;
                pthread_cond_signal(&p->cond);
        }
        pthread_mutex_unlock(&p->lock);
}
