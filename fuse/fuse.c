/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The read-only FUSE filesystem over the store: the low-level request handlers, the session and the
 * multi-threaded loop. doc/mount.md describes the namespace, the inode model and the caches.
 *
 * Every request is answered, and none waits on anything unbounded: the handlers read local files,
 * decompress one chunk at a time and hold a mutex only for a hash probe. Nothing is logged per
 * request above debug; broken objects and manifests are logged once each. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <xxhash.h>
#ifdef __linux__
#include <sys/inotify.h>
#endif

#include "fuse-internal.h"
#include "log.h"
#include "util.h"

/* The listing of the root, a name directory or by-id, read from the refs for one readdir request. */
typedef struct DirSnapshot {
        size_t n;
        struct {
                char *name;
                uint64_t ino;
                unsigned type; /* DT_* */
        } e[];
} DirSnapshot;

static NanoFuse *req_fs(fuse_req_t req)
{
        return fuse_req_userdata(req);
}

/* ---- Logging: libfuse's messages go through ours, and the last error is kept for the caller. */

static _Thread_local char last_error[512];

const char *nano_fuse_last_error(void)
{
        return last_error;
}

static void fuse_log_func(enum fuse_log_level level, const char *fmt, va_list ap)
{
        char buf[1024];
        size_t n;
        int l;

        vsnprintf(buf, sizeof buf, fmt, ap);
        n = strlen(buf);
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        switch (level) {
        case FUSE_LOG_EMERG:
        case FUSE_LOG_ALERT:
        case FUSE_LOG_CRIT:
        case FUSE_LOG_ERR:
                l = LOG_LEVEL_ERROR;
                snprintf(last_error, sizeof last_error, "%s", buf);
                break;
        case FUSE_LOG_WARNING:
                l = LOG_LEVEL_WARNING;
                break;
        case FUSE_LOG_NOTICE:
                l = LOG_LEVEL_NOTICE;
                break;
        case FUSE_LOG_INFO:
                l = LOG_LEVEL_INFO;
                break;
        default:
                l = LOG_LEVEL_DEBUG;
                break;
        }
        log_full(l, "%s", buf);
}

/* True the first time for id: broken manifests and objects are reported once, not per request. */
static bool first_report(NanoFuse *f, const uint8_t id[32])
{
        int r;

        pthread_mutex_lock(&f->lock);
        r = digest_set_add(&f->logged, id);
        pthread_mutex_unlock(&f->lock);
        return r != 0; /* added, or out of memory: better a repeated line than none */
}

/* "'usr/lib/x.so' in py@1", or "" when the file was never seen in a tree. */
static void describe_file(const Node *n, char *buf, size_t size)
{
        char path[NANO_PATH_MAX + 1];

        if (!n->tree || nano_manifest_path(n->tree->mnf->m, n->idx, path, sizeof path) < 0) {
                buf[0] = '\0';
                return;
        }
        snprintf(buf, size, " ('%s' in %s)", path, n->tree->view);
}

static void report_object(NanoFuse *f, Node *n, int error, const char *what)
{
        char id[NANO_ID_STRING_SIZE], where[NANO_PATH_MAX + 2 * NANO_RELEASE_NAME_MAX + 32];

        if (atomic_exchange(&n->corrupt_logged, true) || !first_report(f, n->digest))
                return;
        describe_file(n, where, sizeof where);
        log_error_errno(error, "object %s%s %s (%m); run 'nano store fsck'", nano_id_format(n->digest, id),
                        where, what);
}

static void report_manifest(NanoFuse *f, const uint8_t mid[32], const char *view, int error)
{
        char id[NANO_ID_STRING_SIZE];

        if (!first_report(f, mid))
                return;
        log_error_errno(error, "manifest %s of %s %s: it is hidden from the mount; run 'nano store fsck'",
                        nano_id_format(mid, id), view,
                        error == -ENOENT    ? "is missing"
                        : error == -EBADMSG ? "is corrupt"
                                            : "cannot be opened: %m");
}

static void report_by_id_hidden(NanoFuse *f)
{
        if (atomic_exchange(&f->by_id_logged, true))
                return;
        log_warning("release name 'by-id' is hidden by the by-id view: its releases are reachable only as "
                    "/by-id/sha256:<id>; add them again under another name and remove them ('nano store rm')");
}

/* ---- Entries. */

static void entry_fill(const struct stat *st, double entry_timeout, double attr_timeout,
                       struct fuse_entry_param *e)
{
        *e = (struct fuse_entry_param){
                .ino = st->st_ino,
                .generation = 1,
                .attr = *st,
                .attr_timeout = attr_timeout,
                .entry_timeout = entry_timeout,
        };
}

static int listing_stat(NanoFuse *f, Node *n, struct stat *st);

/* node_stat(), and for the root, name and by-id directories the mtime of their listing. */
static int stat_for_kernel(NanoFuse *f, Node *n, struct stat *st)
{
        int r = node_stat(f, n, st);
        if (r >= 0 && (n->kind == NODE_ROOT || n->kind == NODE_NAME || n->kind == NODE_BY_ID))
                r = listing_stat(f, n, st);
        return r;
}

/* Replies with n's entry; gives the kernel's reference back if the reply did not reach it. */
static void reply_entry(fuse_req_t req, NanoFuse *f, Node *n, double entry_timeout)
{
        struct fuse_entry_param e;
        struct stat st;
        int r = stat_for_kernel(f, n, &st);

        if (r < 0) {
                node_unref(f, n, 1);
                fuse_reply_err(req, -r);
                return;
        }
        entry_fill(&st, entry_timeout, node_attr_timeout(n), &e);
        if (fuse_reply_entry(req, &e) != 0)
                node_unref(f, n, 1);
}

