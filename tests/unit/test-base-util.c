/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* base/util.c and log_level_from_string(): hex, sizes, byte formatting, full reads and writes. */

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "log.h"
#include "util.h"

/* A private directory for the file tests, removed by the group teardown. */
static char tmpdir[PATH_MAX];
static int tmpdir_fd = -EBADF;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(path) < 0 ? -1 : 0;
}

static int group_setup(void **state)
{
        const char *base = getenv("TMPDIR");

        snprintf(tmpdir, sizeof tmpdir, "%s/test-base-util.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir))
                return -1;
        tmpdir_fd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (tmpdir_fd < 0)
                return -1;
        /* write_all() to a pipe with no reader must give -EPIPE, not kill the test. */
        signal(SIGPIPE, SIG_IGN);
        return 0;
}

static int group_teardown(void **state)
{
        tmpdir_fd = safe_close(tmpdir_fd);
        if (tmpdir[0])
                nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 0;
}

/* Creates tmpdir/name with the given content. */
static void put_file(const char *name, const void *data, size_t len)
{
        _cleanup_close_ int fd = openat(tmpdir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(write_all(fd, data, len), 0);
}

/* ---- hex ---- */

static void test_hex_encode(void **state)
{
        static const uint8_t in[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
        char out[2 * sizeof in + 1];

        memset(out, 'X', sizeof out);
        hex_encode(in, sizeof in, out);
        assert_string_equal(out, "00017f80abff");

        memset(out, 'X', sizeof out);
        hex_encode(in, 0, out);
        assert_string_equal(out, "");
}

static void test_hex_decode_good(void **state)
{
        uint8_t out[6] = { 0 };
        static const uint8_t want[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };

        assert_int_equal(hex_decode("00017f80abff", out, sizeof out), 0);
        assert_memory_equal(out, want, sizeof want);
        assert_int_equal(hex_decode("", out, 0), 0);
}

static void test_hex_round_trip(void **state)
{
        uint8_t in[256], back[256];
        char text[2 * sizeof in + 1];

        for (size_t i = 0; i < sizeof in; i++)
                in[i] = (uint8_t)i;
        hex_encode(in, sizeof in, text);
        assert_int_equal(strlen(text), 2 * sizeof in);
        assert_int_equal(hex_decode(text, back, sizeof back), 0);
        assert_memory_equal(in, back, sizeof in);
}

static void test_hex_decode_bad(void **state)
{
        uint8_t out[4];

        /* Digits outside [0-9a-f], in the high and in the low nibble. */
        assert_int_equal(hex_decode("g0000000", out, 4), -EINVAL);
        assert_int_equal(hex_decode("0g000000", out, 4), -EINVAL);
        assert_int_equal(hex_decode("000000 0", out, 4), -EINVAL);
        assert_int_equal(hex_decode("0000000-", out, 4), -EINVAL);
        assert_int_equal(hex_decode("0000:000", out, 4), -EINVAL);
        /* Uppercase is refused: an id has one spelling. */
        assert_int_equal(hex_decode("ABCDEF01", out, 4), -EINVAL);
        assert_int_equal(hex_decode("abcdeF01", out, 4), -EINVAL);
        /* Wrong lengths: short, odd, long, empty. */
        assert_int_equal(hex_decode("abcdef", out, 4), -EINVAL);
        assert_int_equal(hex_decode("abcdef0", out, 4), -EINVAL);
        assert_int_equal(hex_decode("abcdef0123", out, 4), -EINVAL);
        assert_int_equal(hex_decode("abcdef012", out, 4), -EINVAL);
        assert_int_equal(hex_decode("", out, 4), -EINVAL);
        assert_int_equal(hex_decode("00", out, 0), -EINVAL);
}

/* ---- parse_size ---- */

static void check_size(const char *s, uint64_t want)
{
        uint64_t v = 12345;
        int r = parse_size(s, &v);

        if (r != 0 || v != want)
                fail_msg("parse_size(\"%s\") = %d, %llu; want 0, %llu", s, r, (unsigned long long)v,
                         (unsigned long long)want);
}

static void check_size_fails(const char *s, int want)
{
        uint64_t v = 12345;
        int r = parse_size(s, &v);

        if (r != want)
                fail_msg("parse_size(\"%s\") = %d, want %d", s ? s : "(null)", r, want);
        /* The output is left alone on failure. */
        assert_int_equal(v, 12345);
}

static void test_parse_size_plain(void **state)
{
        check_size("0", 0);
        check_size("1", 1);
        check_size("4096", 4096);
        check_size("007", 7);
        check_size("18446744073709551615", UINT64_MAX);
}

static void test_parse_size_suffixes(void **state)
{
        check_size("1K", 1024);
        check_size("1k", 1024);
        check_size("64M", 64ULL << 20);
        check_size("64m", 64ULL << 20);
        check_size("1G", 1ULL << 30);
        check_size("3g", 3ULL << 30);
        check_size("2T", 2ULL << 40);
        check_size("2t", 2ULL << 40);
        check_size("0K", 0);
        /* The IEC spellings mean the same powers of 1024. */
        check_size("1KiB", 1024);
        check_size("256KiB", 256ULL << 10);
        check_size("64MiB", 64ULL << 20);
        check_size("1GiB", 1ULL << 30);
        check_size("5TiB", 5ULL << 40);
        /* The largest value each suffix can carry. */
        check_size("16777215T", (UINT64_MAX >> 40) << 40);
        check_size("17592186044415M", (UINT64_MAX >> 20) << 20);
}

static void test_parse_size_overflow(void **state)
{
        check_size_fails("18446744073709551616", -ERANGE); /* 2^64 */
        check_size_fails("99999999999999999999999999", -ERANGE);
        check_size_fails("16777216T", -ERANGE);  /* 2^24 TiB = 2^64 */
        check_size_fails("17179869184G", -ERANGE); /* 2^34 GiB = 2^64 */
        check_size_fails("18014398509481984K", -ERANGE);
        check_size_fails("18446744073709551615K", -ERANGE);
}

static void test_parse_size_garbage(void **state)
{
        check_size_fails(NULL, -EINVAL);
        check_size_fails("", -EINVAL);
        check_size_fails("K", -EINVAL);
        check_size_fails("abc", -EINVAL);
        check_size_fails("12x", -EINVAL);
        check_size_fails("12 K", -EINVAL);
        check_size_fails(" 12", -EINVAL);
        check_size_fails("12 ", -EINVAL);
        check_size_fails("1.5G", -EINVAL);
        check_size_fails("1P", -EINVAL);
        check_size_fails("1KiBx", -EINVAL);
        check_size_fails("1KK", -EINVAL);
        check_size_fails("0x10", -EINVAL);
        check_size_fails("1e3", -EINVAL);
}

static void test_parse_size_negative(void **state)
{
        /* strtoull() would accept these and wrap them around; parse_size must not. */
        check_size_fails("-1", -EINVAL);
        check_size_fails("-0", -EINVAL);
        check_size_fails("-1K", -EINVAL);
        check_size_fails("+1", -EINVAL);
}

/* ---- format_bytes ---- */

static void check_format(uint64_t n, const char *want)
{
        char buf[32];

        memset(buf, 'X', sizeof buf);
        assert_ptr_equal(format_bytes(n, buf, sizeof buf), buf);
        if (!streq(buf, want))
                fail_msg("format_bytes(%llu) = \"%s\", want \"%s\"", (unsigned long long)n, buf, want);
}

static void test_format_bytes(void **state)
{
        char small[16];

        check_format(0, "0 B");
        check_format(1, "1 B");
        check_format(1023, "1023 B");
        check_format(1024, "1.0 KiB");
        check_format(1536, "1.5 KiB");
        check_format(1048575, "1024.0 KiB");
        check_format(1ULL << 20, "1.0 MiB");
        check_format(5ULL << 30, "5.0 GiB");
        check_format(3ULL << 40, "3.0 TiB");
        check_format(7ULL << 50, "7.0 PiB");

        /* The documented minimum of 16 bytes holds the largest value, NUL-terminated. */
        memset(small, 'X', sizeof small);
        format_bytes(UINT64_MAX, small, sizeof small);
        assert_non_null(memchr(small, '\0', sizeof small));
        assert_true(strlen(small) > 0);
}

/* ---- read_full / write_all / pread_full / pwrite_all ---- */

static void test_pipe_small(void **state)
{
        int p[2];
        char buf[16];

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(write_all(p[1], "abc", 3), 0);
        assert_int_equal(write_all(p[1], "", 0), 0);
        close(p[1]);
        /* A short stream: read_full returns what there was, then 0 at EOF. */
        assert_int_equal(read_full(p[0], buf, sizeof buf), 3);
        assert_memory_equal(buf, "abc", 3);
        assert_int_equal(read_full(p[0], buf, sizeof buf), 0);
        assert_int_equal(read_full(p[0], buf, 0), 0);
        close(p[0]);
}

static void test_pipe_large(void **state)
{
        /* More than a pipe holds, so the writer blocks and the reader sees short reads. */
        const size_t len = 1024 * 1024 + 17;
        _cleanup_free_ uint8_t *out = malloc(len), *in = malloc(len);
        int p[2], status;
        pid_t pid;

        assert_non_null(out);
        assert_non_null(in);
        for (size_t i = 0; i < len; i++)
                out[i] = (uint8_t)(i * 7 + (i >> 11));
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(p[0]);
                /* In small uneven pieces, to make the reader loop. */
                for (size_t off = 0; off < len;) {
                        size_t n = MIN((size_t)4093, len - off);
                        if (write_all(p[1], out + off, n) < 0)
                                _exit(1);
                        off += n;
                }
                _exit(0);
        }
        close(p[1]);
        assert_int_equal(read_full(p[0], in, len), (ssize_t)len);
        assert_memory_equal(in, out, len);
        assert_int_equal(read_full(p[0], in, 1), 0);
        close(p[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_pipe_errors(void **state)
{
        int p[2];
        char c;

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        close(p[0]);
        assert_int_equal(write_all(p[1], "x", 1), -EPIPE);
        close(p[1]);

        assert_int_equal(write_all(-1, "x", 1), -EBADF);
        assert_int_equal(read_full(-1, &c, 1), -EBADF);
        assert_int_equal(pread_full(-1, &c, 1, 0), -EBADF);
        assert_int_equal(pwrite_all(-1, "x", 1, 0), -EBADF);

        /* pread on a pipe is ESPIPE. */
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(pread_full(p[0], &c, 1, 0), -ESPIPE);
        close(p[0]);
        close(p[1]);
}

static void test_file_rw(void **state)
{
        _cleanup_close_ int fd = -EBADF;
        char buf[128];
        static const char zero[100];

        fd = openat(tmpdir_fd, "rw", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);

        assert_int_equal(write_all(fd, "head", 4), 0);
        assert_int_equal(pwrite_all(fd, "hello world", 11, 100), 0);
        /* pwrite/pread leave the file offset alone. */
        assert_int_equal(lseek(fd, 0, SEEK_CUR), 4);

        assert_int_equal(pread_full(fd, buf, 11, 100), 11);
        assert_memory_equal(buf, "hello world", 11);
        /* Past the end: what there is, then nothing. */
        assert_int_equal(pread_full(fd, buf, sizeof buf, 106), 5);
        assert_memory_equal(buf, "world", 5);
        assert_int_equal(pread_full(fd, buf, sizeof buf, 111), 0);
        assert_int_equal(pread_full(fd, buf, sizeof buf, 5000), 0);
        /* The hole reads as zeros. */
        assert_int_equal(pread_full(fd, buf, 96, 4), 96);
        assert_memory_equal(buf, zero, 96);

        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        assert_int_equal(read_full(fd, buf, 4), 4);
        assert_memory_equal(buf, "head", 4);
        assert_int_equal(lseek(fd, 0, SEEK_END), 111);
        assert_int_equal(read_full(fd, buf, sizeof buf), 0);
}

/* ---- read_file_at ---- */

static void test_read_file_at(void **state)
{
        _cleanup_free_ char *s = NULL;
        size_t size = 999;

        put_file("ten", "0123456789", 10);

        assert_int_equal(read_file_at(tmpdir_fd, "ten", 10, &s, &size), 0);
        assert_int_equal(size, 10);
        assert_string_equal(s, "0123456789"); /* NUL-terminated */
        free(s);
        s = NULL;

        assert_int_equal(read_file_at(tmpdir_fd, "ten", 4096, &s, NULL), 0);
        assert_string_equal(s, "0123456789");
        free(s);
        s = NULL;

        /* An absolute path ignores dirfd. */
        {
                char path[PATH_MAX + 8];
                snprintf(path, sizeof path, "%s/ten", tmpdir);
                assert_int_equal(read_file_at(AT_FDCWD, path, 10, &s, &size), 0);
                assert_int_equal(size, 10);
                free(s);
                s = NULL;
        }
}

static void test_read_file_at_limits(void **state)
{
        char *s = NULL;
        size_t size = 999;

        put_file("eleven", "0123456789a", 11);
        assert_int_equal(read_file_at(tmpdir_fd, "eleven", 10, &s, &size), -EFBIG);
        assert_int_equal(read_file_at(tmpdir_fd, "eleven", 0, &s, &size), -EFBIG);
        assert_null(s);
        assert_int_equal(size, 999);

        /* An empty file is an empty string, even with max 0. */
        put_file("empty", "", 0);
        assert_int_equal(read_file_at(tmpdir_fd, "empty", 0, &s, &size), 0);
        assert_non_null(s);
        assert_int_equal(size, 0);
        assert_string_equal(s, "");
        free(s);
        s = NULL;

        assert_int_equal(read_file_at(tmpdir_fd, "missing", 10, &s, &size), -ENOENT);
        assert_null(s);
}

static void test_read_file_at_not_regular(void **state)
{
        char *s = NULL;

        /* Symlinks are not followed. */
        put_file("target", "x", 1);
        assert_int_equal(symlinkat("target", tmpdir_fd, "link"), 0);
        assert_int_equal(read_file_at(tmpdir_fd, "link", 10, &s, NULL), -ELOOP);
        assert_null(s);

        /* A directory is not a file. */
        assert_int_equal(mkdirat(tmpdir_fd, "dir", 0755), 0);
        assert_true(read_file_at(tmpdir_fd, "dir", 10, &s, NULL) < 0);
        assert_null(s);
}

/* ---- mkdirat_ok, now_ns, streq ---- */

static void test_mkdirat_ok(void **state)
{
        struct stat st;

        assert_int_equal(mkdirat_ok(tmpdir_fd, "m", 0700), 0);
        assert_int_equal(mkdirat_ok(tmpdir_fd, "m", 0700), 0);
        assert_int_equal(fstatat(tmpdir_fd, "m", &st, 0), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(mkdirat_ok(tmpdir_fd, "no/such/parent", 0700), -ENOENT);
}

static void test_now_ns(void **state)
{
        uint64_t a = now_ns(), b = now_ns();

        assert_true(a > 0);
        assert_true(b >= a);
}

static void test_streq(void **state)
{
        assert_true(streq("a", "a"));
        assert_true(streq("", ""));
        assert_false(streq("a", "b"));
        assert_false(streq("a", "ab"));
        assert_false(streq(NULL, "a"));
        assert_false(streq("a", NULL));
        assert_false(streq(NULL, NULL));
}

/* ---- log_level_from_string ---- */

static void test_log_level_from_string(void **state)
{
        assert_int_equal(log_level_from_string("error"), LOG_LEVEL_ERROR);
        assert_int_equal(log_level_from_string("warning"), LOG_LEVEL_WARNING);
        assert_int_equal(log_level_from_string("notice"), LOG_LEVEL_NOTICE);
        assert_int_equal(log_level_from_string("info"), LOG_LEVEL_INFO);
        assert_int_equal(log_level_from_string("debug"), LOG_LEVEL_DEBUG);
        assert_int_equal(log_level_from_string("DEBUG"), LOG_LEVEL_DEBUG);
        assert_int_equal(log_level_from_string("Info"), LOG_LEVEL_INFO);
        for (int l = 3; l <= 7; l++) {
                char s[2] = { (char)('0' + l), '\0' };
                assert_int_equal(log_level_from_string(s), l);
        }

        assert_int_equal(log_level_from_string(""), -EINVAL);
        assert_int_equal(log_level_from_string("2"), -EINVAL);
        assert_int_equal(log_level_from_string("8"), -EINVAL);
        assert_int_equal(log_level_from_string("37"), -EINVAL);
        assert_int_equal(log_level_from_string("-3"), -EINVAL);
        assert_int_equal(log_level_from_string("warn"), -EINVAL);
        assert_int_equal(log_level_from_string("debugx"), -EINVAL);
        assert_int_equal(log_level_from_string(" debug"), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hex_encode),
                cmocka_unit_test(test_hex_decode_good),
                cmocka_unit_test(test_hex_round_trip),
                cmocka_unit_test(test_hex_decode_bad),
                cmocka_unit_test(test_parse_size_plain),
                cmocka_unit_test(test_parse_size_suffixes),
                cmocka_unit_test(test_parse_size_overflow),
                cmocka_unit_test(test_parse_size_garbage),
                cmocka_unit_test(test_parse_size_negative),
                cmocka_unit_test(test_format_bytes),
                cmocka_unit_test(test_pipe_small),
                cmocka_unit_test(test_pipe_large),
                cmocka_unit_test(test_pipe_errors),
                cmocka_unit_test(test_file_rw),
                cmocka_unit_test(test_read_file_at),
                cmocka_unit_test(test_read_file_at_limits),
                cmocka_unit_test(test_read_file_at_not_regular),
                cmocka_unit_test(test_mkdirat_ok),
                cmocka_unit_test(test_now_ns),
                cmocka_unit_test(test_streq),
                cmocka_unit_test(test_log_level_from_string),
        };

        return cmocka_run_group_tests_name("base-util", tests, group_setup, group_teardown);
}
