/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ns/harden.c, caps.c, landlock.c, rlimit.c, in forked children: after nano_harden() no capability is
 * left (not even after execve() as uid 0), no_new_privs is set, the seccomp filter denies keyctl with
 * EPERM (the errno comes back as the exit status); rlimits parse and apply; Landlock lets a child
 * write only beneath its writable dirs (EACCES elsewhere) and, from ABI 6, not signal outside. Works
 * as root (CI) and as a normal user. */

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
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
        return tmpdir_create("test-ns-harden");
}

#define CHECK(cond)                                                                                         \
        do {                                                                                                \
                if (!(cond)) {                                                                              \
                        fprintf(stderr, "# line %d: check failed: %s (errno: %m)\n", __LINE__, #cond);      \
                        _exit(1);                                                                           \
                }                                                                                           \
        } while (0)
#define CHECK_ERRNO(call, want)                                                                             \
        do {                                                                                                \
                errno = 0;                                                                                  \
                long _r = (long)(call);                                                                     \
                if (_r >= 0 || errno != (want)) {                                                           \
                        fprintf(stderr, "# line %d: %s: returned %ld, errno %d, want errno %d\n", __LINE__, \
                                #call, _r, errno, (want));                                                  \
                        _exit(1);                                                                           \
                }                                                                                           \
        } while (0)

static int wait_status(pid_t pid)
{
        int status;

        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status))
                fail_msg("child killed by signal %d", WTERMSIG(status));
        return WEXITSTATUS(status);
}

/* "CapEff:\t0000000000000000" → the hex value. */
_unused_ static uint64_t status_field(const char *status, const char *key)
{
        const char *p = strstr(status, key);

        if (!p)
                return UINT64_MAX;
        return strtoull(p + strlen(key), NULL, 16);
}

#if HAVE_LIBCAP && HAVE_NAMESPACES

static void test_harden_then_exec(void **state)
{
        NanoSeccompProgram prog = {};
        NanoError e = {};
        char status[8192] = "";
        int fds[2];
        ssize_t n;
        pid_t pid;
        bool had_setpcap = prctl(PR_CAPBSET_READ, 8 /* CAP_SETPCAP */) == 1 && geteuid() == 0;

        if (HAVE_SECCOMP)
                assert_int_equal(nano_seccomp_prepare(NULL, NULL, &prog, &e), 0);

        /* The child hardens, then execs cat(1) on its own status: what survives an execve() is what
         * the instance gets. As root, uid 0 would get the bounding set back but for SECBIT_NOROOT. */
        assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                NanoRlimit rl[] = {{RLIMIT_CORE, 0, 0}};
                NanoHardenConfig c = {
                        .rlimits = rl,
                        .n_rlimits = 1,
                        .seccomp = HAVE_SECCOMP ? &prog : NULL,
                };
                NanoError ce = {};

                if (nano_harden(&c, &ce) < 0) {
                        fprintf(stderr, "# child: %s\n", ce.message);
                        _exit(1);
                }
                dup2(fds[1], STDOUT_FILENO);
                execl("/bin/cat", "cat", "/proc/self/status", (char *)NULL);
                _exit(127);
        }
        close(fds[1]);
        n = read_full(fds[0], status, sizeof status - 1);
        close(fds[0]);
        assert_true(n > 0);
        status[n] = 0;
        assert_int_equal(wait_status(pid), 0);

        assert_int_equal(status_field(status, "\nCapInh:"), 0);
        assert_int_equal(status_field(status, "\nCapPrm:"), 0);
        assert_int_equal(status_field(status, "\nCapEff:"), 0);
        assert_int_equal(status_field(status, "\nCapAmb:"), 0);
        if (had_setpcap)
                assert_int_equal(status_field(status, "\nCapBnd:"), 0);
        assert_int_equal(status_field(status, "\nNoNewPrivs:"), 1);
        if (HAVE_SECCOMP)
                assert_int_equal(status_field(status, "\nSeccomp:"), 2);
        nano_seccomp_program_done(&prog);
}

static void test_harden_denies(void **state)
{
        NanoSeccompProgram prog = {};
        NanoError e = {};
        pid_t pid;

        if (!HAVE_SECCOMP) {
                print_message("# built without seccomp: the denial itself is not tested\n");
                return;
        }
        assert_int_equal(nano_seccomp_prepare(NULL, NULL, &prog, &e), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                NanoHardenConfig c = {.seccomp = &prog};
                char host[64];

                if (nano_harden(&c, NULL) < 0)
                        _exit(1);
                /* No capability is left to change the hostname (root included)... */
                CHECK_ERRNO(sethostname("x", 1), EPERM);
                CHECK(gethostname(host, sizeof host) == 0);
                /* ...securebits are locked with NOROOT when we could set them... */
                if (geteuid() == 0)
                        CHECK((prctl(PR_GET_SECUREBITS) & 0x3) == 0x3);
                /* ...and the denied call's errno is the exit status, as the brief asks. */
                _exit(syscall(SYS_keyctl, 0, -3, 0) < 0 ? errno : 0);
        }
        assert_int_equal(wait_status(pid), EPERM);
        nano_seccomp_program_done(&prog);
}

