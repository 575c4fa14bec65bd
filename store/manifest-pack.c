/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Packed manifests: how a manifest may be stored (doc/formats.md, "Packed manifest").
 *
 * The canonical manifest stays what the id names and what readers use; a packed file is only a
 * smaller way to keep it: one zstd frame of the canonical bytes, compressed with the canonical bytes
 * of a base manifest (another version of the same release) as prefix, zstd's "patch-from". Most
 * entries of a new version equal the previous version's, so the frame is mostly matches into the
 * base. Decoding a packed manifest decodes its base first, so chains are bounded
 * (NANO_MANIFEST_PACK_DEPTH_MAX), every level is checked against its id before it is used, and a
 * level's memory is released as soon as the level above it is decoded. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/evp.h>
#include <xxhash.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "macros.h"
#include "manifest.h"

/* Byte offsets of the packed header's fields. */
enum {
        P_MAGIC = 0,
        P_SIZE = 8,
        P_DEPTH = 16,
        P_FLAGS = 20,
        P_BASE = 24,
        P_XXH3 = 56,
};

/* zstd's frame header descriptor (RFC 8878, 3.1.1.1.1): content checksum flag, dictionary id size. */
#define ZSTD_FHD_CHECKSUM_FLAG 0x04u
#define ZSTD_FHD_DICT_ID_MASK  0x03u

static bool all_zero(const uint8_t *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (p[i] != 0)
                        return false;
        return true;
}

static bool expansion_ok(uint64_t size, uint64_t base_size, uint64_t frame_size)
{
        return size <= base_size + frame_size * NANO_MANIFEST_PACK_EXPANSION_MAX;
}

bool nano_manifest_is_packed(const void *buf, size_t size)
{
        return buf && size >= 8 && memcmp(buf, NANO_MANIFEST_PACK_MAGIC, 8) == 0;
}

int nano_manifest_packed_parse(const void *buf, size_t size, NanoManifestPacked *ret)
{
        const uint8_t *p = buf;
        NanoManifestPacked h = {};

        if (!nano_manifest_is_packed(buf, size) || size < NANO_MANIFEST_PACK_HEADER_SIZE + 5)
                return -EBADMSG;
        /* The header has its own checksum: without it a flipped bit in the base id would read as a
         * missing base (and blame the wrong file) rather than as this file's damage. */
        if (le64_read(p + P_XXH3) != XXH3_64bits(p, P_XXH3))
                return -EBADMSG;
        h.size = le64_read(p + P_SIZE);
        h.depth = le32_read(p + P_DEPTH);
        memcpy(h.base, p + P_BASE, 32);
        /* A canonical manifest is at least a header and the root entry, and a multiple of 8. */
        if (h.size < NANO_MANIFEST_HEADER_SIZE + NANO_MANIFEST_ENTRY_SIZE || h.size > NANO_MANIFEST_SIZE_MAX ||
            h.size % 8 != 0)
                return -EBADMSG;
        if (h.depth > NANO_MANIFEST_PACK_DEPTH_MAX || le32_read(p + P_FLAGS) != 0)
                return -EBADMSG;
        if (h.depth == 0 && !all_zero(h.base, 32))
                return -EBADMSG;

        /* One zstd frame, exactly filling the rest of the file, that declares the header's size
         * (what the decoder allocates) and carries a content checksum; no dictionary id, since the
         * base is given as a prefix. */
        h.frame = p + NANO_MANIFEST_PACK_HEADER_SIZE;
        h.frame_size = size - NANO_MANIFEST_PACK_HEADER_SIZE;
        if (le32_read(h.frame) != ZSTD_MAGICNUMBER || !(h.frame[4] & ZSTD_FHD_CHECKSUM_FLAG) ||
            (h.frame[4] & ZSTD_FHD_DICT_ID_MASK) != 0)
                return -EBADMSG;
        if (ZSTD_getFrameContentSize(h.frame, h.frame_size) != h.size)
                return -EBADMSG;
        if (ZSTD_findFrameCompressedSize(h.frame, h.frame_size) != h.frame_size)
                return -EBADMSG;
        /* With a base, the decoder checks the bound once it knows the base's size. */
        if (h.depth == 0 && !expansion_ok(h.size, 0, h.frame_size))
                return -EBADMSG;
        *ret = h;
        return 0;
}

/* The smallest window log that covers n bytes. */
static int window_log(uint64_t n)
{
        int w = 10; /* ZSTD_WINDOWLOG_MIN, which zstd.h shows only to static linking */

        while (w < (int)NANO_MANIFEST_PACK_WINDOW_LOG_MAX && (UINT64_C(1) << w) < n)
                w++;
        return w;
}

static void zstd_cctx_freep(ZSTD_CCtx **c)
{
        ZSTD_freeCCtx(*c);
}

