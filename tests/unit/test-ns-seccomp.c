/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ns/seccomp*.c: the --seccomp profile parser (good, bad, limits), the default deny-list compiled to
 * BPF, the compile-once cache, and the filter loaded in forked children: each denied call gives
 * EPERM (clone3: ENOSYS), what must keep working does. */

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "config.h"
#include "../../ns/ns.h"
#include "util.h"

#include "test-tmpdir.h"


static int group_setup(void **state)
{
        return tmpdir_create("test-ns-seccomp");
}

static NanoSeccompProfile *profile_new(void)
{
        NanoSeccompProfile *p = calloc(1, sizeof *p);
        assert_non_null(p);
        return p;
}

/* ---- The parser. */

static void test_parse_good(void **state)
{
        static const char text[] = "# a profile\n"
                                   "\n"
                                   "keyctl\n"
                                   "   ptrace\t # with a comment\n"
                                   "@default\n"
                                   "bpf"; /* no final newline */
        _cleanup_free_ NanoSeccompProfile *p = profile_new();
        NanoError e = {};

        assert_int_equal(nano_seccomp_profile_parse(text, strlen(text), "p.txt", p, &e), 0);
        assert_int_equal(e.error, 0);
        assert_true(p->include_default);
        assert_int_equal(p->n_entries, 3);
        assert_string_equal(p->entries[0].name, "keyctl");
        assert_int_equal(p->entries[0].line, 3);
        assert_string_equal(p->entries[1].name, "ptrace");
        assert_int_equal(p->entries[1].line, 4);
        assert_string_equal(p->entries[2].name, "bpf");
        assert_int_equal(p->entries[2].line, 6);
        assert_string_equal(p->origin, "p.txt");

        /* Only @default is a profile too. */
        assert_int_equal(nano_seccomp_profile_parse("@default\n", 9, NULL, p, NULL), 0);
        assert_true(p->include_default);
        assert_int_equal(p->n_entries, 0);
}

static void test_parse_bad(void **state)
{
        static const struct {
                const char *text;
                size_t len; /* 0: strlen */
                int error;
                const char *message;
        } cases[] = {
                {"keyctl ptrace\n", 0, EINVAL,
                 "'p' line 1: expected one system call name per line, got 'keyctl "
                 "ptrace'"},
                {"keyctl\nPtrace\n", 0, EINVAL, "'p' line 2: not a system call name"},
                {"1abc\n", 0, EINVAL, "'p' line 1: not a system call name"},
                {"open-at\n", 0, EINVAL, "'p' line 1: not a system call name"},
                {"keyctl\n\nkeyctl\n", 0, EINVAL, "'p' line 3: already listed on line 1: 'keyctl'"},
                {"@default\n@default\n", 0, EINVAL, "'p' line 2: @default given twice"},
                {"@defaults\n", 0, EINVAL, "'p' line 1: unknown directive"},
                {"keyctl\r\n", 0, EINVAL, "'p' line 1: carriage return"},
                {"key\0ctl\n", 8, EINVAL, "'p' line 1: control or non-ASCII byte"},
                {"keyctl\n\xc3\xa9\n", 0, EINVAL, "'p' line 2: control or non-ASCII byte"},
                {"", 0, EINVAL, "'p': denies nothing"},
                {"# nothing\n\n   \n", 0, EINVAL, "'p': denies nothing"},
                {"a234567890123456789012345678901234567890123456789012345678901234\n", 0, ENAMETOOLONG,
                 "'p' line 1: system call name longer than 63 bytes"},
        };

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                _cleanup_free_ NanoSeccompProfile *p = profile_new();
                size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);
                NanoError e = {};
                int r;

                r = nano_seccomp_profile_parse(cases[i].text, len, "p", p, &e);
                if (r != -cases[i].error ||
                    strncmp(e.message, cases[i].message, strlen(cases[i].message)) != 0)
                        fail_msg("case %zu: got %d '%s', want %d '%s'", i, r, e.message, -cases[i].error,
                                 cases[i].message);
                assert_int_equal(e.error, cases[i].error);
                assert_int_equal(p->n_entries, 0);
                assert_false(p->include_default);
                assert_null(strchr(e.message, '\n'));
        }
}