static void test_caps_in_userns(void **state)
{
        _cleanup_free_ NanoProbe *p = calloc(1, sizeof *p);
        char reason[512];
        pid_t pid;

        /* Inside a user namespace we hold every capability of it until they are dropped. */
        assert_int_equal(nano_probe(NULL, p), 0);
        if (nano_probe_reason(p, NANO_PROBE_USERNS, reason, sizeof reason)) {
                print_message("# skipped: %s\n", reason);
                return;
        }
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                NanoNsConfig c = {.mode = NANO_ISOLATE_NS, .flags = NANO_NS_MAP_ROOT | NANO_NS_UTS};
                NanoError ce = {};

                CHECK(nano_ns_unshare(&c, &ce) == 0);
                CHECK(sethostname("held", 4) == 0); /* CAP_SYS_ADMIN in our namespace */
                CHECK(nano_caps_drop_all(&ce) == 0);
                CHECK_ERRNO(sethostname("gone", 4), EPERM);
                CHECK(prctl(PR_CAPBSET_READ, 21 /* CAP_SYS_ADMIN */) == 0);
                CHECK(getuid() == 0);
                _exit(0);
        }
        assert_int_equal(wait_status(pid), 0);
}

#endif

/* ---- no_new_privs, rlimits. */

static void test_no_new_privs(void **state)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                NanoError e = {};
                int r = nano_no_new_privs(&e);
                if (!HAVE_NAMESPACES)
                        _exit(r == -EOPNOTSUPP ? 0 : 1);
                CHECK(r == 0);
                CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
                _exit(0);
        }
        assert_int_equal(wait_status(pid), 0);
}

static void test_rlimit_parse(void **state)
{
        NanoRlimit l;
        NanoError e = {};

        assert_int_equal(nano_rlimit_parse("nofile=1024:4096", &l, &e), 0);
        assert_int_equal(l.resource, RLIMIT_NOFILE);
        assert_int_equal(l.soft, 1024);
        assert_int_equal(l.hard, 4096);
        assert_int_equal(nano_rlimit_parse("CORE=0", &l, &e), 0);
        assert_int_equal(l.resource, RLIMIT_CORE);
        assert_int_equal(l.soft, 0);
        assert_int_equal(l.hard, 0);
        assert_int_equal(nano_rlimit_parse("RLIMIT_NPROC=unlimited", &l, &e), 0);
        assert_true(l.soft == RLIM_INFINITY && l.hard == RLIM_INFINITY);
        assert_int_equal(nano_rlimit_parse("stack=8388608:unlimited", &l, &e), 0);
        assert_true(l.soft == 8388608 && l.hard == RLIM_INFINITY);

        assert_int_equal(nano_rlimit_from_string("nofile"), RLIMIT_NOFILE);
        assert_int_equal(nano_rlimit_from_string("RLIMIT_AS"), RLIMIT_AS);
        assert_int_equal(nano_rlimit_from_string("bogus"), -EINVAL);
        assert_string_equal(nano_rlimit_to_string(RLIMIT_CORE), "core");

        static const char *const bad[] = {"nofile",
                                          "nofile=",
                                          "bogus=1",
                                          "nofile=abc",
                                          "nofile=10:5",
                                          "nofile=1:2:3",
                                          "nofile= 1",
                                          "nofile=-1",
                                          "nofile=unlimited:10",
                                          "=5",
                                          "nofile=99999999999999999999"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                e = (NanoError){};
                if (nano_rlimit_parse(bad[i], &l, &e) >= 0)
                        fail_msg("'%s' was accepted", bad[i]);
                assert_non_null(strstr(e.message, "rlimit '"));
        }
}

static void test_rlimit_apply(void **state)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                NanoRlimit l[] = {{RLIMIT_CORE, 0, 0}, {RLIMIT_NOFILE, 16, 16}};
                struct rlimit rl;
                NanoError e = {};
                int last = -1;

                CHECK(nano_rlimits_apply(l, 2, &e) == 0);
                CHECK(getrlimit(RLIMIT_CORE, &rl) == 0 && rl.rlim_cur == 0 && rl.rlim_max == 0);
                CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == 16 && rl.rlim_max == 16);
                for (int i = 0; i < 32; i++) {
                        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                        if (fd < 0) {
                                CHECK(errno == EMFILE);
                                break;
                        }
                        last = fd;
                }
                CHECK(last >= 0 && last < 16);
                /* Raising a hard limit back is what only CAP_SYS_RESOURCE may do: not after a drop. */
                l[1] = (NanoRlimit){RLIMIT_NOFILE, 16, 1 << 20};
                if (geteuid() != 0) {
                        CHECK(nano_rlimits_apply(&l[1], 1, &e) == -EPERM);
                        CHECK(strstr(e.message, "setrlimit nofile 16:1048576: Operation not permitted"));
                }
                _exit(0);
        }
        assert_int_equal(wait_status(pid), 0);
}

