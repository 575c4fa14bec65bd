/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The few libcrypto functions the store calls, for the `nano` executable only: each opens libcrypto
 * with dlopen() on its first call and forwards to it.
 *
 * Why: libcrypto is 4.7 MB with 17 000 relocations and constructors, about 1 ms of loading for every
 * `nano` command, and only hashing needs it (importing, fsck, a manifest's digest, the FUSE daemon's
 * cache keys): `nano run`, `ps` or `stop` never do. store/ calls OpenSSL as usual and libnano.so links
 * libcrypto as usual; only the `nano` binary is linked with these definitions instead of -lcrypto
 * (cli/meson.build). They are hidden, so that the libcrypto we open, whose own calls to these names
 * would otherwise bind to the executable's definitions first, never sees them.
 *
 * A libcrypto that cannot be opened is what a missing shared library always was, only later: the
 * program stops with the loader's message (exit 127, as ld.so does), never hashes to garbage. */
#include <dlfcn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define LIBCRYPTO_SONAME "libcrypto.so.3"

#define CRYPTO_SYMBOLS(X)                                                                               \
        X(EVP_Digest) X(EVP_DigestFinal_ex) X(EVP_DigestInit_ex) X(EVP_DigestUpdate) X(EVP_MD_CTX_free) \
        X(EVP_MD_CTX_new) X(EVP_sha256) X(RAND_bytes)

#define DECLARE(f) __typeof__(f) *f;
static struct {
        CRYPTO_SYMBOLS(DECLARE)
} lc;
#undef DECLARE
static pthread_once_t lc_once = PTHREAD_ONCE_INIT;

_Noreturn static void lc_die(const char *what)
{
        char msg[512];
        int n = snprintf(msg, sizeof msg, "nano: cannot load %s, which hashing needs: %s\n", LIBCRYPTO_SONAME,
                         what);

        /* Possibly from a FUSE worker thread: write(2), not stdio, and no atexit handlers. */
        if (n > 0)
                (void)!write(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
        _exit(127);
}

static void lc_load(void)
{
        void *h = dlopen(LIBCRYPTO_SONAME, RTLD_NOW | RTLD_LOCAL);

        if (!h)
                lc_die(dlerror());
#define LOAD(f)                                                                                          \
        if (!(lc.f = (__typeof__(f) *)dlsym(h, #f)))                                                     \
                lc_die("no symbol '" #f "'");
        CRYPTO_SYMBOLS(LOAD)
#undef LOAD
}

#define LC(f) (pthread_once(&lc_once, lc_load), lc.f)
#define HIDDEN __attribute__((visibility("hidden")))

HIDDEN int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size, const EVP_MD *type,
                      ENGINE *impl)
{
        return LC(EVP_Digest)(data, count, md, size, type, impl);
}

HIDDEN int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl)
{
        return LC(EVP_DigestInit_ex)(ctx, type, impl);
}

HIDDEN int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt)
{
        return LC(EVP_DigestUpdate)(ctx, d, cnt);
}

HIDDEN int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s)
{
        return LC(EVP_DigestFinal_ex)(ctx, md, s);
}

HIDDEN EVP_MD_CTX *EVP_MD_CTX_new(void)
{
        return LC(EVP_MD_CTX_new)();
}

HIDDEN void EVP_MD_CTX_free(EVP_MD_CTX *ctx)
{
        /* Nothing to free if nothing was ever made: no reason to load the library for that. */
        if (ctx)
                LC(EVP_MD_CTX_free)(ctx);
}

HIDDEN const EVP_MD *EVP_sha256(void)
{
        return LC(EVP_sha256)();
}

HIDDEN int RAND_bytes(unsigned char *buf, int num)
{
        return LC(RAND_bytes)(buf, num);
}