static void test_parse_limits(void **state)
{
        _cleanup_free_ NanoSeccompProfile *p = profile_new();
        _cleanup_free_ char *text = malloc(NANO_SECCOMP_PROFILE_MAX_SIZE + 2);
        char line[NANO_SECCOMP_PROFILE_MAX_LINE + 2];
        NanoError e = {};
        size_t len = 0;

        assert_non_null(text);

        /* 512 names are fine, the 513th is not. */
        for (unsigned i = 0; i < NANO_SECCOMP_PROFILE_MAX_ENTRIES; i++)
                len += (size_t)sprintf(text + len, "s%u\n", i);
        assert_int_equal(nano_seccomp_profile_parse(text, len, "p", p, &e), 0);
        assert_int_equal(p->n_entries, NANO_SECCOMP_PROFILE_MAX_ENTRIES);
        len += (size_t)sprintf(text + len, "one_more\n");
        assert_int_equal(nano_seccomp_profile_parse(text, len, "p", p, &e), -E2BIG);
        assert_string_equal(e.message, "'p' line 513: more than 512 system calls");

        /* A line of 256 bytes (a long comment) is fine, 257 is not. */
        memset(line, '#', NANO_SECCOMP_PROFILE_MAX_LINE);
        memcpy(line + NANO_SECCOMP_PROFILE_MAX_LINE, "\n", 2);
        len = (size_t)sprintf(text, "keyctl\n%s", line);
        e = (NanoError){};
        assert_int_equal(nano_seccomp_profile_parse(text, len, "p", p, &e), 0);
        len = (size_t)sprintf(text, "keyctl\n#%s", line);
        assert_int_equal(nano_seccomp_profile_parse(text, len, "p", p, &e), -E2BIG);
        assert_string_equal(e.message, "'p' line 2: line longer than 256 bytes");

        /* Size: 64 KiB of comments and blank lines is fine, a byte more is not. */
        memset(text, '\n', NANO_SECCOMP_PROFILE_MAX_SIZE + 1);
        memcpy(text, "keyctl\n", 7);
        e = (NanoError){};
        assert_int_equal(nano_seccomp_profile_parse(text, NANO_SECCOMP_PROFILE_MAX_SIZE, NULL, p, &e), 0);
        assert_int_equal(nano_seccomp_profile_parse(text, NANO_SECCOMP_PROFILE_MAX_SIZE + 1, NULL, p, &e),
                         -EFBIG);
        assert_string_equal(e.message, "seccomp profile: larger than 65536 bytes");
}

/* ---- Compiling and the cache. */

#if HAVE_SECCOMP

static void test_default_list(void **state)
{
        NanoSeccompProgram prog = {};
        NanoError e = {};
        char text[16384];
        int n;

        assert_int_equal(nano_seccomp_prepare(NULL, NULL, &prog, &e), 0);
        assert_non_null(prog.insns);
        assert_true(prog.n > 10 && prog.n <= 4096);
        assert_false(prog.from_cache);
        print_message("# seccomp: default deny-list: %zu BPF instructions, compiled in %llu us\n", prog.n,
                      (unsigned long long)prog.prepare_ns / 1000);
        nano_seccomp_program_done(&prog);
        assert_null(prog.insns);

        n = nano_seccomp_rules_text(NULL, text, sizeof text, &e);
        assert_true(n > 0);
        assert_non_null(strstr(text, "\nkeyctl errno=1\n"));
        assert_non_null(strstr(text, "\nclone errno=1 a0&0x10000000==0x10000000\n")); /* CLONE_NEWUSER */
        assert_non_null(strstr(text, "\nunshare errno=1 a0&0x20000==0x20000\n"));     /* CLONE_NEWNS */
        assert_non_null(strstr(text, "\nclone3 errno=38\n"));                         /* ENOSYS */
        assert_non_null(
                strstr(text, "\npersonality errno=1 a0&0x80040000==0x40000\n")); /* ADDR_NO_RANDOMIZE */
        assert_int_equal(nano_seccomp_rules_text(NULL, text, 16, &e), -ENOBUFS);
}

static void test_unknown_syscall(void **state)
{
        static const char text[] = "keyctl\nno_such_call\n";
        _cleanup_free_ NanoSeccompProfile *p = profile_new();
        NanoSeccompProgram prog = {};
        NanoError e = {};

        assert_int_equal(nano_seccomp_profile_parse(text, strlen(text), "my.profile", p, &e), 0);
        assert_int_equal(nano_seccomp_prepare(p, NULL, &prog, &e), -EINVAL);
        assert_string_equal(e.message, "'my.profile' line 2: unknown system call 'no_such_call'");
        assert_null(prog.insns);
}

