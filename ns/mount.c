/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The new root of an instance, built in our own mount namespace and entered with pivot_root(2).
 *
 * The new root is mounted over the staging directory (/tmp by default: it only hides it in our
 * namespace, and the instance gets a private /tmp anyway). Every source is opened as an O_PATH fd
 * before that mount, and mounted through /proc/self/fd/N: so a source under /tmp is still reachable,
 * and a symbolic link in a source path is resolved once, in the host's view. Mount points are
 * created component by component with O_NOFOLLOW, so that a symbolic link (in the release, or one of
 * ours) can never make us create a directory on the host.
 *
 * In ns mode the new root is a read-only bind of a root skeleton (skeleton.c) when the caller has one:
 * every mount point is there already, nothing is created. Else it is a tmpfs, filled here.
 *
 * No allocation: fixed buffers and raw getdents64, so this runs after fork() in any parent. */
#include "config.h"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "ns-internal.h"

#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#define NS_MOUNT_ATTR_RDONLY 0x1ULL
#define NS_MOUNT_ATTR_NOSUID 0x2ULL
#define NS_MOUNT_ATTR_NODEV  0x4ULL
#define NS_MOUNT_ATTR_NOEXEC 0x8ULL

/* struct mount_attr, ours: <linux/mount.h> and <sys/mount.h> do not mix on older libcs. */
struct ns_mount_attr {
        uint64_t attr_set;
        uint64_t attr_clr;
        uint64_t propagation;
        uint64_t userns_fd;
};

#define RO_ATTRS  (NS_MOUNT_ATTR_RDONLY | NS_MOUNT_ATTR_NOSUID | NS_MOUNT_ATTR_NODEV)
#define RW_ATTRS  (NS_MOUNT_ATTR_NOSUID | NS_MOUNT_ATTR_NODEV)
#define DEV_ATTRS (NS_MOUNT_ATTR_NOSUID | NS_MOUNT_ATTR_NOEXEC)

typedef struct Root {
        const NanoNsConfig *c;
        NanoError *e;
        char base[PATH_MAX]; /* where the new root is mounted, in the host's view */
        int base_fd;         /* the new root, once mounted */
        int host_root_fd;
        int store_fd, release_fd, instance_fd;
        int skel_fd; /* the root skeleton: the new root is its bind */
        int bind_fds[NANO_NS_MAX_BINDS];
        bool legacy; /* no mount_setattr(): remount each mount */
} Root;

static void root_done(Root *x)
{
        x->base_fd = safe_close(x->base_fd);
        x->host_root_fd = safe_close(x->host_root_fd);
        x->store_fd = safe_close(x->store_fd);
        x->release_fd = safe_close(x->release_fd);
        x->instance_fd = safe_close(x->instance_fd);
        x->skel_fd = safe_close(x->skel_fd);
        for (size_t i = 0; i < NANO_NS_MAX_BINDS; i++)
                x->bind_fds[i] = safe_close(x->bind_fds[i]);
}

/* "/proc/self/fd/N": a mount source or target that is exactly what fd N is. */
static const char *fd_path(char buf[static 32], int fd)
{
        snprintf(buf, 32, "/proc/self/fd/%d", fd);
        return buf;
}

/* The host path of an inside path: base + target. */
static int full_path(Root *x, const char *target, char *buf, size_t size)
{
        return ns_format(buf, size, "%s%s", x->base, streq(target, "/") ? "" : target);
}

/* Opens the mount point target (absolute, inside) for mounting, creating what is missing: directories
 * on the way, and a directory or an empty file at the end. No component may be a symbolic link. */
