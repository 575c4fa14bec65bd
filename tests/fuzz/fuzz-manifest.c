/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Manifest parser: whatever the bytes, parsing must not crash or leak, and whatever it accepts must
 * be self-consistent (every child found by lookup at its own index, every path resolving back to its
 * entry) and canonical (rebuilding the tree through the builder gives the same bytes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macros.h"
#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborting is how a fuzz target reports a broken invariant. */
#define CHECK(x)                                                                                            \
        do {                                                                                                \
                if (!(x))                                                                                   \
                        abort();                                                                            \
        } while (0)

static void check_canonical(const NanoManifest *m, const uint8_t *data, size_t size)
{
        _cleanup_(nano_manifest_builder_freep) NanoManifestBuilder *b = NULL;
        _cleanup_free_ uint8_t *again = NULL;
        char path[NANO_PATH_MAX], target[NANO_SYMLINK_MAX + 1];
        uint8_t digest[32];
        size_t again_size;

        if (nano_manifest_builder_new(&b) < 0)
                return;
        for (uint32_t i = 0; i < nano_manifest_count(m); i++) {
                NanoEntry e;

                nano_manifest_entry(m, i, &e);
                /* The parser takes any depth, the builder does not: such trees are skipped. */
                if (nano_manifest_path(m, i, path, sizeof(path)) < 0)
                        return;
                if (e.type == NANO_ENTRY_SYMLINK) {
                        memcpy(target, e.target, e.size);
                        target[e.size] = '\0';
                        e.target = target;
                }
                if (nano_manifest_builder_add(b, path, &e) < 0)
                        return;
        }
        CHECK(nano_manifest_builder_count(b) == nano_manifest_count(m));
        CHECK(nano_manifest_builder_finish(b, &again, &again_size, digest) == 0);
        CHECK(again_size == size);
        CHECK(memcmp(again, data, size) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        char path[NANO_PATH_MAX];
        size_t data_size;
        uint32_t n;

        if (nano_manifest_parse(data, size, &m) < 0)
                return 0;

        n = nano_manifest_count(m);
        CHECK(n >= 1);
        CHECK(nano_manifest_data(m, &data_size) == data && data_size == size);

        for (uint32_t i = 0; i < n; i++) {
                uint32_t found;
                NanoEntry e;

                nano_manifest_entry(m, i, &e);
                CHECK(e.type >= NANO_ENTRY_REGULAR && e.type <= NANO_ENTRY_SYMLINK);
                CHECK(e.mode <= 0777);
                CHECK(e.mtime_nsec < 1000000000);
                if (i == 0)
                        CHECK(e.type == NANO_ENTRY_DIRECTORY && e.parent == 0 && e.name_len == 0);
                else {
                        CHECK(e.parent < i);
                        CHECK(nano_manifest_lookup(m, e.parent, e.name, e.name_len, &found) == 0);
                        CHECK(found == i);
                }

                switch (e.type) {
                case NANO_ENTRY_DIRECTORY:
                        for (uint64_t c = e.first_child; c < e.first_child + e.size; c++) {
                                NanoEntry ce;

                                CHECK(c < n);
                                nano_manifest_entry(m, (uint32_t)c, &ce);
                                CHECK(ce.parent == i);
                        }
                        break;
                case NANO_ENTRY_SYMLINK:
                        CHECK(e.size >= 1 && e.size <= NANO_SYMLINK_MAX);
                        CHECK(!memchr(e.target, '\0', e.size));
                        break;
                default:
                        CHECK(nano_manifest_lookup(m, i, "x", 1, &found) == -ENOTDIR);
                }

                if (nano_manifest_path(m, i, path, sizeof(path)) == 0) {
                        CHECK(nano_manifest_resolve(m, path, &found) == 0);
                        CHECK(found == i);
                }
        }
        CHECK(nano_manifest_lookup(m, n, "x", 1, NULL) == -EINVAL);

        check_canonical(m, data, size);
        return 0;
}
