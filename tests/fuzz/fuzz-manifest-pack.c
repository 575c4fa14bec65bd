/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Packed manifests: the input is a little store, files one after another as [32-byte id][u32 size]
 * [bytes], and the first file's manifest is loaded through its chain of bases. Whatever the bytes
 * (lying sizes, truncated frames, cycles of bases, bombs), loading must not crash, leak or use more
 * memory than the bounds allow, and whatever it accepts must be the canonical manifest its id names.
 * The seed corpus comes from tests/unit/test-store-manifest-pack (NANO_MANIFEST_PACK_CORPUS=dir). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/evp.h>

#include "macros.h"
#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                            \
        do {                                                                                                \
                if (!(x))                                                                                   \
                        abort();                                                                            \
        } while (0)

#define FILES_MAX 12

typedef struct Store {
        const uint8_t *ids[FILES_MAX];
        const uint8_t *data[FILES_MAX];
        size_t sizes[FILES_MAX];
        size_t n;
} Store;

static int load(void *userdata, const uint8_t id[32], void **ret_map, size_t *ret_size)
{
        Store *s = userdata;

        for (size_t i = 0; i < s->n; i++) {
                void *map;

                if (memcmp(s->ids[i], id, 32) != 0)
                        continue;
                /* Like a file: at least one byte, mapped, and munmap()'ed by the loader. */
                if (s->sizes[i] == 0)
                        return -EBADMSG;
                map = mmap(NULL, s->sizes[i], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (map == MAP_FAILED)
                        return -ENOMEM;
                memcpy(map, s->data[i], s->sizes[i]);
                *ret_map = map;
                *ret_size = s->sizes[i];
                return 0;
        }
        return -ENOENT;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        NanoManifestChain chain;
        Store s = {};
        const void *canonical;
        uint8_t got[32];
        unsigned n = 32;
        size_t csize;
        int r;

        for (size_t off = 0; s.n < FILES_MAX && size - off >= 36;) {
                uint32_t len = le32_read(data + off + 32);

                if (len > size - off - 36)
                        break;
                s.ids[s.n] = data + off;
                s.data[s.n] = data + off + 36;
                s.sizes[s.n] = len;
                s.n++;
                off += 36 + (size_t)len;
        }
        if (s.n == 0)
                return 0;

        r = nano_manifest_load(load, &s, s.ids[0], &m, &chain);
        CHECK(chain.n >= 1 && chain.n <= NANO_MANIFEST_PACK_DEPTH_MAX + 1);
        CHECK(memcmp(chain.ids[0], s.ids[0], 32) == 0);
        if (r < 0) {
                CHECK(!m);
                CHECK(r == -EBADMSG || r == -ENOENT || r == -ENOMEM);
                CHECK(chain.failed < chain.n && chain.detail);
                CHECK(r != -ENOENT || chain.failed == 0);
                return 0;
        }
        /* Accepted: the canonical bytes of the id, a valid manifest. */
        canonical = nano_manifest_data(m, &csize);
        CHECK(EVP_Digest(canonical, csize, got, &n, EVP_sha256(), NULL) == 1);
        CHECK(memcmp(got, s.ids[0], 32) == 0);
        CHECK(nano_manifest_count(m) >= 1);
        return 0;
}
