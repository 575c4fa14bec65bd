/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ns/userns.c + ns/mount.c, for real, in forked children, where this host allows unprivileged user
 * namespaces: after nano_ns_unshare() + nano_ns_setup_root(), /nano/store and /nano/release are
 * read-only (EROFS), /nano/instance is writable, the host's trees are read-only, /tmp and /dev are
 * private, getuid() is the mapped id, on a tmpfs root or a root skeleton; the pid/net/uts variant
 * is pid 1 with only `lo`, up; rootfs mode;
 * extra binds and hidden paths; and every failure names its step and path. The child's NanoError comes
 * back to the parent through a pipe, as it will to the runtime. */

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "config.h"
#include "../../ns/ns.h"
#include "util.h"

#include "test-tmpdir.h"

static char store[PATH_MAX], release[PATH_MAX], instance[PATH_MAX], rootfs[PATH_MAX];
static NanoProbe *host;
static int result_fd = -EBADF; /* in a child: where its NanoError goes */

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

static void put(const char *dir, const char *rel, const char *content)
{
        char path[PATH_MAX * 2];
        int fd;

        PATHF(path, "%s/%s", dir, rel);
        *strrchr(path, '/') = 0;
        mkdir_p(path);
        PATHF(path, "%s/%s", dir, rel);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write_all(fd, content, strlen(content)), 0);
        close(fd);
}

static int group_setup(void **state)
{
        if (tmpdir_create("test-ns-mount") < 0)
                return -1;
        /* Others may need to traverse it: the map-root variant looks at it as "nobody". */
        (void)chmod(tmpdir, 0755);
        snprintf(store, sizeof store, "%s/store", tmpdir);
        snprintf(release, sizeof release, "%s/release", tmpdir);
        snprintf(instance, sizeof instance, "%s/instance", tmpdir);
        snprintf(rootfs, sizeof rootfs, "%s/rootfs", tmpdir);
        put(store, "obj", "object");
        put(release, "bin/tool", "#!/bin/sh\n");
        mkdir_p(instance);
        put(rootfs, "hello", "hi");
        put(tmpdir, "extra/inside", "extra");
        put(tmpdir, "extra-file", "a file");
        for (const char *d = "proc\0dev\0tmp\0nano/instance\0"; *d; d += strlen(d) + 1) {
                char p[PATH_MAX * 2];
                PATHF(p, "%s/%s", rootfs, d);
                mkdir_p(p);
        }

        host = calloc(1, sizeof *host);
        return host && nano_probe(NULL, host) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
        tmpdir_remove();
        free(host);
        return 0;
}

/* Returns true (and notes why) when f does not work here. With NANO_TEST_MUST_WORK=1, as in CI, that
 * is a failure instead. (No cmocka skip(): 1.1.5 prints "not ok # SKIP", a failure to meson.) */
static bool unavailable(NanoProbeFeature f)
{
        char reason[1024];
        const char *must = getenv("NANO_TEST_MUST_WORK");

        if (!nano_probe_reason(host, f, reason, sizeof reason))
                return false;
        if (!HAVE_NAMESPACES) {
                /* Not a host's refusal: this build has only the stubs, and they must say so. */
                NanoError e = {};
                assert_int_equal(nano_ns_unshare(&(NanoNsConfig){.mode = NANO_ISOLATE_NS}, &e), -EOPNOTSUPP);
                assert_string_equal(e.message, "nano was built without namespace support");
                print_message("# %s\n", reason);
                return true;
        }
        if (must && streq(must, "1"))
                fail_msg("NANO_TEST_MUST_WORK=1 but: %s", reason);
        print_message("# skipped: %s\n", reason);
        return true;
}

typedef int (*child_fn)(const NanoNsConfig *c, NanoError *e);

/* Runs fn(c) in a forked child and returns its exit status; the NanoError it recorded comes back
 * in *ret_e (the first one written to the pipe: a grandchild's, in the pid namespace case). */
