/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The skeleton of an ns-mode root: a directory, made once per layout of the host's top level and kept
 * in nano's cache, that holds every mount point the new root needs (a directory or an empty file for
 * each top-level entry of the host, the host's top-level symbolic links as they are, /nano/{store,
 * release,instance}, /tmp, /proc, and a /dev with its mount points and links). nano_ns_setup_root()
 * binds it read-only as the new root and mounts over it, instead of mounting a tmpfs and creating
 * some forty inodes in it at every start, which the kernel then destroys at every exit (doc/run.md,
 * "Measured").
 *
 * Named after what identifies that layout: the host root's device, inode and change time (creating,
 * removing, renaming or replacing a top-level entry changes it), and the staging directory's top-level
 * name, which the root leaves out. Made under a temporary name and renamed into place, so a skeleton
 * that exists is complete. Never removed: a running instance has mounts on it, and removing a mount
 * point detaches what is mounted on it in every namespace. */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "ns-internal.h"

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/* The device nodes of the minimal /dev (mount.c binds the host's on these), and its links. */
const char *const ns_dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};
const NsDevLink ns_dev_links[] = {
        {"ptmx", "pts/ptmx"},          {"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"},
        {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}, {NULL, NULL},
};

bool ns_root_skips(const char *name, const char *skip_base)
{
        return streq(name, ".") || streq(name, "..") || streq(name, "proc") || streq(name, "dev") ||
               streq(name, "tmp") || streq(name, "nano") || (skip_base && streq(name, skip_base));
}

int ns_staging_base(const char *staging, char *ret_path, size_t path_size, char ret_top[static NAME_MAX + 1])
{
        size_t n;

        if (!realpath(staging ? staging : "/tmp", ret_path))
                return -errno;
        if (strlen(ret_path) >= path_size)
                return -ENAMETOOLONG;
        n = strcspn(ret_path + 1, "/");
        if (n > NAME_MAX)
                n = NAME_MAX;
        memcpy(ret_top, ret_path + 1, n);
        ret_top[n] = 0;
        return 0;
}

/* FNV-1a: names the staging dir's top level in the skeleton's name; no adversary picks it. */
static uint64_t fnv1a(const char *s)
{
        uint64_t h = 0xcbf29ce484222325ULL;

        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
        return h;
}

