/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The seccomp deny-list, compiled once with libseccomp and cached as BPF.
 *
 * Compiling with libseccomp costs milliseconds and allocates; loading a program is one system call.
 * So the parent (the monitor) prepares the program from the cache, and the child between fork and
 * exec only calls nano_seccomp_install(). Why each call is denied: doc/security.md. */
#include "config.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "ns-internal.h"
#include "util.h"

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

#define CACHE_MAGIC       "NANOBPF1"
#define CACHE_HEADER_SIZE 24u /* magic, key length, instruction count, checksum */
#define CACHE_KEY_MAX     (256u * 1024u)
#define BPF_INSNS_MAX     4096u /* BPF_MAXINSNS: the kernel's limit for one filter */

/* One denial: when arg >= 0, only calls with (arg & mask) == value. */
typedef struct DenyRule {
        const char *name;
        int error;
        int arg;
        uint64_t mask, value;
} DenyRule;

/* Plain denials, EPERM. Grouped as in doc/security.md. */
static const char *const default_deny[] = {
        /* kernel code */
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "bpf",
        /* the kernel keyring is not namespaced */
        "keyctl",
        "add_key",
        "request_key",
        /* other processes' memory */
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        /* the filesystem view: would undo the read-only host */
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsmount",
        "fsconfig",
        "fspick",
        "mount_setattr",
        /* host-wide state */
        "swapon",
        "swapoff",
        "reboot",
        "settimeofday",
        "stime",
        "clock_settime",
        "clock_settime64",
        "clock_adjtime",
        "clock_adjtime64",
        "adjtimex",
        "acct",
        "quotactl",
        "quotactl_fd",
        "syslog",
        "lookup_dcookie",
        "iopl",
        "ioperm",
        /* kernel attack surface out of proportion to what services need */
        "perf_event_open",
        "userfaultfd",
        "open_by_handle_at",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        /* joining namespaces; creating them is filtered by flag below */
        "setns",
};

static const uint64_t ns_clone_flags[] = {
        CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

/* personality(2) flags that weaken the process: no ASLR, executable data, a mapping at 0. The
 * query personality(0xffffffff) must keep working: no flag uses bit 31, so it is in every mask. */
static const uint64_t bad_personality[] = {
        ADDR_NO_RANDOMIZE,
        READ_IMPLIES_EXEC,
        MMAP_PAGE_ZERO,
        ADDR_COMPAT_LAYOUT,
};
#define PERSONALITY_QUERY_BIT UINT64_C(0x80000000)

/* clone(2) takes its flags first everywhere but on s390, where the stack comes first. */
static int clone_flags_arg(void)
{
        uint32_t a = seccomp_arch_native();
        return a == SCMP_ARCH_S390X || a == SCMP_ARCH_S390 ? 1 : 0;
}

typedef int (*rule_cb)(const DenyRule *r, unsigned line, void *userdata);

/* Calls cb for every rule of profile (NULL: the default list), in a fixed order. line is the profile
 * line of the rule, 0 for built-in ones. */
static int for_each_rule(const NanoSeccompProfile *profile, rule_cb cb, void *userdata)
{
        int r;

        if (!profile || profile->include_default) {
                for (size_t i = 0; i < ELEMENTSOF(default_deny); i++) {
                        r = cb(&(DenyRule){.name = default_deny[i], .error = EPERM, .arg = -1}, 0, userdata);
                        if (r < 0)
                                return r;
                }
                for (size_t i = 0; i < ELEMENTSOF(ns_clone_flags); i++) {
                        uint64_t f = ns_clone_flags[i];
                        r = cb(&(DenyRule){"clone", EPERM, clone_flags_arg(), f, f}, 0, userdata);
                        if (r >= 0)
                                r = cb(&(DenyRule){"unshare", EPERM, 0, f, f}, 0, userdata);
                        if (r < 0)
                                return r;
                }
                r = cb(&(DenyRule){"unshare", EPERM, 0, CLONE_NEWTIME, CLONE_NEWTIME}, 0, userdata);
                if (r < 0)
                        return r;
                /* clone3 passes its flags in memory, where BPF cannot look: refuse it with ENOSYS, so
                 * that libc falls back to clone(), whose flags the rules above see. */
                r = cb(&(DenyRule){.name = "clone3", .error = ENOSYS, .arg = -1}, 0, userdata);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < ELEMENTSOF(bad_personality); i++) {
                        uint64_t f = bad_personality[i];
                        r = cb(&(DenyRule){"personality", EPERM, 0, f | PERSONALITY_QUERY_BIT, f}, 0,
                               userdata);
                        if (r < 0)
                                return r;
                }
        }
        if (profile)
                for (size_t i = 0; i < profile->n_entries; i++) {
                        r = cb(&(DenyRule){.name = profile->entries[i].name, .error = EPERM, .arg = -1},
                               profile->entries[i].line, userdata);
                        if (r < 0)
                                return r;
                }
        return 0;
}