static size_t count_cache_files(const char *dir, char *ret_path, size_t size)
{
        char cmd[512];
        size_t n = 0;
        FILE *f;

        snprintf(cmd, sizeof cmd, "ls '%s'", dir);
        f = popen(cmd, "r");
        assert_non_null(f);
        while (fgets(cmd, sizeof cmd, f))
                if (strstr(cmd, ".bpf")) {
                        cmd[strcspn(cmd, "\n")] = 0;
                        if (ret_path)
                                snprintf(ret_path, size, "%s/%s", dir, cmd);
                        n++;
                }
        pclose(f);
        return n;
}

static void test_cache(void **state)
{
        static const char text[] = "@default\ngetppid\n";
        _cleanup_free_ NanoSeccompProfile *p = profile_new();
        NanoSeccompProgram a = {}, b = {}, c = {}, d = {};
        char cache[PATH_MAX], file[PATH_MAX];
        struct stat st1, st2;
        uint64_t compile_ns = 0, load_ns = 0;
        NanoError e = {};
        int fd;

        snprintf(cache, sizeof cache, "%s/cache", tmpdir);

        /* A miss compiles and stores... */
        assert_int_equal(nano_seccomp_prepare(NULL, cache, &a, &e), 0);
        assert_false(a.from_cache);
        assert_int_equal(a.cache_error, 0);
        assert_int_equal(count_cache_files(cache, file, sizeof file), 1);
        assert_int_equal(stat(file, &st1), 0);
        assert_int_equal(st1.st_mode & 07777, 0600);

        /* ...a hit compiles nothing and rewrites nothing, and gives the same program. */
        for (int i = 0; i < 5; i++) {
                nano_seccomp_program_done(&b);
                assert_int_equal(nano_seccomp_prepare(NULL, cache, &b, &e), 0);
                assert_true(b.from_cache);
                load_ns += b.prepare_ns;
        }
        assert_int_equal(b.n, a.n);
        assert_memory_equal(b.insns, a.insns, a.n * 8);
        assert_int_equal(stat(file, &st2), 0);
        assert_int_equal(st2.st_ino, st1.st_ino);
        assert_int_equal(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
        assert_int_equal(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec);

        /* Another profile is another file. */
        assert_int_equal(nano_seccomp_profile_parse(text, strlen(text), NULL, p, &e), 0);
        assert_int_equal(nano_seccomp_prepare(p, cache, &c, &e), 0);
        assert_false(c.from_cache);
        assert_true(c.n > a.n);
        assert_int_equal(count_cache_files(cache, NULL, 0), 2);

        /* A flipped byte in the program is a miss (recompiled and rewritten), never a wrong filter. */
        fd = open(file, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "\xff", 1, st1.st_size - 3), 1);
        close(fd);
        assert_int_equal(nano_seccomp_prepare(NULL, cache, &d, &e), 0);
        assert_false(d.from_cache);
        assert_memory_equal(d.insns, a.insns, a.n * 8);
        nano_seccomp_program_done(&d);
        /* And a truncated one. */
        assert_int_equal(truncate(file, st1.st_size / 2), 0);
        assert_int_equal(nano_seccomp_prepare(NULL, cache, &d, &e), 0);
        assert_false(d.from_cache);
        nano_seccomp_program_done(&d);
        assert_int_equal(nano_seccomp_prepare(NULL, cache, &d, &e), 0);
        assert_true(d.from_cache);

        /* Timings, for doc/security.md. */
        for (int i = 0; i < 5; i++) {
                NanoSeccompProgram x = {};
                assert_int_equal(nano_seccomp_prepare(NULL, NULL, &x, &e), 0);
                compile_ns += x.prepare_ns;
                nano_seccomp_program_done(&x);
        }
        print_message(
                "# seccomp: default list compiled in %llu us, read from the cache in %llu us (means of 5)\n",
                (unsigned long long)compile_ns / 5000, (unsigned long long)load_ns / 5000);

        nano_seccomp_program_done(&a);
        nano_seccomp_program_done(&b);
        nano_seccomp_program_done(&c);
        nano_seccomp_program_done(&d);
}