static int open_mount_point(Root *x, const char *target, bool dir, int *ret)
{
        _cleanup_close_ int cur = -EBADF;
        const char *p = target;
        char comp[NAME_MAX + 1];

        if (!target || target[0] != '/')
                return nano_error_set(x->e, EINVAL, "mount point '%s': not an absolute path",
                                      target ? target : "");
        cur = fcntl(x->base_fd, F_DUPFD_CLOEXEC, 3);
        if (cur < 0)
                return nano_error_set(x->e, errno, "mount point '%s': %m", target);

        for (;;) {
                size_t n;
                bool last;
                int next;

                while (*p == '/')
                        p++;
                n = strcspn(p, "/");
                if (n == 0)
                        return nano_error_set(x->e, EINVAL, "mount point '%s': not below '/'", target);
                if (n > NAME_MAX)
                        return nano_error_set(x->e, ENAMETOOLONG, "mount point '%s': %m", target);
                memcpy(comp, p, n);
                comp[n] = 0;
                p += n;
                while (*p == '/')
                        p++;
                last = *p == 0;
                if (streq(comp, ".") || streq(comp, ".."))
                        return nano_error_set(x->e, EINVAL, "mount point '%s': '.' or '..' in the path",
                                              target);

                if (!last || dir) {
                        if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST)
                                return nano_error_set(x->e, errno, "create the mount point '%s': %m",
                                                      target);
                        next = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                } else {
                        if (mknodat(cur, comp, S_IFREG | 0644, 0) < 0 && errno != EEXIST)
                                return nano_error_set(x->e, errno, "create the mount point '%s': %m",
                                                      target);
                        next = openat(cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                }
                if (next < 0) {
                        if (errno == ELOOP || errno == ENOTDIR)
                                return nano_error_set(x->e, errno,
                                                      "mount point '%s': %m (a symbolic link or a "
                                                      "file is in the way)",
                                                      target);
                        return nano_error_set(x->e, errno, "open the mount point '%s': %m", target);
                }
                safe_close(cur);
                cur = next;
                if (last)
                        break;
        }
        /* O_PATH | O_NOFOLLOW opens a symbolic link itself rather than failing: refuse it here. */
        if (!dir) {
                struct stat st;
                if (fstat(cur, &st) < 0)
                        return nano_error_set(x->e, errno, "mount point '%s': %m", target);
                if (S_ISLNK(st.st_mode))
                        return nano_error_set(
                                x->e, ELOOP, "mount point '%s': %m (a symbolic link is in the way)", target);
        }
        *ret = TAKE_FD(cur);
        return 0;
}

/* ---- Read-only, nosuid, nodev. */

/* The per-mount flags of a mountinfo options field ("rw,nosuid,relatime"): in a user namespace a
 * remount must keep those it cannot clear (they are locked), so keep them all. */
static unsigned long mount_flags_of(const char *opts)
{
        static const struct {
                const char *name;
                unsigned long flag;
        } table[] = {
                {"ro", MS_RDONLY},         {"nosuid", MS_NOSUID},   {"nodev", MS_NODEV},
                {"noexec", MS_NOEXEC},     {"noatime", MS_NOATIME}, {"nodiratime", MS_NODIRATIME},
                {"relatime", MS_RELATIME},
        };
        unsigned long flags = 0;

        while (*opts) {
                size_t n = strcspn(opts, ",");
                for (size_t i = 0; i < ELEMENTSOF(table); i++)
                        if (strlen(table[i].name) == n && memcmp(opts, table[i].name, n) == 0)
                                flags |= table[i].flag;
                opts += n;
                if (*opts == ',')
                        opts++;
        }
        return flags;
}

static unsigned long attrs_to_flags(uint64_t attrs)
{
        return ((attrs & NS_MOUNT_ATTR_RDONLY) ? MS_RDONLY : 0) |
               ((attrs & NS_MOUNT_ATTR_NOSUID) ? MS_NOSUID : 0) |
               ((attrs & NS_MOUNT_ATTR_NODEV) ? MS_NODEV : 0) |
               ((attrs & NS_MOUNT_ATTR_NOEXEC) ? MS_NOEXEC : 0);
}

/* The way before Linux 5.12: remount every mount at or below path, one by one, from mountinfo. */
static int remount_tree(Root *x, const char *path, const char *shown, uint64_t attrs)
{
        _cleanup_close_ int fd = -EBADF;
        size_t plen = strlen(path), have = 0;
        char buf[16384];
        bool eof = false;

        fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return nano_error_set(x->e, errno, "make '%s' read-only: open '/proc/self/mountinfo': %m",
                                      shown);

        for (;;) {
                char *nl, *f[6];
                size_t used;
                int nf = 0;

                nl = memchr(buf, '\n', have);
                if (!nl) {
                        ssize_t n;

                        if (eof)
                                return 0;
                        if (have >= sizeof buf - 1)
                                return nano_error_set(x->e, E2BIG,
                                                      "make '%s' read-only: a mountinfo line is too "
                                                      "long",
                                                      shown);
                        n = read(fd, buf + have, sizeof buf - 1 - have);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0)
                                return nano_error_set(x->e, errno, "make '%s' read-only: read mountinfo: %m",
                                                      shown);
                        if (n == 0)
                                eof = true;
                        have += (size_t)n;
                        continue;
                }
                *nl = 0;
                used = (size_t)(nl - buf) + 1;

                /* "36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/root rw": fields 5 and 6. */
                for (char *s = buf; nf < 6 && s && *s; nf++) {
                        f[nf] = s;
                        s = strchr(s, ' ');
                        if (s)
                                *s++ = 0;
                }
                if (nf == 6) {
                        ns_unescape_octal(f[4]);
                        if (strncmp(f[4], path, plen) == 0 && (f[4][plen] == 0 || f[4][plen] == '/')) {
                                unsigned long flags =
                                        MS_REMOUNT | MS_BIND | mount_flags_of(f[5]) | attrs_to_flags(attrs);
                                if (mount(NULL, f[4], NULL, flags, NULL) < 0)
                                        return nano_error_set(x->e, errno, "remount '%s%s' read-only: %m",
                                                              shown, f[4] + plen);
                        }
                }
                memmove(buf, buf + used, have - used);
                have -= used;
        }
}