/* A tree's root, for /<name>/<version> and /by-id/<id>. */
static void lookup_tree_root(fuse_req_t req, NanoFuse *f, const char *view, const uint8_t id[32], bool by_id)
{
        Tree *t;
        Node *n;
        int r;

        if (by_id) {
                char path[NANO_FANOUT_PATH_SIZE];
                /* The tree may be cached from an earlier lookup, and gc may have removed the manifest
                 * since: an id is there only while the store has it. */
                nano_fanout_path(id, path);
                if (faccessat(f->store->manifests_fd, path, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
                        fuse_reply_err(req, ENOENT);
                        return;
                }
        }
        r = tree_get(f, view, id, &t);
        if (r < 0) {
                /* A ref naming a missing manifest is a broken store; an absent id is only absent. */
                if (r != -ENOENT || !by_id)
                        report_manifest(f, id, view, r);
                fuse_reply_err(req, r == -ENOMEM ? ENOMEM : ENOENT);
                return;
        }
        r = node_get_entry(f, t, 0, &n);
        tree_unref(f, t);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* The entry may go (release removed): short; the inode itself never changes. */
        reply_entry(req, f, n, TIMEOUT_VOLATILE);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        NanoFuse *f = req_fs(req);
        Node *p = node_by_ino(f, parent), *n;
        uint8_t id[32];
        uint32_t idx;
        int r;

        if (!p) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        switch (p->kind) {
        case NODE_ROOT:
                if (streq(name, "by-id")) {
                        node_ref_static(f, f->by_id);
                        reply_entry(req, f, f->by_id, TIMEOUT_IMMUTABLE);
                        return;
                }
                struct stat st;
                r = name_dir_stat(f, name, &st);
                if (r < 0) {
                        /* Negative timeout 0: a release added a moment later must be found. */
                        fuse_reply_err(req, ENOENT);
                        return;
                }
                r = node_get_name(f, name, &n);
                if (r < 0) {
                        fuse_reply_err(req, -r);
                        return;
                }
                reply_entry(req, f, n, TIMEOUT_VOLATILE);
                return;

        case NODE_NAME: {
                char view[2 * NANO_RELEASE_NAME_MAX + 2];
                r = nano_ref_read(f->store, p->name, name, id);
                if (r < 0) {
                        fuse_reply_err(req, r == -ENOMEM ? ENOMEM : ENOENT);
                        return;
                }
                snprintf(view, sizeof view, "%s@%s", p->name, name);
                lookup_tree_root(req, f, view, id, false);
                return;
        }

        case NODE_BY_ID:
                if (nano_id_parse(name, id) < 0) {
                        fuse_reply_err(req, ENOENT);
                        return;
                }
                lookup_tree_root(req, f, name, id, true);
                return;

        case NODE_DIR: {
                const NanoManifest *m = node_manifest(p);
                r = nano_manifest_lookup(m, p->idx, name, strlen(name), &idx);
                if (r < 0) {
                        /* A release never changes: the kernel may remember that this name is absent. */
                        struct fuse_entry_param e = { .ino = 0, .entry_timeout = TIMEOUT_IMMUTABLE };
                        if (r == -ENOENT)
                                fuse_reply_entry(req, &e);
                        else
                                fuse_reply_err(req, -r);
                        return;
                }
                r = node_get_entry(f, p->tree, idx, &n);
                if (r < 0) {
                        fuse_reply_err(req, -r);
                        return;
                }
                reply_entry(req, f, n, TIMEOUT_IMMUTABLE);
                return;
        }

        default:
                fuse_reply_err(req, ENOTDIR);
        }
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
        NanoFuse *f = req_fs(req);
        Node *n = node_by_ino(f, ino);

        if (n)
                node_unref(f, n, nlookup);
        fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
        NanoFuse *f = req_fs(req);

        /* One lock for the whole batch: the kernel sends these by the hundred under memory pressure. */
        pthread_mutex_lock(&f->lock);
        for (size_t i = 0; i < count; i++) {
                HashLink *l = hash_table_first(&f->nodes_by_ino, forgets[i].ino);
                if (l)
                        node_unref_locked(f, container_of(l, Node, by_ino), forgets[i].nlookup);
        }
        pthread_mutex_unlock(&f->lock);
        fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        NanoFuse *f = req_fs(req);
        Node *n = node_by_ino(f, ino);
        struct stat st;
        int r;

        if (!n) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        r = stat_for_kernel(f, n, &st);
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_attr(req, &st, node_attr_timeout(n));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
        NanoFuse *f = req_fs(req);
        Node *n = node_by_ino(f, ino);
        char target[NANO_SYMLINK_MAX + 1];
        NanoEntry e;

        if (!n || n->kind != NODE_SYMLINK) {
                fuse_reply_err(req, n ? EINVAL : ESTALE);
                return;
        }
        nano_manifest_entry(node_manifest(n), n->idx, &e);
        memcpy(target, e.target, e.size); /* size <= NANO_SYMLINK_MAX: the parser checked */
        target[e.size] = '\0';
        fuse_reply_readlink(req, target);
}

/* ---- Directories. */

static DirSnapshot *snapshot_free(DirSnapshot *d)
{
        if (!d)
                return NULL;
        for (size_t i = 0; i < d->n; i++)
                free(d->e[i].name);
        free(d);
        return NULL;
}

static void snapshot_freep(DirSnapshot **d)
{
        snapshot_free(*d);
}

static int snapshot_add(DirSnapshot **d, size_t *cap, const char *name, uint64_t ino, unsigned type)
{
        if ((*d)->n == *cap) {
                size_t ncap = *cap * 2;
                DirSnapshot *nd = realloc(*d, sizeof *nd + ncap * sizeof nd->e[0]);
                if (!nd)
                        return -ENOMEM;
                *d = nd;
                *cap = ncap;
        }
        char *s = strdup(name);
        if (!s)
                return -ENOMEM;
        (*d)->e[(*d)->n].name = s;
        (*d)->e[(*d)->n].ino = ino;
        (*d)->e[(*d)->n].type = type;
        (*d)->n++;
        return 0;
}

static int entry_cmp(const void *a, const void *b)
{
        const char *x = *(char *const *)a, *y = *(char *const *)b;
        return strverscmp(x, y);
}

static int snapshot_build(NanoFuse *f, const Node *n, DirSnapshot **ret)
{
        _cleanup_(snapshot_freep) DirSnapshot *d = NULL;
        size_t cap = 16, first;
        int r;

        d = calloc(1, sizeof *d + cap * sizeof d->e[0]);
        if (!d)
                return -ENOMEM;
        r = snapshot_add(&d, &cap, ".", n->ino, DT_DIR);
        if (r >= 0)
                r = snapshot_add(&d, &cap, "..", FUSE_ROOT_ID, DT_DIR);
        if (r >= 0 && n->kind == NODE_ROOT)
                r = snapshot_add(&d, &cap, "by-id", INO_BY_ID, DT_DIR);
        if (r < 0)
                return r;
        first = d->n;

        if (n->kind == NODE_BY_ID) {
                /* Any manifest of the store can be looked up; listing shows those of current releases. */
                _cleanup_free_ NanoRelease *list = NULL;
                DigestSet seen = {};
                size_t k;
                r = nano_store_list(f->store, &list, &k, NULL);
                for (size_t i = 0; r >= 0 && i < k; i++) {
                        char id[NANO_ID_STRING_SIZE];
                        r = digest_set_add(&seen, list[i].id);
                        if (r > 0)
                                r = snapshot_add(&d, &cap, nano_id_format(list[i].id, id),
                                                 ino_of_tree_root(id, list[i].id), DT_DIR);
                }
                digest_set_done(&seen);
                if (r < 0)
                        return r;
        } else {
                int fd = openat(f->store->refs_fd, n->kind == NODE_ROOT ? "." : n->name,
                                O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                struct dirent *de;
                DIR *dir;
                if (fd < 0)
                        return -errno;
                dir = fdopendir(fd);
                if (!dir) {
                        safe_close(fd);
                        return -ENOMEM;
                }
                while (r >= 0 && (de = readdir(dir))) {
                        struct stat st;
                        uint8_t id[32];
                        if (!nano_name_is_valid(de->d_name))
                                continue;
                        if (n->kind == NODE_ROOT && nano_name_is_reserved(de->d_name)) {
                                /* Written by an older nano or by hand: /by-id is the view, always. */
                                report_by_id_hidden(f);
                                continue;
                        }
                        if (n->kind == NODE_ROOT) {
                                if (name_dir_stat(f, de->d_name, &st) < 0)
                                        continue;
                                r = snapshot_add(&d, &cap, de->d_name, st.st_ino, DT_DIR);
                        } else {
                                char view[2 * NANO_RELEASE_NAME_MAX + 2];
                                if (nano_ref_read(f->store, n->name, de->d_name, id) < 0)
                                        continue;
                                snprintf(view, sizeof view, "%s@%s", n->name, de->d_name);
                                r = snapshot_add(&d, &cap, de->d_name, ino_of_tree_root(view, id), DT_DIR);
                        }
                }
                closedir(dir);
                if (r < 0)
                        return r;
        }
        /* Names sort as versions do (1.9 before 1.10), as `nano store ls` shows them. */
        qsort(&d->e[first], d->n - first, sizeof d->e[0], entry_cmp);
        *ret = TAKE_PTR(d);
        return 0;
}

/* Without OPENDIR (the kernel's no_opendir), the kernel caches every directory's listing, these
 * three too, and drops a cached listing when the directory's mtime has changed (it compares when a
 * listing starts, and asks for the attributes once they time out: TIMEOUT_VOLATILE) or when told to
 * (refs_watch_thread(), at once). So the mtime shown here is the refs directory's, moved forward by
 * at least 1 ns whenever the listing itself changed, which the refs directory's own mtime does not
 * always show (a coarse clock; a name's versions live one level down). */
static int listing_stat(NanoFuse *f, Node *n, struct stat *st)
{
        _cleanup_(snapshot_freep) DirSnapshot *d = NULL;
        uint64_t h = 0;
        int r = snapshot_build(f, n, &d);

        if (r < 0)
                return r;
        for (size_t i = 0; i < d->n; i++)
                h += XXH3_64bits_withSeed(d->e[i].name, strlen(d->e[i].name), d->e[i].ino);

        pthread_mutex_lock(&f->lock);
        if (!n->list_seen || h != n->list_hash) {
                struct timespec t = st->st_mtim;
                if (n->list_seen && (t.tv_sec < n->list_mtime.tv_sec ||
                                     (t.tv_sec == n->list_mtime.tv_sec && t.tv_nsec <= n->list_mtime.tv_nsec))) {
                        t = n->list_mtime;
                        if (++t.tv_nsec == 1000000000) {
                                t.tv_sec++;
                                t.tv_nsec = 0;
                        }
                }
                n->list_mtime = t;
                n->list_hash = h;
                n->list_seen = true;
        }
        st->st_atim = st->st_mtim = st->st_ctim = n->list_mtime;
        pthread_mutex_unlock(&f->lock);
        return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        NanoFuse *f = req_fs(req);
        Node *n = node_by_ino(f, ino);

        if (f->no_opendir) {
                /* Once: the kernel stops asking, and lists from its cache or with readdir alone. */
                fuse_reply_err(req, ENOSYS);
                return;
        }
        if (!n) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        /* A kernel that needs OPENDIR: a release's directories are immutable, their listings may be
         * cached and kept across opens; the others change. */
        fi->fh = 0;
        if (n->kind == NODE_DIR) {
                fi->cache_readdir = 1;
                fi->keep_cache = 1;
        }
        fuse_reply_open(req, fi);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        fuse_reply_err(req, 0);
}

/* Collects the nodes a readdirplus reply references, to give them back if the reply fails. */
typedef struct NodeList {
        Node **v;
        size_t n, cap;
} NodeList;

static int node_list_add(NodeList *l, Node *n)
{
        if (l->n == l->cap) {
                size_t ncap = l->cap ? l->cap * 2 : 64;
                Node **v = reallocarray(l->v, ncap, sizeof *v);
                if (!v)
                        return -ENOMEM;
                l->v = v;
                l->cap = ncap;
        }
        l->v[l->n++] = n;
        return 0;
}

/* Adds one entry; returns false once the buffer is full. Without plus, only st_ino and the type
 * matter. With plus, n is the entry's referenced node (or NULL: "no attributes", which the kernel
 * accepts, and for which it takes no reference). */
static bool add_entry(fuse_req_t req, char *buf, size_t size, size_t *pos, bool plus, const char *name,
                      const struct stat *st, Node *n, double entry_timeout, off_t next)
{
        size_t k;

        if (plus) {
                struct fuse_entry_param e = { .attr = *st };
                if (n)
                        entry_fill(st, entry_timeout, node_attr_timeout(n), &e);
                k = fuse_add_direntry_plus(req, buf + *pos, size - *pos, name, &e, next);
        } else
                k = fuse_add_direntry(req, buf + *pos, size - *pos, name, st, next);
        if (k > size - *pos)
                return false;
        *pos += k;
        return true;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi,
                       bool plus)
{
        NanoFuse *f = req_fs(req);
        Node *p = node_by_ino(f, ino);
        _cleanup_free_ char *buf = NULL;
        NodeList added = {};
        size_t pos = 0;
        int r = 0;

        if (!p) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        buf = malloc(size);
        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }

        if (p->kind != NODE_DIR) {
                /* Root, names, by-id: listed from the refs (offsets are positions in the sorted listing),
                 * without attributes even for readdirplus. Their entries would open manifests, and they
                 * change: lookups fetch them when needed. */
                _cleanup_(snapshot_freep) DirSnapshot *d = NULL;
                r = snapshot_build(f, p, &d);
                if (r < 0) {
                        fuse_reply_err(req, -r);
                        return;
                }
                for (size_t i = (size_t)off; i < d->n; i++) {
                        struct stat st = { .st_ino = d->e[i].ino, .st_mode = DTTOIF(d->e[i].type) };
                        if (!add_entry(req, buf, size, &pos, plus, d->e[i].name, &st, NULL, 0, (off_t)i + 1))
                                break;
                }
                fuse_reply_buf(req, buf, pos);
                return;
        }

        const Tree *t = p->tree;
        const NanoManifest *m = node_manifest(p);
        NanoEntry dir;
        nano_manifest_entry(m, p->idx, &dir);

        /* Offsets: 0 ".", 1 "..", 2 + i the i-th child. */
        for (uint64_t o = (uint64_t)off; o < 2 + dir.size; o++) {
                struct stat st = {};
                char name[NANO_NAME_MAX + 1];
                Node *n = NULL;

                if (o < 2) {
                        strcpy(name, o == 0 ? "." : "..");
                        st.st_mode = S_IFDIR;
                        if (o == 0)
                                st.st_ino = p->ino;
                        else if (p->idx != 0)
                                st.st_ino = ino_of_entry(t, dir.parent);
                        else if (tree_is_by_id(t))
                                st.st_ino = INO_BY_ID;
                        else {
                                char rel[NANO_RELEASE_NAME_MAX + 1];
                                snprintf(rel, sizeof rel, "%.*s", (int)strcspn(t->view, "@"), t->view);
                                st.st_ino = ino_of_name(rel);
                        }
                        if (!add_entry(req, buf, size, &pos, plus, name, &st, NULL, 0, (off_t)o + 1))
                                break;
                        continue;
                }

                uint32_t idx = dir.first_child + (uint32_t)(o - 2);
                NanoEntry e;
                nano_manifest_entry(m, idx, &e);
                memcpy(name, e.name, e.name_len);
                name[e.name_len] = '\0';
                if (plus) {
                        r = node_get_entry(f, (Tree *)t, idx, &n);
                        if (r >= 0)
                                r = node_stat(f, n, &st);
                        if (r >= 0)
                                r = node_list_add(&added, n);
                        if (r < 0) {
                                if (n)
                                        node_unref(f, n, 1);
                                break;
                        }
                } else {
                        st.st_ino = ino_of_entry(t, idx);
                        st.st_mode = e.type == NANO_ENTRY_DIRECTORY ? S_IFDIR
                                     : e.type == NANO_ENTRY_SYMLINK ? S_IFLNK
                                                                    : S_IFREG;
                }
                if (!add_entry(req, buf, size, &pos, plus, name, &st, n, TIMEOUT_IMMUTABLE, (off_t)o + 1)) {
                        if (n) {
                                added.n--;
                                node_unref(f, n, 1);
                        }
                        break;
                }
        }

        if (r < 0 && pos == 0)
                fuse_reply_err(req, -r);
        else if (fuse_reply_buf(req, buf, pos) != 0)
                /* The kernel never saw these entries: it will not forget them either. */
                for (size_t i = 0; i < added.n; i++)
                        node_unref(f, added.v[i], 1);
        free(added.v);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
        do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
        do_readdir(req, ino, size, off, fi, true);
}

/* ---- Files. */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        NanoFuse *f = req_fs(req);
        Node *n = node_by_ino(f, ino);

        if (f->no_open) {
                /* Once: the kernel stops asking, opens files on its own with keep_cache, and reads
                 * come with no handle. The blob is opened by the first read (node_blob_get()). */
                fuse_reply_err(req, ENOSYS);
                return;
        }
        if (!n) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        if (n->kind != NODE_FILE) {
                fuse_reply_err(req, n->kind == NODE_SYMLINK ? ELOOP : EISDIR);
                return;
        }
        if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
                fuse_reply_err(req, EROFS);
                return;
        }
        /* Content never changes: pages cached by a previous open stay valid, no flush on close. Not
         * direct_io: mmap, exec and shared libraries need the page cache. */
        fi->fh = 0;
        fi->keep_cache = 1;
        fi->noflush = 1;
        fi->direct_io = 0;
        fuse_reply_open(req, fi);
}