static void test_cache_unsafe_dir(void **state)
{
        NanoSeccompProgram prog = {};
        char cache[PATH_MAX];
        NanoError e = {};

        snprintf(cache, sizeof cache, "%s/open-cache", tmpdir);
        assert_int_equal(mkdir(cache, 0700), 0);
        assert_int_equal(chmod(cache, 0777), 0);
        assert_int_equal(nano_seccomp_prepare(NULL, cache, &prog, &e), -EPERM);
        assert_non_null(strstr(e.message, "may be written by others"));
        assert_null(prog.insns);
}

/* ---- Loading, in children. */

/* Forks; the child sets no_new_privs, loads prog and runs fn, whose return is its exit status. */
static int in_filtered_child(const NanoSeccompProgram *prog, int (*fn)(void))
{
        int status;
        pid_t pid;

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                NanoError e = {};
                /* prctl() here, not nano_no_new_privs(): a build may have seccomp without namespaces. */
                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || nano_seccomp_install(prog, &e) < 0) {
                        fprintf(stderr, "# child: %s\n", e.message);
                        _exit(250);
                }
                _exit(fn());
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

#define EXPECT(call, want_errno)                                                                            \
        do {                                                                                                \
                errno = 0;                                                                                  \
                long _r = (long)(call);                                                                     \
                if (_r != -1 || errno != (want_errno)) {                                                    \
                        fprintf(stderr, "# line %d: %s: returned %ld, errno %d, want errno %d\n", __LINE__, \
                                #call, _r, errno, (want_errno));                                            \
                        return 1;                                                                           \
                }                                                                                           \
        } while (0)
#define EXPECT_OK(call)                                                                                     \
        do {                                                                                                \
                errno = 0;                                                                                  \
                long _r = (long)(call);                                                                     \
                if (_r == -1) {                                                                             \
                        fprintf(stderr, "# line %d: %s: errno %d\n", __LINE__, #call, errno);               \
                        return 1;                                                                           \
                }                                                                                           \
        } while (0)

static int keyctl_errno(void)
{
        /* keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) */
        return syscall(SYS_keyctl, 0, -3, 0) < 0 ? errno : 0;
}

static void *thread_main(void *arg)
{
        return arg;
}

static int denied_calls(void)
{
        pthread_t t;
        void *res;
        pid_t pid;
        int status;

        EXPECT(syscall(SYS_keyctl, 0, -3, 0), EPERM);
        EXPECT(syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0), EPERM);
        EXPECT(syscall(SYS_bpf, 0, NULL, 0), EPERM);
        EXPECT(syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0), EPERM);
        EXPECT(mount("none", "/", "tmpfs", 0, NULL), EPERM);
        EXPECT(umount2("/", MNT_DETACH), EPERM);
        EXPECT(syscall(SYS_pivot_root, "/", "/"), EPERM);
        EXPECT(syscall(SYS_userfaultfd, 0), EPERM);
        EXPECT(syscall(SYS_setns, -1, 0), EPERM); /* EPERM, not EBADF: refused before looking */
        EXPECT(unshare(CLONE_NEWUSER), EPERM);
        EXPECT(unshare(CLONE_NEWNS | CLONE_FILES), EPERM);
        EXPECT(syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0), EPERM);
        EXPECT(syscall(SYS_clone3, NULL, 0), ENOSYS);
        EXPECT(personality(PER_LINUX | ADDR_NO_RANDOMIZE), EPERM);
        EXPECT(personality(READ_IMPLIES_EXEC), EPERM);
        EXPECT(syscall(SYS_settimeofday, NULL, NULL), EPERM);
        EXPECT(syscall(SYS_init_module, NULL, 0, ""), EPERM);

        /* What services need keeps working: */
        EXPECT_OK(personality(0xffffffff));
        EXPECT_OK(personality(PER_LINUX));
        EXPECT_OK(unshare(CLONE_FILES));
        EXPECT_OK(getpid());
        pid = fork(); /* clone() without namespace flags */
        EXPECT_OK(pid);
        if (pid == 0)
                _exit(7);
        EXPECT_OK(waitpid(pid, &status, 0));
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 7)
                return 2;
        /* glibc tries clone3 first for threads; ENOSYS sends it back to clone(). */
        if (pthread_create(&t, NULL, thread_main, (void *)0x42) != 0 || pthread_join(t, &res) != 0 ||
            res != (void *)0x42)
                return 3;
        return 0;
}