/* Sets attrs on target and every mount below it. */
static int set_attrs(Root *x, const char *target, uint64_t attrs)
{
        struct ns_mount_attr a = {.attr_set = attrs};
        char path[PATH_MAX];
        int r;

        r = full_path(x, target, path, sizeof path);
        if (r < 0)
                return nano_error_set(x->e, r, "mount '%s': %m", target);
        if (!x->legacy) {
                if (syscall(__NR_mount_setattr, AT_FDCWD, path, AT_RECURSIVE | AT_SYMLINK_NOFOLLOW, &a,
                            sizeof a) == 0)
                        return 0;
                if (errno != ENOSYS)
                        return nano_error_set(x->e, errno, "make '%s' read-only (mount_setattr): %m",
                                              target);
                x->legacy = true;
        }
        return remount_tree(x, path, target, attrs);
}

/* Binds src_fd (with what is mounted below it) on target, then applies attrs to the whole tree. */
static int bind_fd(Root *x, int src_fd, const char *shown_src, const char *target, uint64_t attrs)
{
        _cleanup_close_ int mp = -EBADF;
        char s[32], t[32];
        struct stat st;
        int r;

        if (fstat(src_fd, &st) < 0)
                return nano_error_set(x->e, errno, "stat '%s': %m", shown_src);
        r = open_mount_point(x, target, S_ISDIR(st.st_mode), &mp);
        if (r < 0)
                return r;
        if (mount(fd_path(s, src_fd), fd_path(t, mp), NULL, MS_BIND | MS_REC, NULL) < 0)
                return nano_error_set(x->e, errno, "mount '%s' (bind of '%s'): %m", target, shown_src);
        return attrs ? set_attrs(x, target, attrs) : 0;
}

static int bind_path(Root *x, const char *src, const char *target, uint64_t attrs, bool optional)
{
        _cleanup_close_ int fd = -EBADF;

        fd = open(src, O_PATH | O_CLOEXEC);
        if (fd < 0) {
                if (optional && errno == ENOENT)
                        return 0;
                return nano_error_set(x->e, errno, "mount '%s': open '%s': %m", target, src);
        }
        return bind_fd(x, fd, src, target, attrs);
}

/* Mounts a new fstype on target. quiet: a failed mount(2) returns -errno without recording it, for
 * callers with a fallback or a better message (a failure to create the mount point is recorded). */
static int mount_fs(Root *x, const char *fstype, const char *target, unsigned long flags, const char *data,
                    bool quiet)
{
        _cleanup_close_ int mp = -EBADF;
        char t[32];
        int r;

        r = open_mount_point(x, target, true, &mp);
        if (r < 0)
                return r;
        if (mount(fstype, fd_path(t, mp), fstype, flags, data) < 0) {
                if (quiet)
                        return -errno;
                return nano_error_set(x->e, errno, "mount '%s' (%s): %m", target, fstype);
        }
        return 0;
}

/* Remounts the single mount at target (not those below) with flags. */
static int remount_one(Root *x, const char *target, unsigned long flags)
{
        char path[PATH_MAX];
        int r;

        r = full_path(x, target, path, sizeof path);
        if (r < 0)
                return nano_error_set(x->e, r, "remount '%s': %m", target);
        if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
                return nano_error_set(x->e, errno, "remount '%s' read-only: %m", target);
        return 0;
}