/* A read this far from where the file's last read ended is out of order: the file is being paged in
 * by faults or read at random, not streamed (a streaming reader's requests in flight can reach the
 * workers in another order, but not this far apart). */
#define READ_JUMP (UINT64_C(512) << 10)
/* The largest file decompressed ahead (doc/mount.md), and at most a quarter of the chunk cache. */
#define READ_AHEAD_MAX (UINT64_C(32) << 20)

/* Queues the whole file for decompression ahead (prefetch.c) at its first out-of-order read. */
static void read_ahead_maybe(NanoFuse *f, Node *n, NanoBlob *blob, uint64_t off, uint64_t end)
{
        uint64_t prev = atomic_exchange(&n->read_next, end);

        if (off + READ_JUMP >= prev && off <= prev + READ_JUMP)
                return;
        if (nano_blob_n_chunks(blob) < 2 || nano_blob_size(blob) > MIN(READ_AHEAD_MAX, f->opts.cache_size / 4))
                return;
        if (!atomic_exchange(&n->read_ahead, true))
                prefetch_decompress(f->prefetch, n);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
        NanoFuse *f = req_fs(req);
        Node *n = node_by_ino(f, ino);
        Chunk *chunks_stack[8], **chunks = chunks_stack;
        struct iovec iov_stack[8], *iov = iov_stack;
        uint64_t fsize, first, n_chunks, bad = 0;
        NanoBlob *blob;
        unsigned shift;
        size_t len, got = 0;
        int r = 0;

        if (!n || n->kind != NODE_FILE) {
                fuse_reply_err(req, n ? EISDIR : ESTALE);
                return;
        }
        fsize = n->size;
        if (off < 0 || (uint64_t)off >= fsize || size == 0) {
                fuse_reply_buf(req, NULL, 0);
                return;
        }
        r = node_blob_get(f, n, &blob);
        if (r == -EMFILE || r == -ENFILE || r == -ENOMEM) {
                /* The daemon's resources, not the store: the next read may succeed, and the object
                 * is not reported damaged. */
                log_warning_errno(r, "cannot open an object to read: %m");
                fuse_reply_err(req, r == -ENOMEM ? ENOMEM : EIO);
                return;
        }
        if (r < 0) {
                char what[128];
                snprintf(what, sizeof what, "%s: reading it gets EIO",
                         r == -ENOENT    ? "is missing from the store"
                         : r == -ENOLINK ? "is a delta of an object missing from the store"
                         : r == -EBADMSG ? "is corrupt (its chunk table or trailer)"
                                         : "cannot be opened");
                report_object(f, n, r, what);
                fuse_reply_err(req, EIO);
                return;
        }
        shift = nano_blob_chunk_shift(blob);
        len = (size_t)MIN((uint64_t)size, fsize - (uint64_t)off);
        read_ahead_maybe(f, n, blob, (uint64_t)off, (uint64_t)off + len);
        first = (uint64_t)off >> shift;
        n_chunks = (((uint64_t)off + len - 1) >> shift) - first + 1;
        if (n_chunks > ELEMENTSOF(chunks_stack)) {
                chunks = calloc(n_chunks, sizeof *chunks);
                iov = calloc(n_chunks, sizeof *iov);
                if (!chunks || !iov) {
                        r = -ENOMEM;
                        goto finish;
                }
        }

        /* Straight from the cached chunks to the kernel (one writev), holding a reference on each
         * until the reply is sent: no copy of our own. */
        for (uint64_t i = 0; i < n_chunks; i++) {
                uint64_t cstart = (first + i) << shift;
                uint64_t from = MAX((uint64_t)off, cstart),
                         to = MIN((uint64_t)off + len, cstart + (UINT64_C(1) << shift));

                bad = first + i;
                r = chunk_cache_get(f->cache, blob, n->digest, bad, &chunks[i]);
                if (r < 0)
                        break;
                got++;
                if (to - cstart > chunk_size(chunks[i])) {
                        r = -EBADMSG; /* a chunk shorter than the size says */
                        break;
                }
                iov[i] = (struct iovec){ .iov_base = (void *)(chunk_data(chunks[i]) + (from - cstart)),
                                         .iov_len = (size_t)(to - from) };
        }
        if (r >= 0) {
                /* Done with the node before the reply: once the kernel has it, the read(2) can end, the
                 * file close, and a FORGET free the node at once. The chunks hold their own references
                 * and outlive the blob. */
                node_blob_put(f, n);
                fuse_reply_iov(req, iov, (int)n_chunks);
        }

finish:
        for (size_t i = 0; i < got; i++)
                chunk_unref(f->cache, chunks[i]);
        if (r < 0)
                node_blob_put(f, n);
        if (chunks != chunks_stack) {
                free(chunks);
                free(iov);
        }
        if (r < 0) {
                if (r == -EBADMSG) {
                        char what[128];
                        snprintf(what, sizeof what,
                                 "is corrupt: chunk %llu (bytes %llu-%llu) fails its checksum, reads there "
                                 "get EIO",
                                 (unsigned long long)bad, (unsigned long long)(bad << shift),
                                 (unsigned long long)MIN(fsize, (bad + 1) << shift) - 1);
                        report_object(f, n, r, what);
                }
                fuse_reply_err(req, r == -ENOMEM ? ENOMEM : EIO);
        }
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        fuse_reply_err(req, 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        /* Nothing to flush, ever: ENOSYS makes the kernel stop asking at each close (files opened
         * without OPEN have no "noflush" flag to say so). */
        fuse_reply_err(req, ENOSYS);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
        fuse_reply_err(req, 0);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
        Node *n = node_by_ino(req_fs(req), ino);
        uint64_t size = n && n->kind == NODE_FILE ? n->size : 0;

        /* The kernel asks only for SEEK_DATA and SEEK_HOLE; files have no holes. */
        if (off < 0 || (uint64_t)off >= size)
                fuse_reply_err(req, ENXIO);
        else if (whence == SEEK_DATA)
                fuse_reply_lseek(req, off);
        else if (whence == SEEK_HOLE)
                fuse_reply_lseek(req, (off_t)size);
        else
                fuse_reply_err(req, EINVAL);
}

static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fuse_pollhandle *ph)
{
        if (ph)
                fuse_pollhandle_destroy(ph);
        fuse_reply_poll(req, POLLIN | POLLRDNORM);
}