/* ---- The canonical text of the rules: the cache key, and what can be shown to a user. */

typedef struct TextBuf {
        char *buf;
        size_t size, len; /* len counts what would have been written */
} TextBuf;

static int render_rule(const DenyRule *r, unsigned line, void *userdata)
{
        TextBuf *t = userdata;
        size_t room = t->len < t->size ? t->size - t->len : 0;
        int n;

        if (r->arg < 0)
                n = snprintf(room ? t->buf + t->len : NULL, room, "%s errno=%d\n", r->name, r->error);
        else
                n = snprintf(room ? t->buf + t->len : NULL, room, "%s errno=%d a%d&0x%llx==0x%llx\n",
                             r->name, r->error, r->arg, (unsigned long long)r->mask,
                             (unsigned long long)r->value);
        if (n < 0)
                return -EINVAL;
        t->len += (size_t)n;
        return 0;
}

/* snprintf() semantics: returns the full length, writes what fits. */
static int render_rules(const NanoSeccompProfile *profile, char *buf, size_t size, size_t *ret_len)
{
        TextBuf t = {buf, size, 0};
        int r;

        if (size > 0)
                buf[0] = 0;
        r = for_each_rule(profile, render_rule, &t);
        if (r < 0)
                return r;
        *ret_len = t.len;
        return 0;
}

int nano_seccomp_rules_text(const NanoSeccompProfile *profile, char *buf, size_t size, NanoError *e)
{
        size_t len;
        int r;

        r = render_rules(profile, buf, size, &len);
        if (r < 0)
                return nano_error_set(e, r, "render the seccomp rules: %m");
        if (len >= size)
                return nano_error_set(e, ENOBUFS, "render the seccomp rules: %zu bytes needed", len + 1);
        return (int)len;
}

/* ---- Compiling. */

static void seccomp_releasep(scmp_filter_ctx *ctx)
{
        if (*ctx)
                seccomp_release(*ctx);
}

typedef struct CompileState {
        scmp_filter_ctx ctx;
        const NanoSeccompProfile *profile;
        NanoError *e;
} CompileState;

static int add_rule(const DenyRule *r, unsigned line, void *userdata)
{
        CompileState *s = userdata;
        int nr, k;

        nr = seccomp_syscall_resolve_name(r->name);
        if (nr == __NR_SCMP_ERROR) {
                /* A built-in name this libseccomp does not know: nothing to deny by that name here (the
                 * cache key has the libseccomp version, so a newer one recompiles). A user's name must
                 * be known, else their profile says something we cannot do. */
                if (line == 0)
                        return 0;
                if (s->profile && s->profile->origin[0])
                        return nano_error_set(s->e, EINVAL, "'%s' line %u: unknown system call '%s'",
                                              s->profile->origin, line, r->name);
                return nano_error_set(s->e, EINVAL, "seccomp profile line %u: unknown system call '%s'",
                                      line, r->name);
        }

        if (r->arg < 0)
                k = seccomp_rule_add(s->ctx, SCMP_ACT_ERRNO((uint32_t)r->error), nr, 0);
        else
                k = seccomp_rule_add(s->ctx, SCMP_ACT_ERRNO((uint32_t)r->error), nr, 1,
                                     SCMP_CMP((unsigned)r->arg, SCMP_CMP_MASKED_EQ, r->mask, r->value));
        if (k == -EEXIST)
                return 0;
        if (k < 0)
                return nano_error_set(s->e, k, "seccomp rule for '%s': %m", r->name);
        return 0;
}

/* The 32-bit ABIs the native one can also enter the kernel through: without them, a program could
 * make the denied calls through int $0x80 (libseccomp's default for an unknown arch is to kill). */
static const uint32_t *compat_arches(void)
{
        static const uint32_t x86_64[] = {SCMP_ARCH_X86, SCMP_ARCH_X32, 0};
        static const uint32_t aarch64[] = {SCMP_ARCH_ARM, 0};
        static const uint32_t s390x[] = {SCMP_ARCH_S390, 0};
        static const uint32_t none[] = {0};

        switch (seccomp_arch_native()) {
        case SCMP_ARCH_X86_64:
                return x86_64;
        case SCMP_ARCH_AARCH64:
                return aarch64;
        case SCMP_ARCH_S390X:
                return s390x;
        default:
                return none;
        }
}