struct linux_dirent64 {
        uint64_t d_ino;
        int64_t d_off;
        unsigned short d_reclen;
        unsigned char d_type;
        char d_name[];
};

/* ns mode: everything mounted in the new root so far becomes read-only, nosuid and nodev, in one
 * recursive mount_setattr() rather than one per bind (about twenty: the host's top level). A root
 * tmpfs then gets its write access back, for the mount points still to come; step 5 takes it away
 * for good. A skeleton's bind stays read-only: its mount points are all there. Without
 * mount_setattr(), each top-level entry's tree is remounted by path: the root's own path would also
 * match the host's mounts that our root hides (under the staging dir). */
static int root_read_only(Root *x)
{
        struct ns_mount_attr a = {.attr_set = RO_ATTRS};
        uint8_t buf[8192] __attribute__((aligned(8)));
        _cleanup_close_ int dfd = -EBADF;
        int r;

        if (!x->legacy) {
                if (syscall(__NR_mount_setattr, x->base_fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof a) == 0)
                        return x->skel_fd >= 0 ? 0 : remount_one(x, "/", MS_NOSUID | MS_NODEV);
                if (errno != ENOSYS)
                        return nano_error_set(x->e, errno, "make '/' read-only (mount_setattr): %m");
                x->legacy = true;
        }

        dfd = openat(x->base_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return nano_error_set(x->e, errno, "read the new root: %m");
        for (;;) {
                long got = syscall(SYS_getdents64, dfd, buf, sizeof buf);
                if (got < 0)
                        return nano_error_set(x->e, errno, "read the new root: %m");
                if (got == 0)
                        return 0;
                for (long off = 0; off < got;) {
                        struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
                        char target[NAME_MAX + 2];

                        off += d->d_reclen;
                        if (streq(d->d_name, ".") || streq(d->d_name, "..") || d->d_type == DT_LNK)
                                continue;
                        (void)ns_format(target, sizeof target, "/%s", d->d_name);
                        r = set_attrs(x, target, RO_ATTRS);
                        if (r < 0)
                                return r;
                }
        }
}

/* ---- The pieces. */

/* ns mode: every top-level entry of the host, read-only, but for what the instance gets its own of.
 * With a skeleton, its entries are the list (made from the host's top level) and the mount points;
 * else the host's root is read and each mount point made in the tmpfs. */
static int bind_host_top_level(Root *x)
{
        char skip_base[NAME_MAX + 1];
        uint8_t buf[8192] __attribute__((aligned(8)));
        _cleanup_close_ int skel_dir = -EBADF;
        size_t n = strcspn(x->base + 1, "/");
        bool skel = x->skel_fd >= 0;
        int r, list_fd;

        /* The staging dir's top level holds our new root: binding it would nest the root in itself. */
        if (n > NAME_MAX)
                n = NAME_MAX;
        memcpy(skip_base, x->base + 1, n);
        skip_base[n] = 0;

        if (skel) {
                skel_dir = openat(x->base_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (skel_dir < 0)
                        return nano_error_set(x->e, errno, "read the root skeleton: %m");
                list_fd = skel_dir;
        } else {
                if (lseek(x->host_root_fd, 0, SEEK_SET) < 0)
                        return nano_error_set(x->e, errno, "read '/': %m");
                list_fd = x->host_root_fd;
        }
        for (;;) {
                long got = syscall(SYS_getdents64, list_fd, buf, sizeof buf);
                if (got < 0)
                        return nano_error_set(x->e, errno, "read '%s': %m", skel ? "the root skeleton" : "/");
                if (got == 0)
                        return 0;
                for (long off = 0; off < got;) {
                        struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
                        const char *name = d->d_name;
                        unsigned char type = d->d_type;
                        char target[NAME_MAX + 2], t[PATH_MAX];

                        off += d->d_reclen;
                        if (ns_root_skips(name, skip_base))
                                continue;
                        if (type == DT_UNKNOWN) {
                                struct stat st;
                                if (fstatat(list_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                        continue;
                                type = S_ISDIR(st.st_mode)   ? DT_DIR
                                       : S_ISLNK(st.st_mode) ? DT_LNK
                                       : S_ISREG(st.st_mode) ? DT_REG
                                                             : DT_UNKNOWN;
                        }
                        (void)ns_format(target, sizeof target, "/%s", name);

                        if (type == DT_LNK && !skel) {
                                /* /bin -> usr/bin on merged-/usr systems: the same link, not a bind. */
                                char link[PATH_MAX];
                                ssize_t l = readlinkat(x->host_root_fd, name, link, sizeof link - 1);
                                if (l < 0)
                                        return nano_error_set(x->e, errno, "read the link '%s': %m", target);
                                link[l] = 0;
                                if (symlinkat(link, x->base_fd, name) < 0 && errno != EEXIST)
                                        return nano_error_set(x->e, errno, "create the link '%s': %m",
                                                              target);
                                continue;
                        }
                        if (type != DT_DIR && type != DT_REG)
                                continue;
                        /* A name of one component in the tmpfs we just mounted, where nothing but our
                         * own entries exist: no walk of the path is needed to make its mount point
                         * safely (open_mount_point() is for deeper targets); in a skeleton it is
                         * there. The source by its path, not through an O_PATH fd and /proc/self/fd
                         * (~5 us each, twenty times): one component of the host's root, which only root
                         * can change, and not under the staging dir (skipped above). Made read-only
                         * later, with all the others in one call (root_read_only()). */
                        if (!skel && (type == DT_DIR ? mkdirat(x->base_fd, name, 0755)
                                                     : mknodat(x->base_fd, name, S_IFREG | 0644, 0)) < 0)
                                return nano_error_set(x->e, errno, "create the mount point '%s': %m", target);
                        r = full_path(x, target, t, sizeof t);
                        if (r < 0)
                                return nano_error_set(x->e, r, "mount '%s': %m", target);
                        if (mount(target, t, NULL, MS_BIND | MS_REC, NULL) < 0) {
                                if (errno == ENOENT) /* gone meanwhile */
                                        continue;
                                return nano_error_set(x->e, errno, "mount '%s' (bind of '%s'): %m", target,
                                                      target);
                        }
                }
        }
}

static int setup_dev(Root *x)
{
        _cleanup_close_ int dev = -EBADF;
        bool skel = x->skel_fd >= 0;
        int r;

        if (x->c->flags & NANO_NS_HOST_DEV)
                return bind_path(x, "/dev", "/dev", DEV_ATTRS, false);

        /* A skeleton's /dev is a directory of the read-only root, mount points and links made:
         * nothing gets created in it. Else a tmpfs, filled here and then made read-only. */
        if (!skel) {
                r = mount_fs(x, "tmpfs", "/dev", MS_NOSUID | MS_NOEXEC, "mode=0755", false);
                if (r < 0)
                        return r;
                r = open_mount_point(x, "/dev", true, &dev);
                if (r < 0)
                        return r;
        }

        /* mknod is not allowed in a user namespace: the device nodes are binds of the host's, made
         * nosuid and noexec (together on a /dev tmpfs, one by one in a skeleton), before devpts and
         * /dev/shm, which have flags of their own. The mount point is an empty file in our new /dev
         * (one component: nothing to walk), the source the host's node by its path (as for the host's
         * top level: only root changes /dev). */
        for (const char *const *n = ns_dev_nodes; *n; n++) {
                char src[32], target[32], t[PATH_MAX];
                struct stat st;

                (void)ns_format(src, sizeof src, "/dev/%s", *n);
                (void)ns_format(target, sizeof target, "/dev/%s", *n);
                if (stat(src, &st) < 0) {
                        if (errno == ENOENT) /* a host without it: so be it */
                                continue;
                        return nano_error_set(x->e, errno, "mount '%s': stat '%s': %m", target, src);
                }
                if (!skel && mknodat(dev, *n, S_IFREG | 0644, 0) < 0)
                        return nano_error_set(x->e, errno, "create the mount point '%s': %m", target);
                r = full_path(x, target, t, sizeof t);
                if (r < 0)
                        return nano_error_set(x->e, r, "mount '%s': %m", target);
                if (mount(src, t, NULL, MS_BIND, NULL) < 0)
                        return nano_error_set(x->e, errno, "mount '%s' (bind of '%s'): %m", target, src);
                if (skel) {
                        r = set_attrs(x, target, DEV_ATTRS);
                        if (r < 0)
                                return r;
                }
        }
        if (!skel) {
                r = set_attrs(x, "/dev", DEV_ATTRS);
                if (r < 0)
                        return r;
        }

        /* Our own devpts instance: the instance's ptys are not the host's. Where that is refused
         * (an old kernel in a user namespace), the host's. */
        r = mount_fs(x, "devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620",
                     true);
        if (r < 0) {
                if (x->e && x->e->error)
                        return r;
                r = bind_path(x, "/dev/pts", "/dev/pts", DEV_ATTRS, true);
                if (r < 0)
                        return r;
        }
        r = mount_fs(x, "tmpfs", "/dev/shm", MS_NOSUID | MS_NODEV, "mode=1777", false);
        if (r < 0)
                return r;

        if (skel)
                return 0;
        for (const NsDevLink *l = ns_dev_links; l->name; l++)
                if (symlinkat(l->target, dev, l->name) < 0 && errno != EEXIST)
                        return nano_error_set(x->e, errno, "create the link '/dev/%s': %m", l->name);

        /* Nothing else gets created in /dev. */
        return remount_one(x, "/dev", MS_RDONLY | MS_NOSUID | MS_NOEXEC);
}

static int setup_proc(Root *x)
{
        int r;

        if (!(x->c->flags & NANO_NS_PID))
                return bind_path(x, "/proc", "/proc", 0, false);

        r = mount_fs(x, "proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, true);
        if (r < 0 && x->e && x->e->error)
                return r;
        if (r == -EPERM || r == -EACCES)
                return nano_error_set(x->e, r,
                                      "mount '/proc': %m (with a pid namespace, set up the root in the "
                                      "child forked after unshare; or the host's /proc is partly hidden)");
        if (r < 0)
                return nano_error_set(x->e, r, "mount '/proc': %m");
        return 0;
}

static int open_source(Root *x, const char *path, const char *target, int *ret)
{
        int fd;

        if (!path) {
                *ret = -EBADF;
                return 0;
        }
        fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0)
                return nano_error_set(x->e, errno, "mount '%s': open '%s': %m", target, path);
        *ret = fd;
        return 0;
}

int nano_ns_setup_root(const NanoNsConfig *c, NanoError *e)
{
        _cleanup_(root_done) Root x = {
                .c = c,
                .e = e,
                .base_fd = -EBADF,
                .host_root_fd = -EBADF,
                .store_fd = -EBADF,
                .release_fd = -EBADF,
                .instance_fd = -EBADF,
                .skel_fd = -EBADF,
                .legacy = c && (c->flags & NANO_NS_LEGACY_REMOUNT),
        };
        const char *staging;
        char t[32];
        int r;

        for (size_t i = 0; i < NANO_NS_MAX_BINDS; i++)
                x.bind_fds[i] = -EBADF;

        if (!c || (c->mode != NANO_ISOLATE_NS && c->mode != NANO_ISOLATE_ROOTFS))
                return nano_error_set(e, EINVAL, "new root: no config, or the bare mode");
        if (c->mode == NANO_ISOLATE_ROOTFS && !c->release_dir)
                return nano_error_set(e, EINVAL, "new root: the rootfs mode needs a release directory");
        if (c->n_binds > NANO_NS_MAX_BINDS)
                return nano_error_set(e, E2BIG, "new root: more than %d binds", NANO_NS_MAX_BINDS);

        /* 1. Everything we will mount from, opened while the host's tree is all in view. */
        x.host_root_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (x.host_root_fd < 0)
                return nano_error_set(e, errno, "open '/': %m");
        r = open_source(&x, c->store_dir, "/nano/store", &x.store_fd);
        if (r >= 0)
                r = open_source(&x, c->release_dir, c->mode == NANO_ISOLATE_ROOTFS ? "/" : "/nano/release",
                                &x.release_fd);
        if (r >= 0)
                r = open_source(&x, c->instance_dir, "/nano/instance", &x.instance_fd);
        for (size_t i = 0; r >= 0 && i < c->n_binds; i++)
                r = open_source(&x, c->binds[i].source, c->binds[i].target ? c->binds[i].target : "?",
                                &x.bind_fds[i]);
        /* A skeleton has the mount points of the ns root, not those binds or hide may need. */
        if (r >= 0 && c->mode == NANO_ISOLATE_NS && c->skeleton && c->n_binds == 0 &&
            !(c->hide && *c->hide)) {
                x.skel_fd = open(c->skeleton, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (x.skel_fd < 0)
                        r = nano_error_set(e, errno, "open the root skeleton '%s': %m", c->skeleton);
        }
        if (r < 0)
                return r;

        staging = c->staging_dir ? c->staging_dir : "/tmp";
        if (!realpath(staging, x.base))
                return nano_error_set(e, errno, "staging directory '%s': %m", staging);
        if (streq(x.base, "/"))
                return nano_error_set(e, EINVAL, "staging directory '%s': cannot be '/'", staging);

        /* 2. Mount events of the host still reach us (a store mounted later), ours never reach it. */
        if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
                return nano_error_set(e, errno, "make the mounts of '/' slaves: %m");

        /* 3. The new root. */
        if (x.skel_fd >= 0) {
                if (mount(fd_path(t, x.skel_fd), x.base, NULL, MS_BIND, NULL) < 0)
                        return nano_error_set(e, errno, "mount '/' (bind of '%s'): %m", c->skeleton);
        } else if (c->mode == NANO_ISOLATE_NS) {
                if (mount("tmpfs", x.base, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
                        return nano_error_set(e, errno, "mount '/' (tmpfs on '%s'): %m", x.base);
        } else {
                if (mount(fd_path(t, x.release_fd), x.base, NULL, MS_BIND | MS_REC, NULL) < 0)
                        return nano_error_set(e, errno, "mount '/' (bind of '%s'): %m", c->release_dir);
                r = set_attrs(&x, "/", RO_ATTRS);
                if (r < 0)
                        return r;
        }
        x.base_fd = open(x.base, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (x.base_fd < 0)
                return nano_error_set(e, errno, "open the new root '%s': %m", x.base);

        /* 4. What goes in it: first the read-only part, the host's top level, the store and the
         * release, bound as they are and then made read-only, nosuid and nodev all at once. */
        if (c->mode == NANO_ISOLATE_NS) {
                r = bind_host_top_level(&x);
                if (r < 0)
                        return r;
                /* The host's trees, private: a mount made on the host later (a USB disk, an sshfs
                 * in $HOME) would come in with its own flags, writable. The store and the release,
                 * bound next from slaves of the host's mounts, stay slaves. */
                if (mount(NULL, x.base, NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                        return nano_error_set(e, errno, "make the host's mounts private: %m");
                if (x.store_fd >= 0) {
                        r = bind_fd(&x, x.store_fd, c->store_dir, "/nano/store", 0);
                        if (r < 0)
                                return r;
                }
                if (x.release_fd >= 0) {
                        r = bind_fd(&x, x.release_fd, c->release_dir, "/nano/release", 0);
                        if (r < 0)
                                return r;
                }
                r = root_read_only(&x);
                if (r < 0)
                        return r;
        }
        if (x.instance_fd >= 0) {
                r = bind_fd(&x, x.instance_fd, c->instance_dir, "/nano/instance", RW_ATTRS);
                if (r < 0)
                        return r;
        }
        r = mount_fs(&x, "tmpfs", "/tmp", MS_NOSUID | MS_NODEV, "mode=1777", false);
        if (r < 0)
                return r;
        r = setup_dev(&x);
        if (r < 0)
                return r;
        r = setup_proc(&x);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_binds; i++) {
                r = bind_fd(&x, x.bind_fds[i], c->binds[i].source, c->binds[i].target,
                            c->binds[i].read_only ? RO_ATTRS : RW_ATTRS);
                if (r < 0)
                        return r;
        }
        for (const char *const *h = c->hide; h && *h; h++) {
                r = mount_fs(&x, "tmpfs", *h, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755",
                             false);
                if (r < 0)
                        return r;
        }

        /* 5. The tmpfs root itself: no new top-level entries (a skeleton's bind is read-only already,
         * but with the legacy remounts, which do not reach the root). */
        if (c->mode == NANO_ISOLATE_NS && (x.skel_fd < 0 || x.legacy)) {
                r = remount_one(&x, "/", MS_RDONLY | MS_NOSUID | MS_NODEV);
                if (r < 0)
                        return r;
        }

        /* 6. Enter it. pivot_root(".", ".") stacks the old root on the new one; detaching it then
         * leaves nothing of the host but what we bound. */
        if (chdir(x.base) < 0)
                return nano_error_set(e, errno, "chdir '%s': %m", x.base);
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return nano_error_set(e, errno, "pivot_root '%s': %m", x.base);
        if (umount2(".", MNT_DETACH) < 0)
                return nano_error_set(e, errno, "detach the old root: %m");
        if (chdir("/") < 0)
                return nano_error_set(e, errno, "chdir '/': %m");
        if (c->workdir && chdir(c->workdir) < 0)
                return nano_error_set(e, errno, "chdir '%s': %m", c->workdir);
        return 0;
}