static void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg, struct fuse_file_info *fi,
                     unsigned flags, const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
        fuse_reply_err(req, ENOTTY);
}

/* ---- The rest: statfs, access, xattrs, and EROFS for anything that would write. */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
        NanoFuse *f = req_fs(req);
        struct statvfs sv, out;

        if (fstatvfs(f->store->store_fd, &sv) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        /* Space is the store's filesystem's, in 4 KiB blocks; the mount itself can hold nothing more. */
        out = (struct statvfs){
                .f_bsize = 4096,
                .f_frsize = 4096,
                .f_blocks = (fsblkcnt_t)((uint64_t)sv.f_blocks * sv.f_frsize / 4096),
                .f_bfree = (fsblkcnt_t)((uint64_t)sv.f_bfree * sv.f_frsize / 4096),
                .f_bavail = (fsblkcnt_t)((uint64_t)sv.f_bavail * sv.f_frsize / 4096),
                .f_files = (fsfilcnt_t)atomic_load(&f->n_nodes),
                .f_ffree = 0,
                .f_favail = 0,
                .f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV,
                .f_namemax = NANO_NAME_MAX,
        };
        fuse_reply_statfs(req, &out);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
        /* The mount uses default_permissions, so the kernel checks by itself and does not ask; this
         * answers the same way in case it does. */
        NanoFuse *f = req_fs(req);
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        Node *n = node_by_ino(f, ino);
        unsigned bits;
        struct stat st;
        int r;

        if (!n) {
                fuse_reply_err(req, ESTALE);
                return;
        }
        r = node_stat(f, n, &st);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (mask & W_OK) {
                fuse_reply_err(req, EROFS);
                return;
        }
        if (ctx->uid == 0)
                bits = S_ISDIR(st.st_mode) || (st.st_mode & 0111) ? 7 : 6;
        else if (ctx->uid == st.st_uid)
                bits = (st.st_mode >> 6) & 7;
        else if (ctx->gid == st.st_gid)
                bits = (st.st_mode >> 3) & 7;
        else
                bits = st.st_mode & 7;
        fuse_reply_err(req, ((unsigned)mask & (R_OK | X_OK) & ~bits) ? EACCES : 0);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
        fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
        if (size == 0)
                fuse_reply_xattr(req, 0);
        else
                fuse_reply_buf(req, NULL, 0);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
                        int flags)
{
        fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
        fuse_reply_err(req, EROFS);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
        fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
        fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
        fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
        fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
        fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
        fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
        fuse_reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
        fuse_reply_err(req, EROFS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
        fuse_reply_err(req, EROFS);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
                               fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len,
                               int flags)
{
        fuse_reply_err(req, EROFS);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
        NanoFuse *f = userdata;

        if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
                conn->want |= FUSE_CAP_CACHE_SYMLINKS;
        /* readdirplus answers the lookups that follow a listing ahead; "auto" lets the kernel use it
         * where it pays (ls -l, find with stat) and plain readdir where it does not. */
        if (conn->capable & FUSE_CAP_READDIRPLUS)
                conn->want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
        if (conn->capable & FUSE_CAP_ASYNC_READ)
                conn->want |= FUSE_CAP_ASYNC_READ;
        if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
                conn->want |= FUSE_CAP_PARALLEL_DIROPS;
        /* No OPEN, RELEASE, OPENDIR, RELEASEDIR: two round trips less for every file and directory
         * opened, which is most of what a warm tree walk or read still asked of the daemon. The
         * kernel then keeps pages and listings of every inode (keep_cache, cache_dir). */
        f->no_open = conn->capable & FUSE_CAP_NO_OPEN_SUPPORT;
        f->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
        /* auto_inval_data: the kernel compares a directory's mtime when a cached listing starts, and
         * drops the listing if it changed (listing_stat()). Files never change: for them it costs
         * nothing while their attributes are valid, which is for TIMEOUT_IMMUTABLE. Splice would only
         * add a pipe between a chunk already in memory and the kernel. */
        if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
                conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
        conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
        conn->time_gran = 1;
        /* More readahead requests in flight: each worker decompresses its own chunk. */
        conn->max_background = MAX(conn->max_background, 64u);
        conn->congestion_threshold = conn->max_background * 3 / 4;
        log_debug("FUSE protocol %u.%u, capable 0x%x, want 0x%x, max_write %u, max_readahead %u, "
                  "no_open %d, no_opendir %d",
                  conn->proto_major, conn->proto_minor, conn->capable, conn->want, conn->max_write,
                  conn->max_readahead, f->no_open, f->no_opendir);
}

static void op_destroy(void *userdata)
{
        NanoFuse *f = userdata;
        ChunkCacheStats s;
        char b1[32], b2[32];

        chunk_cache_stats(f->cache, &s);
        log_info(
                "chunk cache: %llu hits (%llu after waiting for a fill), %llu misses, %llu errors, %s of %s",
                (unsigned long long)s.hits, (unsigned long long)s.waits, (unsigned long long)s.misses,
                (unsigned long long)s.errors, format_bytes(s.bytes, b1, sizeof b1),
                format_bytes(s.budget, b2, sizeof b2));
}

static const struct fuse_lowlevel_ops ops = {
        .init = op_init,
        .destroy = op_destroy,
        .lookup = op_lookup,
        .forget = op_forget,
        .forget_multi = op_forget_multi,
        .getattr = op_getattr,
        .setattr = op_setattr,
        .readlink = op_readlink,
        .mknod = op_mknod,
        .mkdir = op_mkdir,
        .unlink = op_unlink,
        .rmdir = op_unlink,
        .symlink = op_symlink,
        .rename = op_rename,
        .link = op_link,
        .open = op_open,
        .read = op_read,
        .write = op_write,
        .flush = op_flush,
        .release = op_release,
        .fsync = op_fsync,
        .opendir = op_opendir,
        .readdir = op_readdir,
        .readdirplus = op_readdirplus,
        .releasedir = op_releasedir,
        .fsyncdir = op_fsync,
        .statfs = op_statfs,
        .setxattr = op_setxattr,
        .getxattr = op_getxattr,
        .listxattr = op_listxattr,
        .removexattr = op_removexattr,
        .access = op_access,
        .create = op_create,
        .poll = op_poll,
        .ioctl = op_ioctl,
        .fallocate = op_fallocate,
        .copy_file_range = op_copy_file_range,
        .lseek = op_lseek,
};

/* ---- Session. */

int nano_fuse_new(NanoStore *s, const NanoFuseOptions *o, NanoFuse **ret)
{
        _cleanup_(nano_fuse_freep) NanoFuse *f = NULL;
        int r;

        /* Chunk buffers are 128 KiB and more, allocated and freed by many threads: from glibc's
         * per-thread arenas, the freed ones stayed in the daemon (measured: 229 MiB after one full
         * read with a 64 MiB cache). Served by mmap, they go back to the system when freed (88 MiB). */
        (void)mallopt(M_MMAP_THRESHOLD, 64 * 1024);

        /* A manifest is checked against its sha256 when it is first opened. The nano executable
         * opens libcrypto on its first hash (cli/libcrypto-dl.c): do it now, not in the first lookup
         * of a release, where on a cold system it cost ~5 ms of disk reads and initialisation. */
        uint8_t unused[32];
        nano_sha256("", 0, unused);

        f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        pthread_mutex_init(&f->lock, NULL);
        s->n_ref++;
        f->store = s;
        f->opts = *o;
        if (f->opts.threads == 0)
                f->opts.threads = NANO_FUSE_THREADS_DEFAULT;
        f->opts.threads = MIN(f->opts.threads, NANO_FUSE_THREADS_MAX);
        /* The tree belongs to whoever mounts it (doc/formats.md: owners are not recorded). */
        f->uid = getuid();
        f->gid = getgid();

        /* Open blobs cost a file descriptor each: allow many (the hard limit is the system's say), and
         * keep at most half of them open, whatever was granted. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < 65536) {
                        rl.rlim_cur = MIN(rl.rlim_max, (rlim_t)65536);
                        (void)setrlimit(RLIMIT_NOFILE, &rl);
                        (void)getrlimit(RLIMIT_NOFILE, &rl);
                }
                f->max_blobs = (unsigned)MIN(rl.rlim_cur / 2, (rlim_t)NANO_FUSE_OPEN_BLOBS_MAX);
        }
        f->max_blobs = MAX(f->max_blobs, 16u);
        f->watch_fd = -EBADF;

        r = inodes_init(f);
        if (r < 0)
                return r;
        r = chunk_cache_new(f->opts.cache_size, &f->cache);
        if (r < 0)
                return r;
        fuse_set_log_func(fuse_log_func);
        *ret = TAKE_PTR(f);
        return 0;
}

NanoFuse *nano_fuse_free(NanoFuse *f)
{
        if (!f)
                return NULL;
        nano_fuse_unmount(f);
        if (f->se)
                fuse_session_destroy(f->se);
        inodes_done(f);
        chunk_cache_free(f->cache);
        digest_set_done(&f->logged);
        nano_store_unref(f->store);
        free(f->mountpoint);
        pthread_mutex_destroy(&f->lock);
        free(f);
        return NULL;
}

int nano_fuse_mount(NanoFuse *f, const char *mountpoint)
{
        /* ro: the kernel refuses writes with EROFS before asking. default_permissions: the kernel
         * checks permission bits itself, so access() and open() need no round trip for that.
         * subtype: the mount shows as "fuse.nano", which is how a stale one is recognised. */
        char *argv[] = { (char *)"nano", (char *)"-o",
                         (char *)"ro,default_permissions,fsname=nano,subtype=nano", (char *)"-d", NULL };
        struct fuse_args args = FUSE_ARGS_INIT(f->opts.debug ? 4 : 3, argv);
        struct stat st;

        if (f->se)
                return -EBUSY;
        if (stat(mountpoint, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        f->mountpoint = strdup(mountpoint);
        if (!f->mountpoint)
                return -ENOMEM;

        last_error[0] = '\0';
        f->se = fuse_session_new(&args, &ops, sizeof ops, f);
        fuse_opt_free_args(&args);
        if (!f->se)
                return -EINVAL;
        if (fuse_set_signal_handlers(f->se) < 0)
                return -EIO;
        f->signals = true;
        if (fuse_session_mount(f->se, mountpoint) != 0)
                return -EPERM; /* libfuse logged why (see nano_fuse_last_error()) */
        f->mounted = true;
        return 0;
}

void nano_fuse_unmount(NanoFuse *f)
{
        if (f->mounted) {
                fuse_session_unmount(f->se);
                f->mounted = false;
        }
        if (f->signals) {
                fuse_remove_signal_handlers(f->se);
                f->signals = false;
        }
}

/* ---- Releases coming and going. */

#ifdef __linux__
/* A release appears or goes with its ref, refs/<name>/<version>. Each change drops at once the
 * kernel's cached listings of the directories that show it: the root, the name, by-id (without it,
 * listing_stat()'s mtime drops them within TIMEOUT_VOLATILE). One inotify watch on refs/ and one on
 * each refs/<name>/. */
typedef struct RefsWatch {
        int wd;
        char name[NANO_RELEASE_NAME_MAX + 1]; /* "" for refs/ itself */
} RefsWatch;

typedef struct RefsWatches {
        RefsWatch *v;
        size_t n, cap;
} RefsWatches;

static void refs_watch_add(NanoFuse *f, RefsWatches *w, const char *name)
{
        char path[64 + NANO_RELEASE_NAME_MAX];
        int wd;

        if (!streq(name, "") && !nano_name_is_valid(name))
                return;
        snprintf(path, sizeof path, "/proc/self/fd/%d/%s", f->store->refs_fd, name);
        wd = inotify_add_watch(f->watch_fd, path,
                               IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW);
        if (wd < 0) {
                log_debug("cannot watch refs/%s: %m; listings may show its changes up to %gs late", name,
                          TIMEOUT_VOLATILE);
                return;
        }
        for (size_t i = 0; i < w->n; i++)
                if (w->v[i].wd == wd)
                        return; /* already watched (the same directory seen twice) */
        if (w->n == w->cap) {
                size_t ncap = w->cap ? 2 * w->cap : 16;
                RefsWatch *v = reallocarray(w->v, ncap, sizeof *v);
                if (!v)
                        return;
                w->v = v;
                w->cap = ncap;
        }
        w->v[w->n].wd = wd;
        snprintf(w->v[w->n].name, sizeof w->v[w->n].name, "%s", name);
        w->n++;
}

static void refs_inval(NanoFuse *f, uint64_t ino)
{
        /* -ENOENT only says the kernel has no such inode cached: nothing to drop. */
        (void)fuse_lowlevel_notify_inval_inode(f->se, ino, 0, 0);
}

static void refs_watches_free(void *p)
{
        free(((RefsWatches *)p)->v);
}

static void *refs_watch_thread(void *userdata)
{
        NanoFuse *f = userdata;
        RefsWatches w = {};
        _Alignas(struct inotify_event) char buf[16 * 1024];
        DIR *d;
        int fd;

        pthread_cleanup_push(refs_watches_free, &w);
        refs_watch_add(f, &w, "");
        /* The names already there; a name created later is watched when refs/ reports it. */
        fd = openat(f->store->refs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        d = fd >= 0 ? fdopendir(fd) : NULL;
        if (d) {
                struct dirent *de;
                while ((de = readdir(d)))
                        if (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN)
                                refs_watch_add(f, &w, de->d_name);
                closedir(d);
        } else
                safe_close(fd);

        for (;;) {
                ssize_t k = read(f->watch_fd, buf, sizeof buf); /* a cancellation point */
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                bool root = false, by_id = false;
                for (char *p = buf; p < buf + k;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;
                        p += sizeof *ev + ev->len;
                        if (ev->mask & IN_Q_OVERFLOW) {
                                root = by_id = true; /* names are not known: those get their mtime */
                                continue;
                        }
                        for (size_t i = 0; i < w.n; i++) {
                                if (w.v[i].wd != ev->wd)
                                        continue;
                                if (ev->mask & IN_IGNORED) {
                                        w.v[i] = w.v[--w.n]; /* the directory is gone */
                                        break;
                                }
                                root = true;
                                if (streq(w.v[i].name, "")) {
                                        if (ev->len > 0 && (ev->mask & (IN_CREATE | IN_MOVED_TO)) &&
                                            (ev->mask & IN_ISDIR))
                                                refs_watch_add(f, &w, ev->name);
                                } else {
                                        by_id = true;
                                        refs_inval(f, ino_of_name(w.v[i].name));
                                }
                                break;
                        }
                }
                if (root)
                        refs_inval(f, FUSE_ROOT_ID);
                if (by_id)
                        refs_inval(f, INO_BY_ID);
        }
        pthread_cleanup_pop(1);
        return NULL;
}

static void refs_watch_start(NanoFuse *f)
{
        f->watch_fd = inotify_init1(IN_CLOEXEC);
        if (f->watch_fd < 0) {
                log_debug("inotify: %m; listings may show new releases up to %gs late", TIMEOUT_VOLATILE);
                return;
        }
        if (pthread_create(&f->watch_thread, NULL, refs_watch_thread, f) != 0) {
                f->watch_fd = safe_close(f->watch_fd);
                return;
        }
        f->watching = true;
}

static void refs_watch_stop(NanoFuse *f)
{
        if (f->watching) {
                pthread_cancel(f->watch_thread);
                pthread_join(f->watch_thread, NULL);
                f->watching = false;
        }
        f->watch_fd = safe_close(f->watch_fd);
}
#else
static void refs_watch_start(NanoFuse *f)
{
}

static void refs_watch_stop(NanoFuse *f)
{
}
#endif

static void *probe_thread(void *userdata)
{
        NanoFuse *f = userdata;
        struct stat st;

        /* The mount answers once the kernel sent INIT and a worker answered GETATTR for the root. */
        if (stat(f->mountpoint, &st) < 0)
                f->ready_error = -errno;
        else if (st.st_ino != FUSE_ROOT_ID || !S_ISDIR(st.st_mode))
                f->ready_error = -EIO; /* something else is mounted on top */
        if (f->ready_error == 0) {
                if (f->ready)
                        f->ready(f->ready_userdata);
                return NULL;
        }
        /* End the loop: the signal handler exits the session and wakes the main thread. */
        pthread_kill(f->main_thread, SIGTERM);
        return NULL;
}

int nano_fuse_loop(NanoFuse *f, void (*ready)(void *userdata), void *userdata)
{
        struct fuse_loop_config *cfg;
        pthread_t probe;
        int r;

        if (!f->mounted)
                return -ENOTCONN;
        f->main_thread = pthread_self();
        f->ready = ready;
        f->ready_userdata = userdata;
        f->ready_error = 0;

        cfg = fuse_loop_cfg_create();
        if (!cfg)
                return -ENOMEM;
        /* One /dev/fuse fd per worker: requests spread over workers without one shared queue. */
        fuse_loop_cfg_set_clone_fd(cfg, 1);
        fuse_loop_cfg_set_max_threads(cfg, f->opts.threads);
        fuse_loop_cfg_set_idle_threads(cfg, f->opts.threads);

        r = -pthread_create(&probe, NULL, probe_thread, f);
        if (r < 0) {
                fuse_loop_cfg_destroy(cfg);
                return r;
        }
        refs_watch_start(f);
        if (prefetch_new(f, PREFETCH_THREADS, &f->prefetch) < 0)
                log_debug("no sibling prefetch: out of memory");
        r = fuse_session_loop_mt(f->se, cfg);
        fuse_loop_cfg_destroy(cfg);
        f->prefetch = prefetch_free(f->prefetch);
        refs_watch_stop(f);

        /* Unmount before joining: a probe still waiting on the mount then gets ENOTCONN. The signal
         * handlers stay until the probe is gone, since it may still signal the main thread. */
        if (f->mounted) {
                fuse_session_unmount(f->se);
                f->mounted = false;
        }
        pthread_join(probe, NULL);
        nano_fuse_unmount(f);
        if (f->ready_error < 0)
                return f->ready_error;
        return r; /* > 0: the signal that ended it */
}
