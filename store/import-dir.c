/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Imports a directory tree. Everything is opened relative to its parent's fd with O_NOFOLLOW, so a
 * symlink in the tree is stored as a symlink and never followed, wherever it points. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "import.h"
#include "util.h"

typedef struct Walk {
        Importer *imp;
        const char *source;
        char path[NANO_PATH_MAX + NANO_NAME_MAX + 2]; /* relative path of the entry being imported */
        char *display;                                /* source + "/" + path, for messages */
        size_t display_size;
        struct HardLink {
                dev_t dev;
                ino_t ino;
                uint8_t digest[32];
                uint64_t size;
        } *links;
        size_t n_links, cap_links;
} Walk;

static const char *display(Walk *w)
{
        snprintf(w->display, w->display_size, "%s%s%s", w->source, w->path[0] ? "/" : "", w->path);
        return w->display;
}

/* The quoted form the importer's messages take. */
static const char *qdisplay(Walk *w)
{
        snprintf(w->display, w->display_size, "'%s%s%s'", w->source, w->path[0] ? "/" : "", w->path);
        return w->display;
}

static uint32_t attrs_mode(Walk *w, const struct stat *st)
{
        if (st->st_mode & 07000)
                importer_warn(w->imp, "'%s': setuid, setgid and sticky bits are not stored (mode %04o stored as %04o)",
                              display(w), (unsigned)(st->st_mode & 07777), (unsigned)(st->st_mode & 0777));
        return st->st_mode & 0777;
}

static void attrs_from_stat(Walk *w, const struct stat *st, NanoEntry *e)
{
        *e = (NanoEntry){ 0 };
        e->mode = attrs_mode(w, st);
        e->mtime_sec = st->st_mtim.tv_sec;
        e->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
}

static struct HardLink *link_find(Walk *w, const struct stat *st)
{
        for (size_t i = 0; i < w->n_links; i++)
                if (w->links[i].dev == st->st_dev && w->links[i].ino == st->st_ino)
                        return &w->links[i];
        return NULL;
}

static int import_file(Walk *w, int dirfd, const char *name, const struct stat *st)
{
        Importer *imp = w->imp;
        NanoEntry e;
        struct HardLink *hl = NULL;
        _cleanup_close_ int fd = -EBADF;
        struct stat fst;
        uint8_t digest[32];
        int r;

        attrs_from_stat(w, st, &e);
        if (st->st_nlink > 1 && (hl = link_find(w, st)) && (uint64_t)st->st_size == hl->size) {
                e.type = NANO_ENTRY_REGULAR;
                e.size = hl->size;
                memcpy(e.digest, hl->digest, 32);
                return importer_add_entry(imp, w->path, qdisplay(w), &e);
        }

        fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NOATIME);
        if (fd < 0 && errno == EPERM)
                fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return nano_error_set(importer_error(imp), errno, "cannot open '%s': %m", display(w));
        if (fstat(fd, &fst) < 0)
                return nano_error_set(importer_error(imp), errno, "cannot stat '%s': %m", display(w));
        if (!S_ISREG(fst.st_mode) || fst.st_ino != st->st_ino)
                return nano_error_set(importer_error(imp), EBUSY, "'%s' changed while it was being imported", display(w));
        /* Only a file larger than the default readahead window gains from a larger one. */
        if (fst.st_size > 128 << 10)
                (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

        r = importer_add_fd(imp, w->path, qdisplay(w), fd, (uint64_t)fst.st_size, &e, digest);
        if (r < 0)
                return r;

        /* Remember hard-linked files, so that their other names are not read again. */
        if (st->st_nlink > 1) {
                if (w->n_links == w->cap_links) {
                        size_t cap = w->cap_links ? w->cap_links * 2 : 64;
                        struct HardLink *l = reallocarray(w->links, cap, sizeof *l);
                        if (!l)
                                return nano_error_set(importer_error(imp), ENOMEM, "out of memory");
                        w->links = l;
                        w->cap_links = cap;
                }
                hl = &w->links[w->n_links++];
                hl->dev = st->st_dev;
                hl->ino = st->st_ino;
                hl->size = (uint64_t)fst.st_size;
                memcpy(hl->digest, digest, 32);
        }
        return 0;
}

static int walk_dir(Walk *w, int dirfd, unsigned depth);