static int compile(const NanoSeccompProfile *profile, void **ret, size_t *ret_n, NanoError *e)
{
        _cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ void *insns = NULL;
        struct stat st;
        ssize_t n;
        int r;

        ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx)
                return nano_error_set(e, ENOMEM, "seccomp_init: %m");
        /* nano_harden() sets no_new_privs itself: the program must not depend on libseccomp doing it. */
        /* A binary tree of system call numbers rather than a linear list: the kernel runs the program
         * (and, at load, emulates it for every system call number to build its action cache) in
         * log(n) instead of n steps. Loading the default list takes 80 us instead of 190 us here. */
        r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
        if (r < 0)
                return nano_error_set(e, r, "seccomp attribute OPTIMIZE: %m");
        r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
        if (r < 0)
                return nano_error_set(e, r, "seccomp attribute NNP: %m");
        for (const uint32_t *a = compat_arches(); *a; a++) {
                r = seccomp_arch_add(ctx, *a);
                if (r < 0 && r != -EEXIST)
                        return nano_error_set(e, r, "seccomp arch 0x%x: %m", *a);
        }

        r = for_each_rule(profile, add_rule, &(CompileState){ctx, profile, e});
        if (r < 0)
                return r;

        fd = memfd_create("nano-seccomp", MFD_CLOEXEC);
        if (fd < 0)
                return nano_error_set(e, errno, "memfd_create: %m");
        r = seccomp_export_bpf(ctx, fd);
        if (r < 0)
                return nano_error_set(e, r, "seccomp_export_bpf: %m");
        if (fstat(fd, &st) < 0)
                return nano_error_set(e, errno, "fstat the exported seccomp program: %m");
        if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0 ||
            (uint64_t)st.st_size > BPF_INSNS_MAX * sizeof(struct sock_filter))
                return nano_error_set(e, E2BIG, "the seccomp program has a bad size (%lld bytes)",
                                      (long long)st.st_size);
        insns = malloc((size_t)st.st_size);
        if (!insns)
                return nano_error_set(e, ENOMEM, "seccomp program: %m");
        n = pread_full(fd, insns, (size_t)st.st_size, 0);
        if (n < 0)
                return nano_error_set(e, (int)n, "read the exported seccomp program: %m");
        if (n != st.st_size)
                return nano_error_set(e, EIO, "read the exported seccomp program: short read");

        *ret_n = (size_t)st.st_size / sizeof(struct sock_filter);
        *ret = TAKE_PTR(insns);
        return 0;
}

/* ---- The cache. */

static uint64_t fnv1a64(uint64_t h, const void *p, size_t n)
{
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++) {
                h ^= b[i];
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}
#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)

/* The key is everything the program depends on, in full: the file is named by its hash, and holds the
 * key itself, so that a hash collision or a foreign file is a miss, never a wrong filter. */
static int cache_key(const NanoSeccompProfile *profile, char **ret, size_t *ret_len, NanoError *e)
{
        const struct scmp_version *v = seccomp_version();
        _cleanup_free_ char *key = NULL;
        size_t rules_len, size = 16 * 1024; /* the default rules take ~3 KiB: one pass, mostly */
        int head, r;

        for (;;) {
                key = malloc(size);
                if (!key)
                        return nano_error_set(e, ENOMEM, "seccomp cache key: %m");
                head = snprintf(key, 128, "nano-seccomp 1\noptimize 2\narch 0x%08x\nlibseccomp %u.%u.%u\napi %u\n",
                                seccomp_arch_native(), v ? v->major : 0, v ? v->minor : 0, v ? v->micro : 0,
                                seccomp_api_get());
                if (head < 0 || head >= 128)
                        return nano_error_set(e, EINVAL, "seccomp cache key header");
                r = render_rules(profile, key + head, size - (size_t)head, &rules_len);
                if (r < 0)
                        return nano_error_set(e, r, "render the seccomp rules: %m");
                if ((size_t)head + rules_len < size)
                        break;
                /* Too long for the buffer: again, in one of the size it told us. */
                size = (size_t)head + rules_len + 1;
                if (size > CACHE_KEY_MAX)
                        return nano_error_set(e, E2BIG, "the seccomp rules are too long to cache");
                free(key);
                key = NULL;
        }
        *ret_len = (size_t)head + rules_len;
        *ret = TAKE_PTR(key);
        return 0;
}