/* Removes what build() made under the temporary name: two levels at most, no symbolic link followed. */
static void remove_tmp(int dir_fd, const char *name)
{
        static const char *const subdirs[] = {"nano", "dev", NULL};
        _cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        if (fd < 0)
                return;
        for (const char *const *s = subdirs; *s; s++) {
                _cleanup_close_ int sfd = openat(fd, *s, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                _cleanup_(closedirp) DIR *sd = NULL;

                if (sfd < 0 || !(sd = fdopendir(sfd)))
                        continue;
                sfd = -EBADF;
                while ((de = readdir(sd)))
                        if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                                (void)unlinkat(dirfd(sd), de->d_name,
                                               de->d_type == DT_DIR ? AT_REMOVEDIR : 0);
        }
        d = fdopendir(fd);
        if (!d)
                return;
        fd = -EBADF;
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        (void)unlinkat(dirfd(d), de->d_name, de->d_type == DT_DIR ? AT_REMOVEDIR : 0);
        (void)unlinkat(dir_fd, name, AT_REMOVEDIR);
}

static int make_file(int dir_fd, const char *name)
{
        return mknodat(dir_fd, name, S_IFREG | 0644, 0) < 0 ? -errno : 0;
}

/* Fills the empty directory fd with the host's top level, as the new root shows it. */
static int build(int fd, const char *skip_base, NanoError *e)
{
        _cleanup_close_ int host = -EBADF, dev = -EBADF, nano = -EBADF;
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int r;

        host = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (host < 0)
                return nano_error_set(e, errno, "open '/': %m");
        d = fdopendir(host);
        if (!d)
                return nano_error_set(e, errno, "read '/': %m");
        host = -EBADF;
        while ((errno = 0, de = readdir(d))) {
                unsigned char type = de->d_type;

                if (ns_root_skips(de->d_name, skip_base))
                        continue;
                if (type == DT_UNKNOWN) {
                        struct stat st;
                        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        type = S_ISDIR(st.st_mode)   ? DT_DIR
                               : S_ISLNK(st.st_mode) ? DT_LNK
                               : S_ISREG(st.st_mode) ? DT_REG
                                                     : DT_UNKNOWN;
                }
                if (type == DT_LNK) {
                        /* /bin -> usr/bin on merged-/usr systems: the same link, not a bind. */
                        char link[PATH_MAX];
                        ssize_t l = readlinkat(dirfd(d), de->d_name, link, sizeof link - 1);
                        if (l < 0)
                                return nano_error_set(e, errno, "read the link '/%s': %m", de->d_name);
                        link[l] = 0;
                        r = symlinkat(link, fd, de->d_name) < 0 ? -errno : 0;
                } else if (type == DT_DIR)
                        r = mkdirat(fd, de->d_name, 0755) < 0 ? -errno : 0;
                else if (type == DT_REG)
                        r = make_file(fd, de->d_name);
                else
                        continue; /* sockets, fifos, devices at the top level: not shown, as before */
                if (r < 0)
                        return nano_error_set(e, r, "create '%s' in the root skeleton: %m", de->d_name);
        }
        if (errno != 0)
                return nano_error_set(e, errno, "read '/': %m");

        if (mkdirat(fd, "nano", 0755) < 0 || mkdirat(fd, "tmp", 0755) < 0 || mkdirat(fd, "proc", 0755) < 0 ||
            mkdirat(fd, "dev", 0755) < 0)
                return nano_error_set(e, errno, "create the root skeleton's directories: %m");
        nano = openat(fd, "nano", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nano < 0 || mkdirat(nano, "store", 0755) < 0 || mkdirat(nano, "release", 0755) < 0 ||
            mkdirat(nano, "instance", 0755) < 0)
                return nano_error_set(e, errno, "create the root skeleton's /nano: %m");
        dev = openat(fd, "dev", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dev < 0 || mkdirat(dev, "pts", 0755) < 0 || mkdirat(dev, "shm", 0755) < 0)
                return nano_error_set(e, errno, "create the root skeleton's /dev: %m");
        for (const char *const *n = ns_dev_nodes; *n; n++) {
                char src[32];
                struct stat st;

                /* Only the nodes this host has: no empty file where a device should be. */
                (void)ns_format(src, sizeof src, "/dev/%s", *n);
                if (stat(src, &st) < 0)
                        continue;
                r = make_file(dev, *n);
                if (r < 0)
                        return nano_error_set(e, r, "create '/dev/%s' in the root skeleton: %m", *n);
        }
        for (const NsDevLink *l = ns_dev_links; l->name; l++)
                if (symlinkat(l->target, dev, l->name) < 0)
                        return nano_error_set(e, errno, "create the link '/dev/%s' in the root skeleton: %m",
                                              l->name);
        return 0;
}

int nano_ns_root_skeleton(const char *cache_dir, const char *staging_dir, char *ret, size_t size,
                          NanoError *e)
{
        _cleanup_close_ int cache_fd = -EBADF, fd = -EBADF;
        char staging[PATH_MAX], skip_base[NAME_MAX + 1], name[128], tmp[64];
        struct timespec now;
        struct stat st;
        uint64_t rnd = 0;
        int r;

        r = ns_staging_base(staging_dir, staging, sizeof staging, skip_base);
        if (r < 0)
                return nano_error_set(e, r, "staging directory '%s': %m",
                                      staging_dir ? staging_dir : "/tmp");
        if (stat("/", &st) < 0)
                return nano_error_set(e, errno, "stat '/': %m");
        r = ns_format(name, sizeof name, "v1-%llx-%llx-%lld.%09ld-%016llx", (unsigned long long)st.st_dev,
                      (unsigned long long)st.st_ino, (long long)st.st_ctim.tv_sec, (long)st.st_ctim.tv_nsec,
                      (unsigned long long)fnv1a(skip_base));
        if (r >= 0)
                r = ns_format(ret, size, "%s/%s", cache_dir, name);
        if (r < 0)
                return nano_error_set(e, r, "root skeleton in '%s': %m", cache_dir);

        cache_fd = open(cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cache_fd < 0 && errno == ENOENT) {
                if (mkdir(cache_dir, 0700) < 0 && errno != EEXIST)
                        return nano_error_set(e, errno, "create '%s': %m", cache_dir);
                cache_fd = open(cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (cache_fd < 0)
                return nano_error_set(e, errno, "open '%s': %m", cache_dir);
        if (fstatat(cache_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
                return 0;

        /* A change time of less than two seconds ago may be shared by the next change on a file
         * system with coarse times: such a layout is not settled enough to be kept. The caller
         * builds this root on a tmpfs; a later start makes the skeleton. */
        if (clock_gettime(CLOCK_REALTIME, &now) == 0 && now.tv_sec - st.st_ctim.tv_sec < 2 &&
            stat("/", &st) == 0 && now.tv_sec - st.st_ctim.tv_sec < 2)
                return nano_error_set(e, EAGAIN, "the host's '/' changed a moment ago");

        (void)!getrandom(&rnd, sizeof rnd, GRND_NONBLOCK);
        (void)ns_format(tmp, sizeof tmp, ".tmp-%ld-%016llx", (long)getpid(), (unsigned long long)rnd);
        if (mkdirat(cache_fd, tmp, 0755) < 0)
                return nano_error_set(e, errno, "create '%s/%s': %m", cache_dir, tmp);
        fd = openat(cache_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                r = nano_error_set(e, errno, "open '%s/%s': %m", cache_dir, tmp);
        else
                r = build(fd, skip_base, e);
        if (r >= 0 && renameat2(cache_fd, tmp, cache_fd, name, RENAME_NOREPLACE) < 0 && errno != EEXIST &&
            errno != ENOTEMPTY)
                r = nano_error_set(e, errno, "rename the root skeleton into '%s': %m", ret);
        /* Renamed, or another start made the same one meanwhile: then ours goes. */
        remove_tmp(cache_fd, tmp);
        return r < 0 ? r : 0;
}