int nano_manifest_pack(const void *data, size_t size, const void *base, size_t base_size,
                       const uint8_t base_id[32], uint32_t base_depth, int level, uint8_t **ret, size_t *ret_size)
{
        _cleanup_(zstd_cctx_freep) ZSTD_CCtx *cctx = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t bound, n;
        uint8_t *shrunk;

        if (!data || !ret || !ret_size || size < NANO_MANIFEST_HEADER_SIZE || size > NANO_MANIFEST_SIZE_MAX ||
            (base && !base_id) || level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
                return -EINVAL;
        if (base) {
                if (base_depth >= NANO_MANIFEST_PACK_DEPTH_MAX)
                        return -EINVAL;
                if ((uint64_t)base_size + size > (UINT64_C(1) << NANO_MANIFEST_PACK_WINDOW_LOG_MAX))
                        return -E2BIG;
        }

        bound = ZSTD_compressBound(size);
        if (bound == 0 || ZSTD_isError(bound) || bound > SIZE_MAX - NANO_MANIFEST_PACK_HEADER_SIZE)
                return -E2BIG;
        buf = malloc(NANO_MANIFEST_PACK_HEADER_SIZE + bound);
        cctx = ZSTD_createCCtx();
        if (!buf || !cctx)
                return -ENOMEM;
        if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)))
                return -EIO;
        /* Patch-from: the window must reach from the end of the manifest back to the start of the
         * base, or the matches into the early part of the base would be lost. Long-distance matching
         * finds those matches at every level; without it whether the base is used at all depends on
         * the level's match finder (on a 3.4 MB manifest, levels 1, 5 and 6 ignored the base and
         * wrote 1.3 MB where the others wrote 60 KB). */
        if (base && (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog,
                                                         window_log((uint64_t)base_size + size))) ||
                     ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_enableLongDistanceMatching, 1)) ||
                     ZSTD_isError(ZSTD_CCtx_refPrefix(cctx, base, base_size))))
                return -ENOMEM;
        n = ZSTD_compress2(cctx, buf + NANO_MANIFEST_PACK_HEADER_SIZE, bound, data, size);
        if (ZSTD_isError(n))
                return ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation ? -ENOMEM : -EIO;
        if (!expansion_ok(size, base ? base_size : 0, n))
                return -E2BIG;

        memset(buf, 0, NANO_MANIFEST_PACK_HEADER_SIZE);
        memcpy(buf + P_MAGIC, NANO_MANIFEST_PACK_MAGIC, 8);
        le64_write(buf + P_SIZE, size);
        le32_write(buf + P_DEPTH, base ? base_depth + 1 : 0);
        if (base)
                memcpy(buf + P_BASE, base_id, 32);
        le64_write(buf + P_XXH3, XXH3_64bits(buf, P_XXH3));

        n += NANO_MANIFEST_PACK_HEADER_SIZE;
        shrunk = realloc(buf, n);
        if (shrunk)
                buf = shrunk;
        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

/* ---- Loading: canonical files are mapped, packed ones decoded through their chain of bases. */

typedef struct Decoder {
        NanoManifestLoadFn load;
        void *userdata;
        ZSTD_DCtx *dctx; /* created on the first packed level, reused by the others */
        NanoManifestChain *chain;
        bool by_checksum; /* packed levels: their frame's content checksum, not their sha256 */
} Decoder;

static int fail(Decoder *d, unsigned level, int r, const char *detail)
{
        d->chain->failed = level;
        d->chain->error = r;
        d->chain->detail = detail;
        return r;
}

static bool digest_is(const void *data, size_t size, const uint8_t id[32])
{
        uint8_t got[32];
        unsigned n = 32;

        return EVP_Digest(data, size, got, &n, EVP_sha256(), NULL) == 1 && memcmp(got, id, 32) == 0;
}

/* Gives the canonical bytes of manifest id, checked against the id, in a mapping the caller
 * munmap()s: the file's own mapping for a canonical file, anonymous memory for a packed one.
 * Recursion is bounded by the depth limit; a cycle of bases only ever meets that limit. */