/* ---- Landlock. */

static void test_landlock(void **state)
{
        char allowed[PATH_MAX], denied[PATH_MAX], path[PATH_MAX * 2];
        int abi = nano_landlock_abi(), fd;
        pid_t pid;

        if (abi < 0) {
                print_message("# skipped: Landlock is not available here (%s)\n", strerror(-abi));
                return;
        }
        PATHF(allowed, "%s/allowed", tmpdir);
        PATHF(denied, "%s/denied", tmpdir);
        assert_int_equal(mkdir(allowed, 0755), 0);
        assert_int_equal(mkdir(denied, 0755), 0);
        PATHF(path, "%s/old", denied);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "old", 3), 3);
        close(fd);
        PATHF(path, "%s/a", allowed);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                const char *writable[] = {allowed, NULL};
                NanoLandlockConfig c = {.writable = writable, .scope_signals = true};
                char p[PATH_MAX * 2], q[PATH_MAX * 2], buf[8];
                NanoError e = {};
                int r;

                r = nano_landlock_apply(&c, &e);
                if (r < 0) {
                        fprintf(stderr, "# child: %s\n", e.message);
                        _exit(1);
                }
                CHECK(r == abi);
                CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);

                /* Beneath the writable dir: create, write, rename, remove. */
                snprintf(p, sizeof p, "%s/new", allowed);
                fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
                CHECK(fd >= 0 && write(fd, "x", 1) == 1);
                close(fd);
                snprintf(q, sizeof q, "%s/renamed", allowed);
                CHECK(rename(p, q) == 0);
                CHECK(unlink(q) == 0);
                snprintf(p, sizeof p, "%s/sub", allowed);
                CHECK(mkdir(p, 0755) == 0);

                /* Elsewhere: read and execute yes, anything that writes no. */
                snprintf(p, sizeof p, "%s/old", denied);
                fd = open(p, O_RDONLY | O_CLOEXEC);
                CHECK(fd >= 0 && read(fd, buf, sizeof buf) == 3);
                close(fd);
                CHECK_ERRNO(open(p, O_WRONLY | O_CLOEXEC), EACCES);
                CHECK_ERRNO(unlink(p), EACCES);
                if (abi >= 3)
                        CHECK_ERRNO(truncate(p, 0), EACCES);
                snprintf(q, sizeof q, "%s/new", denied);
                CHECK_ERRNO(open(q, O_WRONLY | O_CREAT | O_CLOEXEC, 0644), EACCES);
                CHECK_ERRNO(mkdir(q, 0755), EACCES);
                /* Moving a file out of the writable dir is writing elsewhere too. */
                snprintf(p, sizeof p, "%s/a", allowed);
                CHECK(rename(p, q) < 0 && (errno == EACCES || errno == EXDEV));
                CHECK(access("/bin/sh", X_OK) == 0);

                /* The usual device files still work. */
                fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
                CHECK(fd >= 0 && write(fd, "x", 1) == 1);
                close(fd);

                /* ABI 6: no signal leaves the sandbox (our parent is outside). */
                if (abi >= 6)
                        CHECK_ERRNO(kill(getppid(), 0), EPERM);
                _exit(0);
        }
        assert_int_equal(wait_status(pid), 0);
        PATHF(path, "%s/sub", allowed);
        assert_int_equal(access(path, F_OK), 0); /* writes in the writable dir are real */
        PATHF(path, "%s/old", denied);
        assert_int_equal(access(path, F_OK), 0);
}

static void test_harden_landlock_optional(void **state)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                /* A writable dir that does not exist is an error when Landlock runs, and harden says
                 * which; the caller sees it even though Landlock was not "required". */
                const char *writable[] = {"/nonexistent-nano-dir", NULL};
                NanoLandlockConfig ll = {.writable = writable};
                NanoHardenConfig c = {
                        .landlock = &ll, .keep_caps = true, .allow_new_privs = !HAVE_NAMESPACES};
                NanoError e = {};
                int r = nano_harden(&c, &e);

                if (nano_landlock_abi() < 0)
                        _exit(r == 0 ? 0 : 1); /* unavailable and not required: not an error */
                CHECK(r == -ENOENT);
                CHECK(streq(e.message, "Landlock: open '/nonexistent-nano-dir': No such file or directory"));
                _exit(0);
        }
        assert_int_equal(wait_status(pid), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
#if HAVE_LIBCAP && HAVE_NAMESPACES
                cmocka_unit_test(test_harden_then_exec),
                cmocka_unit_test(test_harden_denies),
                cmocka_unit_test(test_caps_in_userns),
#endif
                cmocka_unit_test(test_no_new_privs),
                cmocka_unit_test(test_rlimit_parse),
                cmocka_unit_test(test_rlimit_apply),
                cmocka_unit_test(test_landlock),
                cmocka_unit_test(test_harden_landlock_optional),
        };

        return cmocka_run_group_tests(tests, group_setup, tmpdir_teardown);
}