static int run_child(child_fn fn, const NanoNsConfig *c, NanoError *ret_e)
{
        int fds[2], status;
        pid_t pid;

        assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                NanoError e = {};
                int r;

                close(fds[0]);
                result_fd = fds[1];
                r = fn(c, &e);
                (void)!write(result_fd, &e, sizeof e);
                _exit(r < 0 ? 100 : r);
        }
        close(fds[1]);
        *ret_e = (NanoError){};
        (void)read_full(fds[0], ret_e, sizeof *ret_e);
        for (char drain[512]; read(fds[0], drain, sizeof drain) > 0;)
                ;
        close(fds[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (ret_e->error)
                print_message("# child: %s\n", ret_e->message);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

#define CHECK(cond)                                                                                         \
        do {                                                                                                \
                if (!(cond)) {                                                                              \
                        fprintf(stderr, "# line %d: check failed: %s (errno: %m)\n", __LINE__, #cond);      \
                        return 1;                                                                           \
                }                                                                                           \
        } while (0)
/* The call fails with exactly this errno. */
#define CHECK_ERRNO(call, want)                                                                             \
        do {                                                                                                \
                errno = 0;                                                                                  \
                long _r = (long)(call);                                                                     \
                if (_r >= 0 || errno != (want)) {                                                           \
                        fprintf(stderr, "# line %d: %s: returned %ld, errno %d, want errno %d\n", __LINE__, \
                                #call, _r, errno, (want));                                                  \
                        return 1;                                                                           \
                }                                                                                           \
        } while (0)

static bool file_is(const char *path, const char *want)
{
        char buf[256];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return false;
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n < 0)
                return false;
        buf[n] = 0;
        return streq(buf, want);
}

static int write_new(const char *path)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return -1;
        if (write(fd, "x", 1) != 1) {
                close(fd);
                return -1;
        }
        return close(fd);
}

/* Every mount but those meant to be writable is read-only, submounts of the host's trees included
 * (that is what AT_RECURSIVE, or the legacy per-mount remount, is for). */
static int check_all_read_only(void)
{
        static const char *const rw[] = {"/nano/instance", "/tmp",      "/dev/shm",  "/dev/pts",
                                         "/dev/null",      "/dev/zero", "/dev/full", "/dev/random",
                                         "/dev/urandom",   "/dev/tty"};
        char line[4096];
        FILE *f = fopen("/proc/self/mountinfo", "re");
        int n = 0;

        CHECK(f);
        while (fgets(line, sizeof line, f)) {
                char point[1024], opts[256];
                bool allowed = false;

                if (sscanf(line, "%*s %*s %*s %*s %1023s %255s", point, opts) != 2)
                        continue;
                n++;
                for (size_t i = 0; i < sizeof rw / sizeof rw[0]; i++)
                        allowed = allowed || streq(point, rw[i]);
                allowed = allowed || streq(point, "/proc") || strncmp(point, "/proc/", 6) == 0;
                if (!allowed && !(strncmp(opts, "ro", 2) == 0 && (opts[2] == ',' || opts[2] == 0))) {
                        fprintf(stderr, "# %s is mounted %s\n", point, opts);
                        fclose(f);
                        return 1;
                }
        }
        fclose(f);
        CHECK(n > 5);
        return 0;
}

/* What every "ns" mode root must look like. */
static int check_ns_root(uid_t uid, gid_t gid)
{
        char cwd[PATH_MAX];
        struct stat st;
        int n = 0, fd;

        CHECK(getuid() == uid && geteuid() == uid);
        CHECK(getgid() == gid);
        CHECK(getcwd(cwd, sizeof cwd) && streq(cwd, "/"));

        /* The store and the release: readable, read-only. */
        CHECK(file_is("/nano/store/obj", "object"));
        CHECK_ERRNO(open("/nano/store/obj", O_WRONLY | O_CLOEXEC), EROFS);
        CHECK_ERRNO(open("/nano/store/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644), EROFS);
        CHECK(file_is("/nano/release/bin/tool", "#!/bin/sh\n"));
        CHECK_ERRNO(open("/nano/release/bin/tool", O_WRONLY | O_CLOEXEC), EROFS);

        /* The instance: writable, and it is the host's directory. */
        CHECK(write_new("/nano/instance/new") == 0);
        CHECK(file_is("/nano/instance/new", "x"));

        /* The host: there, read-only. The root itself takes nothing new. */
        CHECK(stat("/usr", &st) == 0 && S_ISDIR(st.st_mode));
        CHECK_ERRNO(open("/usr/nano-test-file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644), EROFS);
        CHECK_ERRNO(mkdir("/etc/nano-test-dir", 0755), EROFS);
        CHECK_ERRNO(mkdir("/nano-test-dir", 0755), EROFS);
        CHECK_ERRNO(mkdir("/nano/other", 0755), EROFS);

        /* A private /tmp: writable, and the host's (where our fixture is) is not there. */
        CHECK(write_new("/tmp/private") == 0);
        if (strncmp(tmpdir, "/tmp/", 5) == 0)
                CHECK_ERRNO(stat(tmpdir, &st), ENOENT);

        /* A minimal /dev. */
        fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        CHECK(fd >= 0 && write(fd, "x", 1) == 1);
        close(fd);
        CHECK(stat("/dev/zero", &st) == 0 && S_ISCHR(st.st_mode));
        CHECK(stat("/dev/pts", &st) == 0 && S_ISDIR(st.st_mode));
        CHECK(lstat("/dev/ptmx", &st) == 0);
        CHECK(write_new("/dev/shm/x") == 0);
        CHECK_ERRNO(open("/dev/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644), EROFS);
        {
                _cleanup_(closedirp) DIR *d = opendir("/dev");
                CHECK(d);
                while (readdir(d))
                        n++;
                CHECK(n <= 16);
        }

        CHECK(file_is("/proc/self/comm", "test-ns-mount\n"));
        return check_all_read_only();
}

typedef struct Ids {
        uid_t uid;
        gid_t gid;
} Ids;
static Ids expect_ids;

/* The new root is the bind of the skeleton (mountinfo's root field ends with its name), or a tmpfs. */
static int check_root_is(const char *skeleton)
{
        char line[4096];
        FILE *f = fopen("/proc/self/mountinfo", "re");
        bool found = false;

        CHECK(f);
        while (!found && fgets(line, sizeof line, f)) {
                char root[1024], point[1024], type[64];
                if (sscanf(line, "%*s %*s %*s %1023s %1023s %*s%*[^-]- %63s", root, point, type) != 3 ||
                    !streq(point, "/"))
                        continue;
                found = true;
                if (skeleton) {
                        const char *base = strrchr(skeleton, '/') + 1;
                        size_t n = strlen(root), m = strlen(base);
                        if (n < m || !streq(root + n - m, base)) {
                                fprintf(stderr, "# the root is '%s', not the skeleton '%s'\n", root,
                                        skeleton);
                                found = false;
                                break;
                        }
                } else if (!streq(type, "tmpfs")) {
                        fprintf(stderr, "# the root is a %s, not a tmpfs\n", type);
                        found = false;
                        break;
                }
        }
        fclose(f);
        CHECK(found);
        return 0;
}

static int ns_child(const NanoNsConfig *c, NanoError *e)
{
        int r;

        r = nano_ns_unshare(c, e);
        if (r < 0)
                return r;
        r = nano_ns_setup_root(c, e);
        if (r < 0)
                return r;
        r = check_root_is(c->skeleton);
        if (r != 0)
                return r;
        return check_ns_root(expect_ids.uid, expect_ids.gid);
}

static void run_ns_with(unsigned flags, uid_t uid, gid_t gid, const char *skeleton)
{
        NanoNsConfig c = {
                .mode = NANO_ISOLATE_NS,
                .flags = flags,
                .store_dir = store,
                .release_dir = release,
                .instance_dir = instance,
                .skeleton = skeleton,
        };
        char created[PATH_MAX * 2];
        struct stat st;
        NanoError e;

        (void)unlink((PATHF(created, "%s/new", instance), created));
        expect_ids = (Ids){uid, gid};
        assert_int_equal(run_child(ns_child, &c, &e), 0);
        assert_int_equal(e.error, 0);

        /* What the instance wrote is on the host, owned by us whatever the id inside. */
        assert_int_equal(stat(created, &st), 0);
        assert_int_equal(st.st_uid, geteuid());
}

static void run_ns(unsigned flags, uid_t uid, gid_t gid)
{
        run_ns_with(flags, uid, gid, NULL);
}

static void test_ns(void **state)
{
        if (unavailable(NANO_PROBE_USERNS))
                return;
        run_ns(0, geteuid(), getegid());
}

static void test_ns_legacy_remount(void **state)
{
        if (unavailable(NANO_PROBE_USERNS))
                return;
        run_ns(NANO_NS_LEGACY_REMOUNT, geteuid(), getegid());
}

static void test_ns_map_root(void **state)
{
        if (unavailable(NANO_PROBE_USERNS))
                return;
        run_ns(NANO_NS_MAP_ROOT, 0, 0);
}

static char skeleton_made[PATH_MAX]; /* test_ns_skeleton()'s, for the pid namespace variant */

/* A root skeleton: made once (the same path the second time), then the same root as a tmpfs gives,
 * with the legacy remounts too; with mapped root, whose ids differ from the skeleton's owner. */
static void test_ns_skeleton(void **state)
{
        char cache[PATH_MAX], skel[PATH_MAX], again[PATH_MAX], path[PATH_MAX * 2];
        struct stat st;
        NanoError e = {};
        int r;

        if (unavailable(NANO_PROBE_USERNS))
                return;
        PATHF(cache, "%s/cache-root", tmpdir);
        r = nano_ns_root_skeleton(cache, NULL, skel, sizeof skel, &e);
        if (r == -EAGAIN) {
                /* '/' changed less than two seconds ago: not kept yet, and said so. */
                print_message("# %s: waiting\n", e.message);
                sleep(2);
                e = (NanoError){};
                r = nano_ns_root_skeleton(cache, NULL, skel, sizeof skel, &e);
        }
        assert_int_equal(r, 0);
        assert_int_equal(e.error, 0);
        assert_int_equal(strncmp(skel, cache, strlen(cache)), 0);
        assert_int_equal(nano_ns_root_skeleton(cache, NULL, again, sizeof again, &e), 0);
        assert_string_equal(skel, again);
        assert_int_equal(stat((PATHF(path, "%s/nano/instance", skel), path), &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(lstat((PATHF(path, "%s/dev/ptmx", skel), path), &st), 0);
        assert_true(S_ISLNK(st.st_mode));
        assert_int_equal(stat("/usr", &st) == 0 ? stat((PATHF(path, "%s/usr", skel), path), &st) : 0, 0);
        assert_int_equal(lstat((PATHF(path, "%s/tmp", skel), path), &st), 0);

        snprintf(skeleton_made, sizeof skeleton_made, "%s", skel);
        run_ns_with(0, geteuid(), getegid(), skel);
        run_ns_with(NANO_NS_LEGACY_REMOUNT, geteuid(), getegid(), skel);
        run_ns_with(NANO_NS_MAP_ROOT, 0, 0, skel);
}

/* ---- pid + net + ipc + uts. */

static int pid1_checks(void)
{
        _cleanup_(closedirp) DIR *d = NULL;
        struct ifreq ifr = {};
        struct if_nameindex *names;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof a;
        char hostname[64];
        struct dirent *de;
        int s, c, pids = 0, ifs = 0;

        CHECK(getpid() == 1);
        /* Our own proc: only us. */
        d = opendir("/proc");
        CHECK(d);
        while ((de = readdir(d)))
                if (de->d_name[0] >= '1' && de->d_name[0] <= '9')
                        pids++;
        CHECK(pids == 1);
        CHECK(gethostname(hostname, sizeof hostname) == 0 && streq(hostname, "nano-test"));

        /* Only lo, and it is up: a loopback connection works. */
        names = if_nameindex();
        CHECK(names);
        for (struct if_nameindex *i = names; i->if_index; i++, ifs++)
                CHECK(streq(i->if_name, "lo"));
        if_freenameindex(names);
        CHECK(ifs == 1);
        s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        CHECK(s >= 0);
        strcpy(ifr.ifr_name, "lo");
        CHECK(ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP));
        close(s);
        s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 1) == 0);
        CHECK(getsockname(s, (struct sockaddr *)&a, &alen) == 0);
        c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0);
        close(c);
        close(s);
        return 0;
}

static int all_ns_child(const NanoNsConfig *c, NanoError *e)
{
        int r, status;
        pid_t pid;

        r = nano_ns_unshare(c, e);
        if (r < 0)
                return r;
        /* As the runtime must: only the children of the caller are in the new pid namespace. */
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                r = nano_ns_setup_root(c, e);
                if (r >= 0)
                        r = check_root_is(c->skeleton);
                if (r == 0)
                        r = check_ns_root(expect_ids.uid, expect_ids.gid);
                if (r == 0)
                        r = pid1_checks();
                (void)!write(result_fd, e, sizeof *e);
                _exit(r < 0 ? 100 : r);
        }
        if (waitpid(pid, &status, 0) != pid)
                return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}

static void run_all_ns(const char *skeleton)
{
        NanoNsConfig c = {
                .mode = NANO_ISOLATE_NS,
                .flags = NANO_NS_PID | NANO_NS_NET | NANO_NS_IPC | NANO_NS_UTS,
                .store_dir = store,
                .release_dir = release,
                .instance_dir = instance,
                .hostname = "nano-test",
                .skeleton = skeleton,
        };
        char created[PATH_MAX * 2];
        NanoError e;

        if (unavailable(NANO_PROBE_PIDNS) || unavailable(NANO_PROBE_NETNS))
                return;
        (void)unlink((PATHF(created, "%s/new", instance), created));
        expect_ids = (Ids){geteuid(), getegid()};
        assert_int_equal(run_child(all_ns_child, &c, &e), 0);
        assert_int_equal(e.error, 0);
}

static void test_ns_pid_net_uts(void **state)
{
        run_all_ns(NULL);
        if (skeleton_made[0])
                run_all_ns(skeleton_made);
}

/* ---- rootfs mode. */

static int rootfs_child(const NanoNsConfig *c, NanoError *e)
{
        struct stat st;
        int r;

        r = nano_ns_unshare(c, e);
        if (r >= 0)
                r = nano_ns_setup_root(c, e);
        if (r < 0)
                return r;
        CHECK(file_is("/hello", "hi"));
        CHECK_ERRNO(stat("/usr", &st), ENOENT); /* nothing of the host */
        CHECK_ERRNO(open("/hello", O_WRONLY | O_CLOEXEC), EROFS);
        CHECK_ERRNO(mkdir("/new", 0755), EROFS);
        CHECK(write_new("/nano/instance/new") == 0);
        CHECK(write_new("/tmp/x") == 0);
        CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
        CHECK(file_is("/proc/self/comm", "test-ns-mount\n"));
        CHECK(getuid() == expect_ids.uid);
        return 0;
}

static void test_rootfs(void **state)
{
        NanoNsConfig c = {
                .mode = NANO_ISOLATE_ROOTFS,
                .release_dir = rootfs,
                .instance_dir = instance,
        };
        char created[PATH_MAX * 2];
        NanoError e;

        if (unavailable(NANO_PROBE_USERNS))
                return;
        (void)unlink((PATHF(created, "%s/new", instance), created));
        expect_ids = (Ids){geteuid(), getegid()};
        assert_int_equal(run_child(rootfs_child, &c, &e), 0);
        assert_int_equal(access(created, F_OK), 0);
}

/* ---- Extra binds, hidden paths. */

static const char *existing_dir; /* a directory of the host's, to bind over */

static int binds_child(const NanoNsConfig *c, NanoError *e)
{
        _cleanup_(closedirp) DIR *d = NULL;
        char path[PATH_MAX];
        int r, n = 0;

        r = nano_ns_unshare(c, e);
        if (r >= 0)
                r = nano_ns_setup_root(c, e);
        if (r < 0)
                return r;
        CHECK(file_is("/nano/extra/inside", "extra"));
        CHECK(write_new("/nano/extra/written") == 0);
        CHECK(file_is("/nano/file", "a file"));
        CHECK_ERRNO(open("/nano/file", O_WRONLY | O_CLOEXEC), EROFS);
        if (existing_dir) {
                snprintf(path, sizeof path, "%s/obj", existing_dir);
                CHECK(file_is(path, "object"));
                CHECK_ERRNO(open(path, O_WRONLY | O_CLOEXEC), EROFS);
        }
        /* /etc is covered by an empty, read-only tmpfs. */
        d = opendir("/etc");
        CHECK(d);
        while (readdir(d))
                n++;
        CHECK(n == 2);
        CHECK_ERRNO(open("/etc/passwd", O_RDONLY | O_CLOEXEC), ENOENT);
        CHECK_ERRNO(mkdir("/etc/x", 0755), EROFS);
        return 0;
}

static void test_binds_and_hide(void **state)
{
        static const char *const hide[] = {"/etc", NULL};
        char extra[PATH_MAX], extra_file[PATH_MAX], written[PATH_MAX * 2];
        NanoBind binds[3];
        NanoNsConfig c = {
                .mode = NANO_ISOLATE_NS,
                .instance_dir = instance,
                .binds = binds,
                .hide = hide,
        };
        NanoError e;

        if (unavailable(NANO_PROBE_USERNS))
                return;
        PATHF(extra, "%s/extra", tmpdir);
        PATHF(extra_file, "%s/extra-file", tmpdir);
        PATHF(written, "%s/written", extra);
        (void)unlink(written);

        binds[c.n_binds++] = (NanoBind){.source = extra, .target = "/nano/extra"};
        binds[c.n_binds++] = (NanoBind){.source = extra_file, .target = "/nano/file", .read_only = true};
        /* Over a directory of the host's read-only tree: its mount point exists already. */
        existing_dir = NULL;
        for (const char *d = "/srv\0/opt\0/mnt\0/media\0"; *d; d += strlen(d) + 1)
                if (access(d, F_OK) == 0 && strncmp(tmpdir, d, strlen(d)) != 0) {
                        existing_dir = d;
                        binds[c.n_binds++] = (NanoBind){.source = store, .target = d, .read_only = true};
                        break;
                }

        assert_int_equal(run_child(binds_child, &c, &e), 0);
        assert_int_equal(access(written, F_OK), 0);
}

/* ---- Every failure names its step and its path. */

static int setup_child(const NanoNsConfig *c, NanoError *e)
{
        int r = nano_ns_unshare(c, e);
        if (r >= 0)
                r = nano_ns_setup_root(c, e);
        return r < 0 ? r : 0;
}

static void expect_failure(const NanoNsConfig *c, int error, const char *message)
{
        NanoError e;

        assert_int_equal(run_child(setup_child, c, &e), 100);
        if (e.error != error || strncmp(e.message, message, strlen(message)) != 0)
                fail_msg("got %d '%s', want %d '%s'", e.error, e.message, error, message);
}

static void test_errors(void **state)
{
        char nope[PATH_MAX], want[PATH_MAX * 2], rootfs2[PATH_MAX], evil[PATH_MAX], link[PATH_MAX * 2];
        NanoBind bind;
        NanoNsConfig c = {.mode = NANO_ISOLATE_NS, .binds = &bind, .n_binds = 1};
        struct stat st;

        if (unavailable(NANO_PROBE_USERNS))
                return;

        /* A mount point that would have to be created in the host's (read-only) tree. (An empty one
         * left by a broken build, run as root, would make the mount succeed: clear it first.) */
        (void)rmdir("/usr/nano-test-nonexistent");
        bind = (NanoBind){.source = store, .target = "/usr/nano-test-nonexistent"};
        expect_failure(&c, EROFS,
                       "create the mount point '/usr/nano-test-nonexistent': Read-only file system");
        assert_int_equal(stat("/usr/nano-test-nonexistent", &st), -1);

        /* A source that does not exist. */
        PATHF(nope, "%s/nope", tmpdir);
        bind = (NanoBind){.source = nope, .target = "/nano/x"};
        PATHF(want, "mount '/nano/x': open '%s': No such file or directory", nope);
        expect_failure(&c, ENOENT, want);

        /* Relative and escaping targets. */
        bind = (NanoBind){.source = store, .target = "nano/x"};
        expect_failure(&c, EINVAL, "mount point 'nano/x': not an absolute path");
        bind = (NanoBind){.source = store, .target = "/nano/../usr/x"};
        expect_failure(&c, EINVAL, "mount point '/nano/../usr/x': '.' or '..' in the path");

        /* The staging directory. */
        c = (NanoNsConfig){.mode = NANO_ISOLATE_NS, .staging_dir = "/nonexistent-nano-staging"};
        expect_failure(&c, ENOENT,
                       "staging directory '/nonexistent-nano-staging': No such file or directory");

        /* A rootfs without the mount points nano needs: it is read-only, they cannot be made. */
        PATHF(rootfs2, "%s/rootfs2", tmpdir);
        for (const char *d = "proc\0dev\0tmp\0"; *d; d += strlen(d) + 1) {
                PATHF(want, "%s/%s", rootfs2, d);
                mkdir_p(want);
        }
        c = (NanoNsConfig){.mode = NANO_ISOLATE_ROOTFS, .release_dir = rootfs2, .instance_dir = instance};
        expect_failure(&c, EROFS, "create the mount point '/nano/instance': Read-only file system");

        /* A symbolic link in the way, pointing to the host: refused, nothing created there. */
        PATHF(evil, "%s/evil", tmpdir);
        PATHF(link, "%s/nano", rootfs2);
        assert_int_equal(symlink(evil, link), 0);
        mkdir_p(evil);
        expect_failure(&c, ENOTDIR,
                       "mount point '/nano/instance': Not a directory (a symbolic link or a file is in "
                       "the way)");
        PATHF(want, "%s/instance", evil);
        assert_int_equal(stat(want, &st), -1);

        /* A pid namespace, but the root set up without forking first. */
        c = (NanoNsConfig){.mode = NANO_ISOLATE_NS, .flags = NANO_NS_PID};
        if (!unavailable(NANO_PROBE_PIDNS))
                expect_failure(&c, EPERM,
                               "mount '/proc': Operation not permitted (with a pid namespace, set up the "
                               "root in the child forked after unshare");

        /* Bad configs. */
        c = (NanoNsConfig){.mode = NANO_ISOLATE_ROOTFS};
        expect_failure(&c, EINVAL, "new root: the rootfs mode needs a release directory");
        c = (NanoNsConfig){.mode = NANO_ISOLATE_BARE};
        expect_failure(&c, EINVAL, "namespaces: no config, or the bare mode");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ns),          cmocka_unit_test(test_ns_legacy_remount),
                cmocka_unit_test(test_ns_map_root), cmocka_unit_test(test_ns_skeleton),
                cmocka_unit_test(test_ns_pid_net_uts),
                cmocka_unit_test(test_rootfs),      cmocka_unit_test(test_binds_and_hide),
                cmocka_unit_test(test_errors),
        };

        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