static int decode(Decoder *d, const uint8_t id[32], unsigned level, void **ret_map, size_t *ret_size)
{
        void *file = NULL, *base = NULL, *out;
        size_t file_size = 0, base_size = 0, n;
        NanoManifestPacked h;
        bool ready;
        int r;

        memcpy(d->chain->ids[level], id, 32);
        d->chain->n = level + 1;
        r = d->load(d->userdata, id, &file, &file_size);
        if (r < 0)
                return fail(d, level, r, r == -ENOENT ? "missing" : r == -ENOMEM ? "out of memory" : "unreadable");

        if (!nano_manifest_is_packed(file, file_size)) {
                if (!digest_is(file, file_size, id)) {
                        (void)munmap(file, file_size);
                        return fail(d, level, -EBADMSG, "content does not match its sha256");
                }
                *ret_map = file;
                *ret_size = file_size;
                return 0;
        }

        r = nano_manifest_packed_parse(file, file_size, &h);
        if (r < 0) {
                (void)munmap(file, file_size);
                return fail(d, level, r, "malformed packed manifest (header or zstd frame header)");
        }
        if (h.depth > 0) {
                if (level >= NANO_MANIFEST_PACK_DEPTH_MAX) {
                        (void)munmap(file, file_size);
                        return fail(d, level, -EBADMSG, "its chain of bases is deeper than 8 (a cycle?)");
                }
                r = decode(d, h.base, level + 1, &base, &base_size);
                if (r < 0) {
                        (void)munmap(file, file_size);
                        return r;
                }
                if ((uint64_t)base_size + h.size > (UINT64_C(1) << NANO_MANIFEST_PACK_WINDOW_LOG_MAX)) {
                        (void)munmap(base, base_size);
                        (void)munmap(file, file_size);
                        return fail(d, level, -EBADMSG, "it and its base exceed the 256 MiB window");
                }
                if (!expansion_ok(h.size, base_size, h.frame_size)) {
                        (void)munmap(base, base_size);
                        (void)munmap(file, file_size);
                        return fail(d, level, -EBADMSG, "it declares more than its base and 1024 times its frame");
                }
        }

        if (d->dctx)
                (void)ZSTD_DCtx_reset(d->dctx, ZSTD_reset_session_and_parameters);
        else
                d->dctx = ZSTD_createDCtx();
        /* h.size is the frame's declared content size, within the format's limits and the expansion
         * bound, and the frame cannot write past it: this is all the memory a frame can make us use. */
        /* Populated: the decompressor writes every page, one fault each otherwise. */
        out = d->dctx ? mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
                      : MAP_FAILED;
        ready = out != MAP_FAILED &&
                !ZSTD_isError(ZSTD_DCtx_setParameter(d->dctx, ZSTD_d_windowLogMax,
                                                     NANO_MANIFEST_PACK_WINDOW_LOG_MAX)) &&
                (!base || !ZSTD_isError(ZSTD_DCtx_refPrefix(d->dctx, base, base_size)));
        n = ready ? ZSTD_decompressDCtx(d->dctx, out, h.size, h.frame, h.frame_size) : 0;
        /* Only the result is kept: the base and the packed file go as soon as they are used. */
        if (base)
                (void)munmap(base, base_size);
        (void)munmap(file, file_size);
        if (!ready || (ZSTD_isError(n) && ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)) {
                if (out != MAP_FAILED)
                        (void)munmap(out, h.size);
                return fail(d, level, -ENOMEM, "out of memory");
        }
        if (ZSTD_isError(n) || n != h.size) {
                (void)munmap(out, h.size);
                return fail(d, level, -EBADMSG,
                            base ? "its zstd frame does not decode against its base" : "its zstd frame does not decode");
        }
        /* zstd checked the frame's content checksum (the format requires one): a flipped bit in
         * the file or a wrong base is caught either way. The sha256 also proves that the file is the
         * manifest its name says, which only matters if something other than nano wrote it. */
        if (!d->by_checksum && !digest_is(out, h.size, id)) {
                (void)munmap(out, h.size);
                return fail(d, level, -EBADMSG, "it decodes to other bytes than its id names");
        }
        /* Read-only like a file mapping: a stray write in the daemon faults instead of changing the
         * tree it serves. */
        if (mprotect(out, h.size, PROT_READ) < 0) {
                r = -errno;
                (void)munmap(out, h.size);
                return fail(d, level, r, "cannot make the decoded manifest read-only");
        }
        *ret_map = out;
        *ret_size = h.size;
        return 0;
}

int nano_manifest_load_flags(NanoManifestLoadFn load, void *userdata, const uint8_t id[32], unsigned flags,
                             NanoManifest **ret, NanoManifestChain *chain)
{
        NanoManifestChain local;
        Decoder d = { .load = load,
                      .userdata = userdata,
                      .chain = chain ?: &local,
                      .by_checksum = flags & NANO_MANIFEST_LOAD_BY_CHECKSUM };
        void *map;
        size_t size;
        int r;

        if (!load || !id || !ret)
                return -EINVAL;
        *d.chain = (NanoManifestChain){};
        r = decode(&d, id, 0, &map, &size);
        ZSTD_freeDCtx(d.dctx);
        if (r < 0)
                /* Only the manifest asked for is "missing": a missing base makes it undecodable. */
                return r == -ENOENT && d.chain->failed > 0 ? -EBADMSG : r;
        /* The bases were only used as bytes (their ids vouch for them); the result is what callers
         * read, so it gets the canonical form's full validation. */
        r = nano_manifest_adopt(map, size, size, ret);
        if (r < 0) {
                (void)munmap(map, size);
                return fail(&d, 0, r, "not a valid manifest");
        }
        return 0;
}

int nano_manifest_load(NanoManifestLoadFn load, void *userdata, const uint8_t id[32], NanoManifest **ret,
                       NanoManifestChain *chain)
{
        return nano_manifest_load_flags(load, userdata, id, 0, ret, chain);
}