static int open_cache_dir(const char *path, NanoError *e)
{
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        if (mkdir(path, 0700) < 0 && errno != EEXIST)
                return nano_error_set(e, errno, "create the seccomp cache '%s': %m", path);
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return nano_error_set(e, errno, "open the seccomp cache '%s': %m", path);
        if (fstat(fd, &st) < 0)
                return nano_error_set(e, errno, "stat the seccomp cache '%s': %m", path);
        /* Whoever can write here chooses the filter of every instance. */
        if (st.st_uid != geteuid() || (st.st_mode & 0022))
                return nano_error_set(
                        e, EPERM, "the seccomp cache '%s' may be written by others (owner %u, mode %03o)",
                        path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
        return TAKE_FD(fd);
}

/* Returns 1 and the program on a hit, 0 on a miss (absent, truncated, foreign), -errno on I/O errors. */
static int cache_load(int dirfd, const char *name, const char *key, size_t key_len, void **ret,
                      size_t *ret_n)
{
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ void *insns = NULL;
        uint32_t klen, n;
        struct stat st;
        ssize_t got;

        fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size < CACHE_HEADER_SIZE ||
            (uint64_t)st.st_size >
                    CACHE_HEADER_SIZE + CACHE_KEY_MAX + BPF_INSNS_MAX * sizeof(struct sock_filter))
                return 0;
        data = malloc((size_t)st.st_size);
        if (!data)
                return -ENOMEM;
        got = read_full(fd, data, (size_t)st.st_size);
        if (got < 0)
                return (int)got;
        if (got != st.st_size || memcmp(data, CACHE_MAGIC, 8) != 0)
                return 0;
        klen = le32_read(data + 8);
        n = le32_read(data + 12);
        if (klen != key_len || n == 0 || n > BPF_INSNS_MAX ||
            (uint64_t)st.st_size !=
                    CACHE_HEADER_SIZE + (uint64_t)klen + (uint64_t)n * sizeof(struct sock_filter))
                return 0;
        if (memcmp(data + CACHE_HEADER_SIZE, key, key_len) != 0)
                return 0;
        if (fnv1a64(FNV_OFFSET, data + CACHE_HEADER_SIZE, (size_t)st.st_size - CACHE_HEADER_SIZE) !=
            le64_read(data + 16))
                return 0;

        insns = malloc((size_t)n * sizeof(struct sock_filter));
        if (!insns)
                return -ENOMEM;
        memcpy(insns, data + CACHE_HEADER_SIZE + klen, (size_t)n * sizeof(struct sock_filter));
        *ret = TAKE_PTR(insns);
        *ret_n = n;
        return 1;
}

/* Temp file, then rename: a reader sees the old file or the new one, never half of one. */
static int cache_store(int dirfd, const char *name, const char *key, size_t key_len, const void *insns,
                       size_t n)
{
        uint8_t header[CACHE_HEADER_SIZE];
        char tmp[128];
        uint64_t sum;
        int fd, r;

        r = ns_format(tmp, sizeof tmp, ".%s.%d.tmp", name, (int)getpid());
        if (r < 0)
                return r;
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;

        sum = fnv1a64(FNV_OFFSET, key, key_len);
        sum = fnv1a64(sum, insns, n * sizeof(struct sock_filter));
        memcpy(header, CACHE_MAGIC, 8);
        le32_write(header + 8, (uint32_t)key_len);
        le32_write(header + 12, (uint32_t)n);
        le64_write(header + 16, sum);

        r = write_all(fd, header, sizeof header);
        if (r >= 0)
                r = write_all(fd, key, key_len);
        if (r >= 0)
                r = write_all(fd, insns, n * sizeof(struct sock_filter));
        safe_close(fd);
        if (r >= 0 && renameat(dirfd, tmp, dirfd, name) < 0)
                r = -errno;
        if (r < 0)
                (void)unlinkat(dirfd, tmp, 0);
        return r;
}