static int import_one(Walk *w, int dirfd, const char *name, unsigned depth)
{
        Importer *imp = w->imp;
        size_t len = strlen(w->path), nlen = strlen(name);
        struct stat st;
        NanoEntry e;
        int r = 0;

        if (len + 1 + nlen > NANO_PATH_MAX)
                return nano_error_set(importer_error(imp), ENAMETOOLONG, "'%s/%s': path too long (more than %u bytes)",
                                      display(w), name, NANO_PATH_MAX);
        if (len)
                w->path[len++] = '/';
        memcpy(w->path + len, name, nlen + 1);

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                r = nano_error_set(importer_error(imp), errno, "cannot stat '%s': %m", display(w));
                goto out;
        }
        switch (st.st_mode & S_IFMT) {
        case S_IFREG:
                r = import_file(w, dirfd, name, &st);
                break;
        case S_IFDIR: {
                _cleanup_close_ int fd = -EBADF;
                if (depth >= NANO_PATH_DEPTH_MAX) {
                        r = nano_error_set(importer_error(imp), ELOOP, "'%s': directories nested deeper than %u levels",
                                           display(w), NANO_PATH_DEPTH_MAX);
                        break;
                }
                attrs_from_stat(w, &st, &e);
                e.type = NANO_ENTRY_DIRECTORY;
                r = importer_add_entry(imp, w->path, qdisplay(w), &e);
                if (r < 0)
                        break;
                fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0) {
                        r = nano_error_set(importer_error(imp), errno, "cannot open directory '%s': %m", display(w));
                        break;
                }
                r = walk_dir(w, fd, depth + 1);
                break;
        }
        case S_IFLNK: {
                char target[NANO_SYMLINK_MAX + 2];
                ssize_t n = readlinkat(dirfd, name, target, sizeof target);
                if (n < 0) {
                        r = nano_error_set(importer_error(imp), errno, "cannot read symlink '%s': %m", display(w));
                        break;
                }
                if ((size_t)n > NANO_SYMLINK_MAX) {
                        r = nano_error_set(importer_error(imp), ENAMETOOLONG, "symlink '%s': target longer than %u bytes",
                                           display(w), NANO_SYMLINK_MAX);
                        break;
                }
                target[n] = '\0';
                attrs_from_stat(w, &st, &e);
                e.mode = 0777;
                e.type = NANO_ENTRY_SYMLINK;
                e.target = target;
                r = importer_add_entry(imp, w->path, qdisplay(w), &e);
                break;
        }
        default:
                r = nano_error_set(importer_error(imp), EINVAL,
                                   "'%s' is a %s: nano stores only regular files, directories and symlinks", display(w),
                                   S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "device node" :
                                   S_ISFIFO(st.st_mode)                       ? "fifo" :
                                   S_ISSOCK(st.st_mode)                       ? "socket" :
                                                                                "special file");
        }
out:
        w->path[len ? len - 1 : 0] = '\0';
        return r;
}

static int walk_dir(Walk *w, int dirfd, unsigned depth)
{
        _cleanup_close_ int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (fd < 0 || !(d = fdopendir(fd)))
                return nano_error_set(importer_error(w->imp), errno, "cannot read directory '%s': %m", display(w));
        fd = -EBADF;
        for (;;) {
                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno)
                                r = nano_error_set(importer_error(w->imp), errno, "cannot read directory '%s': %m",
                                                   display(w));
                        break;
                }
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                r = import_one(w, dirfd, de->d_name, depth);
                if (r < 0)
                        break;
        }
        closedir(d);
        return r;
}

int import_directory(Importer *imp, const char *source)
{
        Walk w = { .imp = imp, .source = source };
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        NanoEntry e;
        int r;

        w.display_size = strlen(source) + sizeof w.path + 4;
        w.display = malloc(w.display_size);
        if (!w.display)
                return -ENOMEM;
        fd = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0) {
                r = nano_error_set(importer_error(imp), errno, "cannot open directory '%s': %m", source);
                goto out;
        }
        attrs_from_stat(&w, &st, &e);
        e.type = NANO_ENTRY_DIRECTORY;
        r = importer_add_entry(imp, "", qdisplay(&w), &e);
        if (r >= 0)
                r = walk_dir(&w, fd, 1);
out:
        free(w.display);
        free(w.links);
        return r;
}
