/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Imports an archive with libarchive: tar in any compression it reads (and the other formats it
 * knows), or a Debian .deb, whose data.tar.* member is read as a nested archive. Nothing is
 * extracted: member names are only ever used as paths inside the manifest, after normalisation
 * refuses absolute paths and "..". */
#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "import.h"
#include "util.h"

/* libarchive is opened on first use rather than linked: it brings libxml2, ICU, libstdc++ and half a
 * dozen compression libraries, about 3 ms of loading and relocation for every `nano` command
 * (nano run included) when only `nano store add` of an archive needs it. */
#define LIBARCHIVE_SONAME "libarchive.so.13"
#define ARCHIVE_SYMBOLS(X)                                                                              \
        X(archive_entry_filetype) X(archive_entry_hardlink) X(archive_entry_mtime)                      \
        X(archive_entry_mtime_is_set) X(archive_entry_mtime_nsec) X(archive_entry_pathname)             \
        X(archive_entry_perm) X(archive_entry_size) X(archive_entry_size_is_set)                        \
        X(archive_entry_symlink) X(archive_errno) X(archive_error_string) X(archive_format)             \
        X(archive_read_data) X(archive_read_free) X(archive_read_new) X(archive_read_next_header)       \
        X(archive_read_open) X(archive_read_open_filename) X(archive_read_support_filter_all)           \
        X(archive_read_support_format_all) X(archive_read_support_format_tar) X(archive_set_error)

#define DECLARE(f) __typeof__(f) *f;
static struct {
        ARCHIVE_SYMBOLS(DECLARE)
} la;
#undef DECLARE
static pthread_once_t la_once = PTHREAD_ONCE_INIT;
static char la_error[256];