int nano_seccomp_prepare(const NanoSeccompProfile *profile, const char *cache_dir, NanoSeccompProgram *ret,
                         NanoError *e)
{
        _cleanup_free_ char *key = NULL;
        _cleanup_free_ void *insns = NULL;
        _cleanup_close_ int dirfd = -EBADF;
        uint64_t start = now_ns();
        char name[32];
        size_t key_len = 0, n = 0;
        int cache_error = 0, r;

        if (!ret)
                return nano_error_set(e, EINVAL, "seccomp: no program to fill");
        /* The parser refuses such a profile; one built by hand would give a filter that denies nothing. */
        if (profile && !profile->include_default && profile->n_entries == 0)
                return nano_error_set(e, EINVAL,
                                      "seccomp profile: denies nothing (no system call, no @default)");
        if (profile && profile->n_entries > NANO_SECCOMP_PROFILE_MAX_ENTRIES)
                return nano_error_set(e, E2BIG, "seccomp profile: more than %u system calls",
                                      NANO_SECCOMP_PROFILE_MAX_ENTRIES);

        if (cache_dir) {
                dirfd = open_cache_dir(cache_dir, e);
                if (dirfd < 0)
                        return dirfd;
                r = cache_key(profile, &key, &key_len, e);
                if (r < 0)
                        return r;
                (void)ns_format(name, sizeof name, "%016llx.bpf",
                                (unsigned long long)fnv1a64(FNV_OFFSET, key, key_len));
                r = cache_load(dirfd, name, key, key_len, &insns, &n);
                if (r > 0) {
                        *ret = (NanoSeccompProgram){
                                .insns = TAKE_PTR(insns),
                                .n = n,
                                .from_cache = true,
                                .prepare_ns = now_ns() - start,
                        };
                        return 0;
                }
                /* An unreadable cache costs a compile, not the start of the instance. */
                if (r < 0)
                        cache_error = r;
        }

        r = compile(profile, &insns, &n, e);
        if (r < 0)
                return r;
        if (dirfd >= 0 && cache_error == 0)
                cache_error = cache_store(dirfd, name, key, key_len, insns, n);

        *ret = (NanoSeccompProgram){
                .insns = TAKE_PTR(insns),
                .n = n,
                .cache_error = cache_error,
                .prepare_ns = now_ns() - start,
        };
        return 0;
}

void nano_seccomp_program_done(NanoSeccompProgram *p)
{
        if (!p)
                return;
        free(p->insns);
        *p = (NanoSeccompProgram){};
}

int nano_seccomp_install(const NanoSeccompProgram *p, NanoError *e)
{
        struct sock_fprog prog;

        if (!p || !p->insns || p->n == 0 || p->n > BPF_INSNS_MAX)
                return nano_error_set(e, EINVAL, "load the seccomp filter: no program");
        prog = (struct sock_fprog){.len = (unsigned short)p->n, .filter = p->insns};

        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0)
                return 0;
        if (errno == ENOSYS && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0)
                return 0;
        if (errno == EACCES)
                return nano_error_set(e, errno, "load the seccomp filter: %m (set no_new_privs first)");
        return nano_error_set(e, errno, "load the seccomp filter: %m");
}

#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif

int nano_seccomp_install_kept(const NanoSeccompProgram *p, int *ret_fd, NanoError *e)
{
        struct sock_fprog prog;
        long fd;

        *ret_fd = -1;
        if (!p || !p->insns || p->n == 0 || p->n > BPF_INSNS_MAX)
                return nano_error_set(e, EINVAL, "load the seccomp filter: no program");
        prog = (struct sock_fprog){.len = (unsigned short)p->n, .filter = p->insns};
        fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        if (fd >= 0) {
                *ret_fd = (int)fd;
                return 0;
        }
        /* EBUSY: a filter above ours has a listener (nano in a nano instance); EINVAL: a kernel
         * before 5.0. The filter without one. */
        return nano_seccomp_install(p, e);
}

/* ---- Probe: load an allow-everything filter in a child that is thrown away. */

void ns_probe_seccomp(NanoProbe *p, bool trial)
{
        struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
        struct sock_fprog prog = {.len = 1, .filter = &allow};
        int status;
        pid_t pid;

        if (!trial) {
                /* PR_GET_SECCOMP fails with EINVAL on a kernel without CONFIG_SECCOMP. */
                p->seccomp = prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0 ? -ENOSYS : 0;
                return;
        }
        pid = fork();
        if (pid < 0) {
                p->seccomp = negative_errno();
                return;
        }
        if (pid == 0) {
                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                        _exit(errno & 0xff);
                if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0 &&
                    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
                        _exit(errno & 0xff);
                _exit(0);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        p->seccomp = negative_errno();
                        return;
                }
        if (!WIFEXITED(status))
                p->seccomp = -ECHILD;
        else if (WEXITSTATUS(status) == EINVAL || WEXITSTATUS(status) == ENOSYS)
                p->seccomp = -ENOSYS; /* no CONFIG_SECCOMP_FILTER */
        else
                p->seccomp = -WEXITSTATUS(status);
}