static int only_getppid_denied(void)
{
        EXPECT(syscall(SYS_getppid), EPERM);
        /* keyctl is not in this profile: whatever it answers, it is not our EPERM. */
        if (keyctl_errno() == EPERM)
                return 1;
        return 0;
}

static void test_install_default(void **state)
{
        NanoSeccompProgram prog = {};
        NanoError e = {};

        assert_int_equal(nano_seccomp_prepare(NULL, NULL, &prog, &e), 0);
        /* The brief's check, as the runtime will see it: the denied call's errno as exit status. */
        assert_int_equal(in_filtered_child(&prog, keyctl_errno), EPERM);
        assert_int_equal(in_filtered_child(&prog, denied_calls), 0);
        nano_seccomp_program_done(&prog);
}

static void test_install_profile(void **state)
{
        static const char text[] = "getppid\n";
        _cleanup_free_ NanoSeccompProfile *p = profile_new();
        NanoSeccompProgram prog = {};
        NanoError e = {};

        assert_int_equal(nano_seccomp_profile_parse(text, strlen(text), NULL, p, &e), 0);
        assert_int_equal(nano_seccomp_prepare(p, NULL, &prog, &e), 0);
        assert_int_equal(in_filtered_child(&prog, only_getppid_denied), 0);
        nano_seccomp_program_done(&prog);
}

static void test_install_needs_nnp(void **state)
{
        NanoSeccompProgram prog = {};
        NanoError e = {};
        int status;
        pid_t pid;

        if (geteuid() == 0) {
                /* Not a skip (cmocka 1.1.5 prints "not ok # SKIP", which meson counts as a failure): with
                 * CAP_SYS_ADMIN a filter loads without no_new_privs, so there is nothing to check. */
                print_message(
                        "# as root: CAP_SYS_ADMIN loads filters without no_new_privs, nothing to check\n");
                return;
        }
        assert_int_equal(nano_seccomp_prepare(NULL, NULL, &prog, &e), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                NanoError ce = {};
                int r = nano_seccomp_install(&prog, &ce);
                _exit(r == -EACCES && strstr(ce.message, "no_new_privs") ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        nano_seccomp_program_done(&prog);
}

static void test_install_time(void **state)
{
        NanoSeccompProgram prog = {};
        NanoError e = {};
        uint64_t ns = 0;
        int fds[2], status;
        pid_t pid;

        assert_int_equal(nano_seccomp_prepare(NULL, NULL, &prog, &e), 0);
        assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                uint64_t t0;
                (void)prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                t0 = now_ns();
                if (nano_seccomp_install(&prog, NULL) < 0)
                        _exit(1);
                t0 = now_ns() - t0;
                (void)!write(fds[1], &t0, sizeof t0);
                _exit(0);
        }
        close(fds[1]);
        assert_int_equal(read(fds[0], &ns, sizeof ns), sizeof ns);
        close(fds[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_int_equal(WEXITSTATUS(status), 0);
        print_message("# seccomp: loading the program into the kernel took %llu us\n",
                      (unsigned long long)ns / 1000);
        nano_seccomp_program_done(&prog);
}

#else /* !HAVE_SECCOMP */

static void test_stub(void **state)
{
        NanoSeccompProgram prog = {};
        NanoError e = {};

        assert_int_equal(nano_seccomp_prepare(NULL, NULL, &prog, &e), -EOPNOTSUPP);
        assert_string_equal(e.message, "nano was built without seccomp support");
        assert_int_equal(nano_seccomp_install(&prog, NULL), -EOPNOTSUPP);
}

#endif

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_good),
                cmocka_unit_test(test_parse_bad),
                cmocka_unit_test(test_parse_limits),
#if HAVE_SECCOMP
                cmocka_unit_test(test_default_list),
                cmocka_unit_test(test_unknown_syscall),
                cmocka_unit_test(test_cache),
                cmocka_unit_test(test_cache_unsafe_dir),
                cmocka_unit_test(test_install_default),
                cmocka_unit_test(test_install_profile),
                cmocka_unit_test(test_install_needs_nnp),
                cmocka_unit_test(test_install_time),
#else
                cmocka_unit_test(test_stub),
#endif
        };

        return cmocka_run_group_tests(tests, group_setup, tmpdir_teardown);
}