static void la_load(void)
{
        void *h = dlopen(LIBARCHIVE_SONAME, RTLD_NOW | RTLD_LOCAL);

        if (!h)
                h = dlopen("libarchive.so", RTLD_NOW | RTLD_LOCAL);
        if (!h) {
                snprintf(la_error, sizeof la_error, "%s", dlerror());
                return;
        }
#define LOAD(f)                                                                                          \
        if (!(la.f = (__typeof__(f) *)dlsym(h, #f))) {                                                   \
                snprintf(la_error, sizeof la_error, "%s: no symbol '%s'", LIBARCHIVE_SONAME, #f);         \
                return;                                                                                  \
        }
        ARCHIVE_SYMBOLS(LOAD)
#undef LOAD
}

/* From here on, calls go through the table. */
#define REDIRECT(f) (*la.f)
#define archive_entry_filetype REDIRECT(archive_entry_filetype)
#define archive_entry_hardlink REDIRECT(archive_entry_hardlink)
#define archive_entry_mtime REDIRECT(archive_entry_mtime)
#define archive_entry_mtime_is_set REDIRECT(archive_entry_mtime_is_set)
#define archive_entry_mtime_nsec REDIRECT(archive_entry_mtime_nsec)
#define archive_entry_pathname REDIRECT(archive_entry_pathname)
#define archive_entry_perm REDIRECT(archive_entry_perm)
#define archive_entry_size REDIRECT(archive_entry_size)
#define archive_entry_size_is_set REDIRECT(archive_entry_size_is_set)
#define archive_entry_symlink REDIRECT(archive_entry_symlink)
#define archive_errno REDIRECT(archive_errno)
#define archive_error_string REDIRECT(archive_error_string)
#define archive_format REDIRECT(archive_format)
#define archive_read_data REDIRECT(archive_read_data)
#define archive_read_free REDIRECT(archive_read_free)
#define archive_read_new REDIRECT(archive_read_new)
#define archive_read_next_header REDIRECT(archive_read_next_header)
#define archive_read_open REDIRECT(archive_read_open)
#define archive_read_open_filename REDIRECT(archive_read_open_filename)
#define archive_read_support_filter_all REDIRECT(archive_read_support_filter_all)
#define archive_read_support_format_all REDIRECT(archive_read_support_format_all)
#define archive_read_support_format_tar REDIRECT(archive_read_support_format_tar)
#define archive_set_error REDIRECT(archive_set_error)

#define READ_BLOCK (64 * 1024)

typedef struct Source {
        Importer *imp;
        const char *file;   /* the archive's path, for messages */
        const char *member; /* "data.tar.xz: " inside a .deb, else "" */
        char display[NANO_PATH_MAX + 512];
} Source;

static void archive_freep(struct archive **a)
{
        if (*a)
                archive_read_free(*a);
}

static const char *archive_message(struct archive *a)
{
        const char *m = archive_error_string(a);
        /* libarchive has no message for some truncations (a gzip stream cut in its trailer). */
        return m ? m : "unexpected end of data";
}

static int corrupt(Source *src, struct archive *a)
{
        return nano_error_set(importer_error(src->imp), EBADMSG, "'%s': %struncated or corrupt archive: %s",
                              src->file, src->member, archive_message(a));
}

struct data_reader {
        Source *src;
        struct archive *a;
};

static ssize_t data_read(void *userdata, void *buf, size_t len)
{
        struct data_reader *dr = userdata;
        la_ssize_t n = archive_read_data(dr->a, buf, len);

        if (n < 0)
                return nano_error_set(importer_error(dr->src->imp), EBADMSG, "%s: cannot read its data: %s",
                                      dr->src->display, archive_message(dr->a));
        return n;
}

static uint32_t entry_mode(Source *src, struct archive_entry *e)
{
        unsigned perm = (unsigned)archive_entry_perm(e) & 07777;

        if (perm & 07000)
                importer_warn(src->imp, "%s: setuid, setgid and sticky bits are not stored (mode %04o stored as %04o)",
                              src->display, perm, perm & 0777);
        return perm & 0777;
}

/* Normalises an archive member's name into buf, refusing what would leave the tree. */
static int member_path(Source *src, const char *name, char *buf, size_t size)
{
        int r;

        if (!name)
                return nano_error_set(importer_error(src->imp), EBADMSG, "'%s': %sa member has no name", src->file,
                                      src->member);
        if (name[0] == '/')
                return nano_error_set(importer_error(src->imp), EINVAL,
                                      "'%s': %smember '%s' has an absolute path: refusing the archive", src->file,
                                      src->member, name);
        if (strlen(name) >= size)
                return nano_error_set(importer_error(src->imp), ENAMETOOLONG, "'%s': %smember '%.64s…' has a path longer than %u bytes",
                                      src->file, src->member, name, NANO_PATH_MAX);
        strcpy(buf, name);
        r = nano_path_normalize(buf);
        if (r < 0) {
                bool dotdot = streq(name, "..") || strncmp(name, "../", 3) == 0 || strstr(name, "/../") ||
                              (strlen(name) >= 3 && streq(name + strlen(name) - 3, "/.."));
                return nano_error_set(importer_error(src->imp), EINVAL, "'%s': %smember '%s' %s: refusing the archive",
                                      src->file, src->member, name,
                                      dotdot ? "has a '..' component" :
                                               "has a name longer than 255 bytes or a path deeper than 256 levels");
        }
        return 0;
}

static int import_entries(Source *src, struct archive *a)
{
        Importer *imp = src->imp;
        struct archive_entry *e;
        char path[NANO_PATH_MAX + 1], target[NANO_PATH_MAX + 1];
        uint64_t n_entries = 0;
        int r;

        for (;;) {
                r = archive_read_next_header(a, &e);
                if (r == ARCHIVE_EOF)
                        break;
                if (r < ARCHIVE_WARN)
                        return corrupt(src, a);
                r = member_path(src, archive_entry_pathname(e), path, sizeof path);
                if (r < 0)
                        return r;
                snprintf(src->display, sizeof src->display, "'%s': %smember '%s'", src->file, src->member,
                         archive_entry_pathname(e));
                /* display is already quoted: messages print it as is. */

                NanoEntry attrs = { 0 };
                attrs.mode = entry_mode(src, e);
                if (archive_entry_mtime_is_set(e)) {
                        attrs.mtime_sec = archive_entry_mtime(e);
                        attrs.mtime_nsec = (uint32_t)archive_entry_mtime_nsec(e);
                }

                const char *hardlink = archive_entry_hardlink(e);
                if (hardlink) {
                        r = member_path(src, hardlink, target, sizeof target);
                        if (r >= 0)
                                r = importer_add_link(imp, path, target, src->display);
                        if (r < 0)
                                return r;
                        n_entries++;
                        continue;
                }

                switch (archive_entry_filetype(e)) {
                case AE_IFREG: {
                        struct data_reader dr = { src, a };
                        int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
                        r = importer_add_stream(imp, path, src->display, data_read, &dr, size, &attrs);
                        break;
                }
                case AE_IFDIR:
                        attrs.type = NANO_ENTRY_DIRECTORY;
                        r = importer_add_entry(imp, path, src->display, &attrs);
                        break;
                case AE_IFLNK: {
                        const char *t = archive_entry_symlink(e);
                        if (!t || !*t || strlen(t) > NANO_SYMLINK_MAX)
                                return nano_error_set(importer_error(imp), EBADMSG,
                                                      "%s: symlink with an empty or too long target", src->display);
                        attrs.type = NANO_ENTRY_SYMLINK;
                        attrs.mode = 0777;
                        attrs.target = t;
                        r = importer_add_entry(imp, path, src->display, &attrs);
                        break;
                }
                default: {
                        unsigned t = archive_entry_filetype(e);
                        return nano_error_set(importer_error(imp), EINVAL,
                                              "%s is a %s: nano stores only regular files, directories and symlinks",
                                              src->display,
                                              t == AE_IFCHR || t == AE_IFBLK ? "device node" :
                                              t == AE_IFIFO                  ? "fifo" :
                                              t == AE_IFSOCK                 ? "socket" :
                                                                               "special file");
                }
                }
                if (r < 0)
                        return r;
                n_entries++;
        }
        if (n_entries == 0)
                return nano_error_set(importer_error(imp), EINVAL, "'%s': %sthe archive has no entries", src->file,
                                      src->member);
        return 0;
}

/* The nested archive of a .deb reads its bytes from the outer archive's current member. */
struct nested {
        struct archive *outer;
        uint8_t buf[READ_BLOCK];
};

static la_ssize_t nested_read(struct archive *a, void *userdata, const void **ret)
{
        struct nested *n = userdata;
        la_ssize_t r = archive_read_data(n->outer, n->buf, sizeof n->buf);

        if (r < 0) {
                archive_set_error(a, EIO, "%s", archive_message(n->outer));
                return -1;
        }
        *ret = n->buf;
        return r;
}

static int import_deb(Source *src, struct archive *outer)
{
        struct archive_entry *e;
        bool found = false;
        int r;

        for (;;) {
                r = archive_read_next_header(outer, &e);
                if (r == ARCHIVE_EOF)
                        break;
                if (r < ARCHIVE_WARN)
                        return corrupt(src, outer);
                const char *name = archive_entry_pathname(e);
                if (!name || strncmp(name, "data.tar", 8) != 0)
                        continue;
                if (found)
                        return nano_error_set(importer_error(src->imp), EBADMSG, "'%s': the .deb has two data members",
                                              src->file);
                found = true;

                _cleanup_(archive_freep) struct archive *inner = archive_read_new();
                _cleanup_free_ struct nested *n = malloc(sizeof *n);
                char member[64];
                if (!inner || !n)
                        return nano_error_set(importer_error(src->imp), ENOMEM, "out of memory");
                n->outer = outer;
                snprintf(member, sizeof member, "%.40s: ", name);
                src->member = member;
                archive_read_support_filter_all(inner);
                archive_read_support_format_tar(inner);
                if (archive_read_open(inner, n, NULL, nested_read, NULL) != ARCHIVE_OK)
                        r = corrupt(src, inner);
                else
                        r = import_entries(src, inner);
                src->member = "";
                if (r < 0)
                        return r;
        }
        if (!found)
                return nano_error_set(importer_error(src->imp), EBADMSG, "'%s': the .deb has no data.tar member",
                                      src->file);
        return 0;
}

int import_archive(Importer *imp, const char *source)
{
        (void)pthread_once(&la_once, la_load);
        if (la_error[0])
                return nano_error_set(importer_error(imp), ELIBACC, "cannot import '%s': cannot load libarchive: %s",
                                      source, la_error);

        _cleanup_(archive_freep) struct archive *a = archive_read_new();
        Source src = { .imp = imp, .file = source, .member = "" };
        struct archive_entry *e;
        NanoEntry root = { .type = NANO_ENTRY_DIRECTORY, .mode = 0755 };
        int r;

        if (!a)
                return nano_error_set(importer_error(imp), ENOMEM, "out of memory");
        archive_read_support_filter_all(a);
        archive_read_support_format_all(a);
        if (archive_read_open_filename(a, source, READ_BLOCK) != ARCHIVE_OK)
                return nano_error_set(importer_error(imp), archive_errno(a) > 0 ? archive_errno(a) : EBADMSG,
                                      "'%s' is not an archive nano can read: %s", source, archive_message(a));

        /* The root of an archive has no entry of its own unless it lists "./". */
        r = importer_add_entry(imp, "", "the archive's root", &root);
        if (r < 0)
                return r;

        /* A .deb is an ar archive whose first member is debian-binary. */
        r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
                return nano_error_set(importer_error(imp), EINVAL, "'%s': the archive has no entries", source);
        if (r < ARCHIVE_WARN)
                return corrupt(&src, a);
        if ((archive_format(a) & ARCHIVE_FORMAT_BASE_MASK) == ARCHIVE_FORMAT_AR &&
            streq(archive_entry_pathname(e), "debian-binary"))
                return import_deb(&src, a);

        /* Not a .deb: start again from the first member (libarchive cannot step back). */
        archive_read_free(a);
        a = archive_read_new();
        if (!a)
                return nano_error_set(importer_error(imp), ENOMEM, "out of memory");
        archive_read_support_filter_all(a);
        archive_read_support_format_all(a);
        if (archive_read_open_filename(a, source, READ_BLOCK) != ARCHIVE_OK)
                return nano_error_set(importer_error(imp), EBADMSG, "'%s': %s", source, archive_message(a));
        return import_entries(&src, a);
}
