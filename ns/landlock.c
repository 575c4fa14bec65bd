/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The kernel's unprivileged self-restrictions: no_new_privs and Landlock.
 *
 * Landlock is what "bare" mode has instead of a mount namespace: the instance sees the host as it
 * is, but may only create, change or remove files beneath its own directories. Reading and executing
 * are not handled, so they stay allowed everywhere. */
#include "config.h"

#include <sys/prctl.h>
#include <sys/syscall.h>

#include "ns-internal.h"

/* Our own definitions: the headers we build with may be older than the kernel we run on. */
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_add_rule
#define __NR_landlock_add_rule 445
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif
#define LL_WRITE_FILE                 (1ULL << 1)
#define LL_REMOVE_DIR                 (1ULL << 4)
#define LL_REMOVE_FILE                (1ULL << 5)
#define LL_MAKE_CHAR                  (1ULL << 6)
#define LL_MAKE_DIR                   (1ULL << 7)
#define LL_MAKE_REG                   (1ULL << 8)
#define LL_MAKE_SOCK                  (1ULL << 9)
#define LL_MAKE_FIFO                  (1ULL << 10)
#define LL_MAKE_BLOCK                 (1ULL << 11)
#define LL_MAKE_SYM                   (1ULL << 12)
#define LL_REFER                      (1ULL << 13) /* ABI 2 */
#define LL_TRUNCATE                   (1ULL << 14) /* ABI 3 */
#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)  /* ABI 6 */
#define LL_SCOPE_SIGNAL               (1ULL << 1)  /* ABI 6 */
#define LL_RULE_PATH_BENEATH          1

/* Our own copies of the kernel's extensible structs, at their newest size we use. */
struct ll_ruleset_attr {
        uint64_t handled_access_fs;
        uint64_t handled_access_net; /* ABI 4 */
        uint64_t scoped;             /* ABI 6 */
};
struct ll_path_beneath_attr {
        uint64_t allowed_access;
        int32_t parent_fd;
} __attribute__((packed));

#define LL_WRITE_V1                                                                                         \
        (LL_WRITE_FILE | LL_REMOVE_DIR | LL_REMOVE_FILE | LL_MAKE_CHAR | LL_MAKE_DIR | LL_MAKE_REG |        \
         LL_MAKE_SOCK | LL_MAKE_FIFO | LL_MAKE_BLOCK | LL_MAKE_SYM)

int nano_no_new_privs(NanoError *e)
{
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return nano_error_set(e, errno, "set no_new_privs: %m");
        return 0;
}

int nano_landlock_abi(void)
{
        long v = syscall(__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);

        if (v < 0)
                return -errno;
        return v == 0 ? -EOPNOTSUPP : (int)MIN(v, (long)INT_MAX);
}

/* Returns 0, or 1 when path does not exist and is optional. */
static int allow_beneath(int ruleset, const char *path, uint64_t access, bool optional, NanoError *e)
{
        _cleanup_close_ int fd = -EBADF;
        struct ll_path_beneath_attr a;

        fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0) {
                if (optional && (errno == ENOENT || errno == EACCES))
                        return 1;
                return nano_error_set(e, errno, "Landlock: open '%s': %m", path);
        }
        a = (struct ll_path_beneath_attr){.allowed_access = access, .parent_fd = fd};
        if (syscall(__NR_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &a, 0) < 0)
                return nano_error_set(e, errno, "Landlock: allow writes beneath '%s': %m", path);
        return 0;
}

int nano_landlock_apply(const NanoLandlockConfig *c, NanoError *e)
{
        /* Device files programs open for writing as a matter of course, and /proc (writes there are
         * checked by the kernel on their own: /proc/self/oom_score_adj, comm…). */
        static const char *const write_only[] = {
                "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                "/dev/tty",  "/dev/ptmx", "/dev/pts",  "/proc",
        };
        static const char *const full_write[] = {"/dev/shm"};
        struct ll_ruleset_attr attr = {};
        _cleanup_close_ int ruleset = -EBADF;
        size_t attr_size;
        uint64_t handled;
        int abi, r;

        abi = nano_landlock_abi();
        if (abi == -ENOSYS)
                return nano_error_set(e, ENOSYS,
                                      "Landlock is not supported by this kernel (needs Linux 5.13)");
        if (abi == -EOPNOTSUPP)
                return nano_error_set(e, EOPNOTSUPP,
                                      "Landlock is disabled on this host (not in the lsm= boot "
                                      "parameter)");
        if (abi < 0)
                return nano_error_set(e, abi, "Landlock: %m");

        /* Best effort by ABI: handle every write-like right this kernel knows. REFER (ABI 2) must be
         * handled to allow renames between our writable dirs at all; TRUNCATE (ABI 3) closes the
         * truncate(2) hole of ABI 1 and 2. */
        handled = LL_WRITE_V1;
        if (abi >= 2)
                handled |= LL_REFER;
        if (abi >= 3)
                handled |= LL_TRUNCATE;
        attr.handled_access_fs = handled;
        attr_size = sizeof attr.handled_access_fs; /* what every ABI accepts */
        if (c && abi >= 6) {
                if (c->scope_signals)
                        attr.scoped |= LL_SCOPE_SIGNAL;
                if (c->scope_abstract_unix)
                        attr.scoped |= LL_SCOPE_ABSTRACT_UNIX_SOCKET;
                if (attr.scoped)
                        attr_size = sizeof attr;
        }

        ruleset = (int)syscall(__NR_landlock_create_ruleset, &attr, attr_size, 0);
        if (ruleset < 0)
                return nano_error_set(e, errno, "Landlock: create the ruleset: %m");

        if (c && c->writable)
                for (const char *const *p = c->writable; *p; p++) {
                        r = allow_beneath(ruleset, *p, handled, false, e);
                        if (r < 0)
                                return r;
                }
        for (size_t i = 0; i < ELEMENTSOF(write_only); i++) {
                r = allow_beneath(ruleset, write_only[i], handled & (LL_WRITE_FILE | LL_TRUNCATE), true, e);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(full_write); i++) {
                r = allow_beneath(ruleset, full_write[i], handled, true, e);
                if (r < 0)
                        return r;
        }

        /* landlock_restrict_self() needs no_new_privs (or CAP_SYS_ADMIN); we want it anyway. */
        r = nano_no_new_privs(e);
        if (r < 0)
                return r;
        if (syscall(__NR_landlock_restrict_self, ruleset, 0) < 0)
                return nano_error_set(e, errno, "Landlock: restrict ourselves: %m");
        return abi;
}
