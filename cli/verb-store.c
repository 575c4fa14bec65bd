/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* nano store …: the store verbs. */
#include <getopt.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blob.h"
#include "cli.h"
#include "log.h"
#include "manifest.h"
#include "store.h"
#include "util.h"

static const char store_help[] =
        "Usage: nano store COMMAND [ARGS...]\n"
        "\n"
        "The content-addressed store: releases are trees of files kept once per content.\n"
        "A RELEASE is written name@version, or by id as sha256:<64 hex>.\n"
        "\n"
        "Commands:\n"
        "  add PATH --name N --version V   import a directory, a tarball (gz, xz, zst, bz2, plain…)\n"
        "                                  or a Debian .deb as release N@V\n"
        "  ls [--json]                     list releases with their size and id\n"
        "  show RELEASE [--json]           list the tree of a release\n"
        "  cat RELEASE PATH                write a file of a release to stdout\n"
        "  checkout RELEASE DIR            write a release into a new or empty directory\n"
        "  rm RELEASE...                   remove releases (their content goes with the next gc)\n"
        "  gc [--json]                     remove what no release uses; print what was freed\n"
        "  fsck [--repair] [--json]        verify every object, manifest and ref\n"
        "  du [--json]                     logical and stored bytes, dedup and compression ratios\n"
        "\n"
        "Run 'nano store COMMAND --help' for a command's options.\n";

typedef struct Opts {
        bool json, quiet, repair, progress, no_delta;
        const char *name, *version;
        int level;
        unsigned chunk_shift, threads;
} Opts;

enum { OPT_JSON = 0x100, OPT_NAME, OPT_VERSION, OPT_LEVEL, OPT_CHUNK, OPT_THREADS, OPT_REPAIR, OPT_NO_PROGRESS,
       OPT_NO_DELTA };

/* Parses the options every store verb may take; returns the index of the first operand, or < 0 with
 * an exit code (negated) already decided, e.g. for --help. */
static int parse(int argc, char **argv, Opts *o, const char *accepted, const char *help)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, OPT_JSON },
                { "quiet", no_argument, NULL, 'q' },
                { "name", required_argument, NULL, OPT_NAME },
                { "version", required_argument, NULL, OPT_VERSION },
                { "level", required_argument, NULL, OPT_LEVEL },
                { "chunk-size", required_argument, NULL, OPT_CHUNK },
                { "threads", required_argument, NULL, OPT_THREADS },
                { "repair", no_argument, NULL, OPT_REPAIR },
                { "no-progress", no_argument, NULL, OPT_NO_PROGRESS },
                { "no-delta", no_argument, NULL, OPT_NO_DELTA },
                {},
        };
        int c, idx;

        o->progress = true;
        optind = 0;
        while ((c = getopt_long(argc, argv, "hq", options, &idx)) >= 0) {
                const char *name = c == 'h' ? "help" : c == 'q' ? "quiet" : c == '?' ? NULL : options[idx].name;
                if (c == 'h') {
                        fputs(help, stdout);
                        return -NANO_EXIT_OK - 1000;
                }
                if (!name || !strstr(accepted, name))
                        return -usage_error("store %s: %s; see 'nano store %s --help'", argv[0],
                                            name ? "option not accepted here" : "invalid option", argv[0]);
                switch (c) {
                case OPT_JSON: o->json = true; break;
                case 'q': o->quiet = true; break;
                case OPT_NAME: o->name = optarg; break;
                case OPT_VERSION: o->version = optarg; break;
                case OPT_REPAIR: o->repair = true; break;
                case OPT_NO_PROGRESS: o->progress = false; break;
                case OPT_NO_DELTA: o->no_delta = true; break;
                case OPT_LEVEL: {
                        char *end;
                        long l = strtol(optarg, &end, 10);
                        if (*end || l < 1 || l > 19)
                                return -usage_error("store %s: --level must be 1..19, not '%s'", argv[0], optarg);
                        o->level = (int)l;
                        break;
                }
                case OPT_CHUNK: {
                        uint64_t v;
                        unsigned shift = 0;
                        if (parse_size(optarg, &v) < 0 || v == 0 || (v & (v - 1)))
                                return -usage_error("store %s: --chunk-size must be a power of two, not '%s'", argv[0],
                                                    optarg);
                        while ((UINT64_C(1) << shift) < v)
                                shift++;
                        if (shift < NANO_BLOB_CHUNK_SHIFT_MIN || shift > NANO_BLOB_CHUNK_SHIFT_MAX)
                                return -usage_error("store %s: --chunk-size must be 4K..16M", argv[0]);
                        o->chunk_shift = shift;
                        break;
                }
                case OPT_THREADS: {
                        char *end;
                        long l = strtol(optarg, &end, 10);
                        if (*end || l < 1 || l > 16)
                                return -usage_error("store %s: --threads must be 1..16, not '%s'", argv[0], optarg);
                        o->threads = (unsigned)l;
                        break;
                }
                }
        }
        return optind;
}

/* parse() result to exit code, for early returns. */
static int parse_exit(int r)
{
        return r == -NANO_EXIT_OK - 1000 ? NANO_EXIT_OK : -r;
}

static int open_store(NanoStore **ret)
{
        NanoError err = { 0 };
        int r = nano_store_open(arg_home, ret, &err);
        return r < 0 ? -fail(&err, r, "cannot open the store") : 0;
}

static void store_unrefp(NanoStore **s)
{
        nano_store_unref(*s);
}

/* parse() and open_store() for the verbs that take options only. False when the verb is over
 * (--help, a usage error, no store), with its exit code in *ret_code. */
static bool begin_without_operands(int argc, char **argv, Opts *o, const char *accepted, const char *help,
                                   NanoStore **ret, int *ret_code)
{
        int r = parse(argc, argv, o, accepted, help);

        if (r < 0)
                *ret_code = parse_exit(r);
        else if (r != argc)
                *ret_code = usage_error("store %s: takes no arguments", argv[0]);
        else if ((r = open_store(ret)) < 0)
                *ret_code = -r;
        else
                return true;
        return false;
}

/* ---- add */

static void add_progress(const NanoImportProgress *p, void *userdata)
{
        char b[32];
        double secs = (double)p->elapsed_ns / 1e9;

        (void)userdata;
        fprintf(stderr, "\r%10llu files, %10s, %7.1f MB/s%s", (unsigned long long)p->files,
                format_bytes(p->bytes, b, sizeof b), secs > 0 ? (double)p->bytes / 1e6 / secs : 0.0,
                p->done ? "\n" : "");
        fflush(stderr);
}

static void add_warning(const char *message, void *userdata)
{
        (void)userdata;
        log_warning("%s", message);
}

static int verb_add(int argc, char **argv)
{
        static const char help[] =
                "Usage: nano store add PATH --name NAME --version VERSION [OPTIONS]\n"
                "\n"
                "Import a directory, a tarball (any compression libarchive reads) or a Debian .deb as\n"
                "release NAME@VERSION, and print 'NAME@VERSION sha256:<id>'. Content already in the\n"
                "store is not stored again, and a file that changed since the version of NAME added\n"
                "last is stored as a delta of that version's file where that is smaller. Setuid, setgid\n"
                "and sticky bits are stripped (with a warning); devices, fifos and sockets, absolute\n"
                "paths and '..' are refused.\n"
                "\n"
                "Options:\n"
                "  --name NAME        release name   ([A-Za-z0-9][A-Za-z0-9._+-]{0,127})\n"
                "  --version VERSION  release version (same characters)\n"
                "  --level N          zstd level, 1..19 (default 3)\n"
                "  --chunk-size SIZE  chunk size, a power of two from 4K to 16M (default 128K)\n"
                "  --threads N        compression threads (default: one per CPU)\n"
                "  --no-delta         compress every file on its own, never as a delta\n"
                "  --no-progress      no progress line (it is shown only on a terminal)\n"
                "  --json             print the result as JSON\n"
                "  -q, --quiet        print nothing on success\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        NanoError err = { 0 };
        NanoAddResult res;
        Opts o = { 0 };
        char id[NANO_ID_STRING_SIZE];
        uint64_t start = now_ns();
        int r;

        r = parse(argc, argv, &o, "json quiet name version level chunk-size threads no-progress no-delta",
                  help);
        if (r < 0)
                return parse_exit(r);
        if (argc - r != 1)
                return usage_error("store add: expected one PATH; see 'nano store add --help'");
        if (!o.name || !o.version)
                return usage_error("store add: --name and --version are required");
        if (!nano_name_is_valid(o.name))
                return usage_error("store add: invalid name '%s': use [A-Za-z0-9][A-Za-z0-9._+-]{0,127}", o.name);
        if (nano_name_is_reserved(o.name))
                return usage_error("store add: invalid name '%s': it is reserved for the mount's by-id view "
                                   "(/by-id/sha256:<id>); choose another name",
                                   o.name);
        if (!nano_name_is_valid(o.version))
                return usage_error("store add: invalid version '%s': use [A-Za-z0-9][A-Za-z0-9._+-]{0,127}",
                                   o.version);
        const char *source = argv[r];
        r = open_store(&s);
        if (r < 0)
                return -r;

        NanoAddOptions opts = {
                .level = o.level,
                .chunk_shift = o.chunk_shift,
                .threads = o.threads,
                .no_delta = o.no_delta,
                .progress = o.progress && !o.quiet && !o.json && isatty(STDERR_FILENO) ? add_progress : NULL,
                .warning = add_warning,
        };
        r = nano_store_add(s, source, o.name, o.version, &opts, &res, &err);
        if (r < 0) {
                int code = fail(&err, r, "import failed");
                /* A corrupt input is bad input, not a corrupt store. */
                return code == NANO_EXIT_CORRUPT ? NANO_EXIT_FAILURE : code;
        }
        nano_id_format(res.id, id);
        if (o.json) {
                json_object *j = json_object_new_object();
                char rel[2 * NANO_RELEASE_NAME_MAX + 2];
                snprintf(rel, sizeof rel, "%s@%s", o.name, o.version);
                json_object_object_add(j, "release", json_object_new_string(rel));
                json_object_object_add(j, "id", json_object_new_string(id));
                json_add_u64(j, "files", res.files);
                json_add_u64(j, "directories", res.directories);
                json_add_u64(j, "symlinks", res.symlinks);
                json_add_u64(j, "bytes", res.bytes);
                json_add_u64(j, "new_objects", res.new_objects);
                json_add_u64(j, "new_bytes", res.new_bytes);
                json_object_object_add(j, "existed", json_object_new_boolean(res.existed));
                json_object_object_add(j, "seconds", json_object_new_double((double)(now_ns() - start) / 1e9));
                json_print(j);
        } else if (!o.quiet)
                printf("%s@%s %s\n", o.name, o.version, id);
        return NANO_EXIT_OK;
}

/* ---- ls */

typedef struct Summary {
        uint64_t files, bytes;
} Summary;

static int summarize(NanoStore *s, const uint8_t id[32], Summary *ret)
{
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        int r = nano_store_open_manifest(s, id, &m);

        *ret = (Summary){ 0 };
        if (r < 0)
                return r;
        for (uint32_t i = 0, n = nano_manifest_count(m); i < n; i++) {
                NanoEntry e;
                nano_manifest_entry(m, i, &e);
                if (e.type == NANO_ENTRY_REGULAR) {
                        ret->files++;
                        ret->bytes += e.size;
                }
        }
        return 0;
}

static int verb_ls(int argc, char **argv)
{
        static const char help[] = "Usage: nano store ls [--json]\n\nList releases: name, version, files, size and id.\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        _cleanup_free_ NanoRelease *list = NULL;
        NanoError err = { 0 };
        json_object *arr = NULL;
        Opts o = { 0 };
        size_t n;
        int r;

        if (!begin_without_operands(argc, argv, &o, "json", help, &s, &r))
                return r;
        r = nano_store_list(s, &list, &n, &err);
        if (r < 0)
                return fail(&err, r, "cannot list releases");
        if (o.json)
                arr = json_object_new_array();
        else if (n > 0)
                printf("%-24s %-16s %8s %10s  %s\n", "NAME", "VERSION", "FILES", "SIZE", "ID");
        for (size_t i = 0; i < n; i++) {
                char id[NANO_ID_STRING_SIZE], b[32];
                Summary sum;
                bool ok = summarize(s, list[i].id, &sum) >= 0;
                nano_id_format(list[i].id, id);
                if (o.json) {
                        json_object *j = json_object_new_object();
                        json_object_object_add(j, "name", json_object_new_string(list[i].name));
                        json_object_object_add(j, "version", json_object_new_string(list[i].version));
                        json_object_object_add(j, "id", json_object_new_string(id));
                        json_object_object_add(j, "files", ok ? json_object_new_int64((int64_t)sum.files) : NULL);
                        json_object_object_add(j, "size", ok ? json_object_new_int64((int64_t)sum.bytes) : NULL);
                        json_object_array_add(arr, j);
                } else
                        printf("%-24s %-16s %8llu %10s  %.19s%s\n", list[i].name, list[i].version,
                               (unsigned long long)sum.files, ok ? format_bytes(sum.bytes, b, sizeof b) : "?", id,
                               ok ? "" : " (manifest missing: run 'nano store fsck')");
        }
        if (o.json)
                json_print(arr);
        return NANO_EXIT_OK;
}

/* ---- show, cat */

/* A RELEASE argument that is not one is a usage error; one that is not in the store is not found. */
static int fail_resolve(const NanoError *err, int r)
{
        int code = fail(err, r, "cannot resolve release");
        return r == -EINVAL ? NANO_EXIT_USAGE : code;
}

static int open_release(NanoStore *s, const char *release, NanoManifest **ret, uint8_t id[32])
{
        NanoError err = { 0 };
        int r = nano_store_resolve(s, release, id, &err);

        if (r < 0)
                return -fail_resolve(&err, r);
        r = nano_store_open_manifest(s, id, ret);
        if (r < 0) {
                char b[NANO_ID_STRING_SIZE];
                log_error_errno(r, "cannot open the manifest %s of '%s': %s", nano_id_format(id, b), release,
                                r == -EBADMSG ? "it is corrupt (run 'nano store fsck')" :
                                r == -ENOENT  ? "it is missing (run 'nano store fsck')" :
                                                "%m");
                return -(r == -ENOENT ? NANO_EXIT_CORRUPT : exit_code_from_errno(r));
        }
        return 0;
}

static void mode_string(const NanoEntry *e, char buf[11])
{
        static const char rwx[] = "rwxrwxrwx";

        buf[0] = e->type == NANO_ENTRY_DIRECTORY ? 'd' : e->type == NANO_ENTRY_SYMLINK ? 'l' : '-';
        for (int i = 0; i < 9; i++)
                buf[1 + i] = (e->mode & (0400u >> i)) ? rwx[i] : '-';
        buf[10] = '\0';
}

static const char *type_string(NanoEntryType t)
{
        return t == NANO_ENTRY_DIRECTORY ? "directory" : t == NANO_ENTRY_SYMLINK ? "symlink" : "file";
}

static int verb_show(int argc, char **argv)
{
        static const char help[] =
                "Usage: nano store show RELEASE [--json]\n"
                "\n"
                "List every entry of a release: mode, size, modification time, path (and symlink target).\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        json_object *arr = NULL, *top = NULL;
        char path[NANO_PATH_MAX + 1], id[NANO_ID_STRING_SIZE];
        uint8_t digest[32];
        Opts o = { 0 };
        int r;

        r = parse(argc, argv, &o, "json", help);
        if (r < 0)
                return parse_exit(r);
        if (argc - r != 1)
                return usage_error("store show: expected one RELEASE");
        const char *release = argv[r];
        r = open_store(&s);
        if (r < 0)
                return -r;
        r = open_release(s, release, &m, digest);
        if (r < 0)
                return -r;
        if (o.json) {
                top = json_object_new_object();
                arr = json_object_new_array();
                json_object_object_add(top, "release", json_object_new_string(release));
                json_object_object_add(top, "id", json_object_new_string(nano_id_format(digest, id)));
        }
        for (uint32_t i = 0, n = nano_manifest_count(m); i < n; i++) {
                NanoEntry e;
                nano_manifest_entry(m, i, &e);
                if (nano_manifest_path(m, i, path, sizeof path) < 0)
                        continue;
                if (o.json) {
                        json_object *j = json_object_new_object();
                        json_object_object_add(j, "path", json_object_new_string(path));
                        json_object_object_add(j, "type", json_object_new_string(type_string(e.type)));
                        json_object_object_add(j, "mode", json_object_new_int((int)e.mode));
                        json_add_u64(j, "size", e.size);
                        json_object_object_add(j, "mtime", json_object_new_int64(e.mtime_sec));
                        json_object_object_add(j, "mtime_nsec", json_object_new_int((int)e.mtime_nsec));
                        if (e.type == NANO_ENTRY_REGULAR)
                                json_object_object_add(j, "blob", json_object_new_string(nano_id_format(e.digest, id)));
                        if (e.type == NANO_ENTRY_SYMLINK)
                                json_object_object_add(j, "target", json_object_new_string_len(e.target, (int)e.size));
                        json_object_array_add(arr, j);
                } else {
                        char ms[11], when[32];
                        time_t t = (time_t)e.mtime_sec;
                        struct tm tm;
                        mode_string(&e, ms);
                        strftime(when, sizeof when, "%Y-%m-%d %H:%M", gmtime_r(&t, &tm));
                        printf("%s %12llu %s %s%s", ms, (unsigned long long)e.size, when, i == 0 ? "." : path,
                               e.type == NANO_ENTRY_SYMLINK ? " -> " : "");
                        if (e.type == NANO_ENTRY_SYMLINK)
                                fwrite(e.target, 1, e.size, stdout);
                        putchar('\n');
                }
        }
        if (o.json) {
                json_object_object_add(top, "entries", arr);
                json_print(top);
        }
        return NANO_EXIT_OK;
}

static int verb_cat(int argc, char **argv)
{
        static const char help[] = "Usage: nano store cat RELEASE PATH\n\nWrite the content of a regular file of a release to stdout.\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        _cleanup_(nano_manifest_freep) NanoManifest *m = NULL;
        _cleanup_(nano_blob_freep) NanoBlob *b = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        uint8_t id[32];
        uint32_t idx;
        NanoEntry e;
        Opts o = { 0 };
        int r;

        r = parse(argc, argv, &o, "", help);
        if (r < 0)
                return parse_exit(r);
        if (argc - r != 2)
                return usage_error("store cat: expected RELEASE and PATH");
        const char *release = argv[r], *path = argv[r + 1];
        r = open_store(&s);
        if (r < 0)
                return -r;
        r = open_release(s, release, &m, id);
        if (r < 0)
                return -r;
        r = nano_manifest_resolve(m, path, &idx);
        if (r < 0) {
                log_error("'%s' is not in %s%s", path, release, r == -ENOTDIR ? " (a parent is not a directory)" : "");
                return NANO_EXIT_NOT_FOUND;
        }
        nano_manifest_entry(m, idx, &e);
        if (e.type == NANO_ENTRY_DIRECTORY) {
                log_error("'%s' in %s is a directory", path, release);
                return NANO_EXIT_FAILURE;
        }
        if (e.type == NANO_ENTRY_SYMLINK) {
                log_error("'%s' in %s is a symlink to '%.*s'", path, release, (int)e.size, e.target);
                return NANO_EXIT_FAILURE;
        }
        r = nano_store_open_blob(s, e.digest, &b);
        if (r < 0) {
                log_error_errno(r, "cannot open the content of '%s' in %s: %s", path, release,
                                r == -ENOENT ? "missing from the store (run 'nano store fsck')" :
                                r == -ENOLINK ? "the object it is a delta of is missing (run 'nano store fsck')" :
                                r == -EBADMSG ? "corrupt (run 'nano store fsck')" : "%m");
                return r == -ENOENT || r == -ENOLINK ? NANO_EXIT_CORRUPT : exit_code_from_errno(r);
        }
        buf = malloc((size_t)1 << nano_blob_chunk_shift(b));
        if (!buf)
                return fail(NULL, -ENOMEM, "cat");
        for (uint64_t i = 0; i < nano_blob_n_chunks(b); i++) {
                ssize_t n = nano_blob_read_chunk(b, i, buf);
                if (n < 0) {
                        log_error_errno((int)n, "cannot read '%s' in %s: %s", path, release,
                                        n == -EBADMSG ? "a chunk is corrupt (run 'nano store fsck')" : "%m");
                        return exit_code_from_errno((int)n);
                }
                r = write_all(STDOUT_FILENO, buf, (size_t)n);
                if (r < 0)
                        return fail(NULL, r, "cannot write to stdout");
        }
        return NANO_EXIT_OK;
}

/* ---- checkout, rm */

static int verb_checkout(int argc, char **argv)
{
        static const char help[] =
                "Usage: nano store checkout RELEASE DIR\n"
                "\n"
                "Write a release into DIR (new or empty): content, permission bits, symlinks and mtimes,\n"
                "for hosts without FUSE.\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        NanoError err = { 0 };
        uint8_t id[32];
        Opts o = { 0 };
        int r;

        r = parse(argc, argv, &o, "", help);
        if (r < 0)
                return parse_exit(r);
        if (argc - r != 2)
                return usage_error("store checkout: expected RELEASE and DIR");
        const char *release = argv[r], *dir = argv[r + 1];
        r = open_store(&s);
        if (r < 0)
                return -r;
        r = nano_store_resolve(s, release, id, &err);
        if (r < 0)
                return fail_resolve(&err, r);
        r = nano_store_checkout(s, id, dir, &err);
        if (r < 0)
                return fail(&err, r, "checkout failed");
        return NANO_EXIT_OK;
}

static int verb_rm(int argc, char **argv)
{
        static const char help[] =
                "Usage: nano store rm [-q] RELEASE...\n"
                "\n"
                "Remove releases (name@version). Their content stays until 'nano store gc'.\n"
                "\n"
                "Options:\n"
                "  -q, --quiet   print nothing on success\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        Opts o = { 0 };
        int r, ret = NANO_EXIT_OK;

        r = parse(argc, argv, &o, "quiet", help);
        if (r < 0)
                return parse_exit(r);
        if (r >= argc)
                return usage_error("store rm: expected at least one RELEASE");
        int first = r;
        r = open_store(&s);
        if (r < 0)
                return -r;
        for (int i = first; i < argc; i++) {
                NanoError err = { 0 };
                r = nano_store_remove(s, argv[i], &err);
                if (r < 0)
                        ret = fail_resolve(&err, r);
                else if (!o.quiet)
                        printf("removed %s\n", argv[i]);
        }
        return ret;
}

/* ---- gc, fsck, du */

static int verb_gc(int argc, char **argv)
{
        static const char help[] =
                "Usage: nano store gc [--json]\n"
                "\n"
                "Remove every object and manifest no release uses, and leftovers of interrupted\n"
                "imports; print what was freed. Waits for running imports.\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        NanoError err = { 0 };
        NanoGcResult res;
        Opts o = { 0 };
        char b[32];
        int r;

        if (!begin_without_operands(argc, argv, &o, "json", help, &s, &r))
                return r;
        r = nano_store_gc(s, &res, &err);
        if (r < 0)
                return fail(&err, r, "gc failed");
        if (res.unreadable > 0)
                log_warning("%llu releases have a manifest that cannot be read: no object was removed (run "
                            "'nano store fsck')",
                            (unsigned long long)res.unreadable);
        if (res.unknown_roots > 0)
                log_warning("%llu refs or pins are malformed: no object or manifest was removed (run 'nano "
                            "store fsck')",
                            (unsigned long long)res.unknown_roots);
        if (res.unreadable_objects > 0)
                log_warning("%llu objects in use are delta objects whose container cannot be read: no object "
                            "was removed (run 'nano store fsck')",
                            (unsigned long long)res.unreadable_objects);
        if (o.json) {
                json_object *j = json_object_new_object();
                json_add_u64(j, "objects", res.objects);
                json_add_u64(j, "manifests", res.manifests);
                json_add_u64(j, "temporaries", res.temporaries);
                json_add_u64(j, "bytes", res.bytes);
                json_print(j);
        } else
                printf("removed %llu objects, %llu manifests and %llu temporary files: freed %s\n",
                       (unsigned long long)res.objects, (unsigned long long)res.manifests,
                       (unsigned long long)res.temporaries, format_bytes(res.bytes, b, sizeof b));
        return NANO_EXIT_OK;
}

static const char *problem_kind(NanoProblemKind k)
{
        switch (k) {
        case NANO_PROBLEM_CORRUPT_OBJECT: return "corrupt-object";
        case NANO_PROBLEM_MISSING_OBJECT: return "missing-object";
        case NANO_PROBLEM_CORRUPT_MANIFEST: return "corrupt-manifest";
        case NANO_PROBLEM_MISSING_MANIFEST: return "missing-manifest";
        case NANO_PROBLEM_BAD_REF: return "bad-ref";
        case NANO_PROBLEM_STRAY_FILE: return "stray-file";
        }
        return "unknown";
}

static void fsck_problem(const NanoProblem *p, void *userdata)
{
        json_object *arr = userdata;

        if (arr) {
                json_object *j = json_object_new_object();
                json_object_object_add(j, "kind", json_object_new_string(problem_kind(p->kind)));
                json_object_object_add(j, "file", json_object_new_string(p->file));
                json_object_object_add(j, "release", p->release ? json_object_new_string(p->release) : NULL);
                json_object_object_add(j, "path", p->path ? json_object_new_string(p->path) : NULL);
                json_object_object_add(j, "detail", json_object_new_string(p->detail));
                json_object_object_add(j, "repaired", json_object_new_boolean(p->repaired));
                json_object_array_add(arr, j);
                return;
        }
        if (p->release && p->path)
                printf("%s: %s: '%s' in %s: %s\n", problem_kind(p->kind), p->file, p->path, p->release, p->detail);
        else if (p->release)
                printf("%s: %s (%s): %s\n", problem_kind(p->kind), p->file, p->release, p->detail);
        else
                printf("%s: %s: %s%s\n", problem_kind(p->kind), p->file, p->detail, p->repaired ? " (repaired)" : "");
}

static int verb_fsck(int argc, char **argv)
{
        static const char help[] =
                "Usage: nano store fsck [--repair] [--json]\n"
                "\n"
                "Verify every object (sha256 and every chunk's checksum), manifest and ref, and that every\n"
                "object a release needs is present. Reports each problem with the release and path it\n"
                "breaks. Leftovers of interrupted imports are always removed. Waits for running imports.\n"
                "\n"
                "Options:\n"
                "  --repair   remove corrupt objects and manifests and malformed refs (adding the\n"
                "             release again then restores what they held)\n"
                "  --json     print the result as JSON\n"
                "\n"
                "Exit status: 0 when the store is sound, 4 when problems remain.\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        NanoError err = { 0 };
        NanoFsckResult res;
        json_object *arr = NULL;
        Opts o = { 0 };
        char b[32];
        int r;

        if (!begin_without_operands(argc, argv, &o, "json repair", help, &s, &r))
                return r;
        if (o.json)
                arr = json_object_new_array();
        r = nano_store_fsck(s, o.repair, fsck_problem, arr, &res, &err);
        if (r < 0) {
                json_object_put(arr);
                return fail(&err, r, "fsck failed");
        }
        if (o.json) {
                json_object *j = json_object_new_object();
                json_add_u64(j, "objects", res.objects);
                json_add_u64(j, "manifests", res.manifests);
                json_add_u64(j, "refs", res.refs);
                json_add_u64(j, "bytes", res.bytes);
                json_add_u64(j, "problems", res.problems);
                json_add_u64(j, "repaired", res.repaired);
                json_add_u64(j, "temporaries", res.temporaries);
                json_object_object_add(j, "problem_list", arr);
                json_print(j);
        } else {
                printf("checked %llu objects (%s), %llu manifests, %llu refs: %llu problems",
                       (unsigned long long)res.objects, format_bytes(res.bytes, b, sizeof b),
                       (unsigned long long)res.manifests, (unsigned long long)res.refs,
                       (unsigned long long)res.problems);
                if (res.repaired)
                        printf(", %llu repaired", (unsigned long long)res.repaired);
                if (res.temporaries)
                        printf("; removed %llu leftovers of interrupted writes", (unsigned long long)res.temporaries);
                putchar('\n');
        }
        return r > 0 ? NANO_EXIT_CORRUPT : NANO_EXIT_OK;
}

static int verb_du(int argc, char **argv)
{
        static const char help[] =
                "Usage: nano store du [--json]\n"
                "\n"
                "Space: logical bytes (all releases' files), unique content bytes, bytes stored\n"
                "(compressed objects and manifests), disk usage, and the dedup and compression ratios.\n";
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        NanoError err = { 0 };
        NanoDuResult res;
        Opts o = { 0 };
        int r;

        if (!begin_without_operands(argc, argv, &o, "json", help, &s, &r))
                return r;
        r = nano_store_du(s, &res, &err);
        if (r < 0)
                return fail(&err, r, "du failed");
        double dedup = res.unique_bytes ? (double)res.logical_bytes / (double)res.unique_bytes : 1.0;
        double comp = res.stored_bytes ? (double)res.unique_bytes / (double)res.stored_bytes : 1.0;
        if (o.json) {
                json_object *j = json_object_new_object();
                json_add_u64(j, "releases", res.releases);
                json_add_u64(j, "logical_bytes", res.logical_bytes);
                json_add_u64(j, "unique_bytes", res.unique_bytes);
                json_add_u64(j, "stored_bytes", res.stored_bytes);
                json_add_u64(j, "disk_bytes", res.disk_bytes);
                json_add_u64(j, "objects", res.objects);
                json_add_u64(j, "manifests", res.manifests);
                json_object_object_add(j, "dedup_ratio", json_object_new_double(dedup));
                json_object_object_add(j, "compression_ratio", json_object_new_double(comp));
                json_print(j);
        } else {
                char a[32], b[32], c[32], d[32];
                printf("releases:        %llu\n", (unsigned long long)res.releases);
                printf("logical bytes:   %s (all releases' files)\n", format_bytes(res.logical_bytes, a, sizeof a));
                printf("unique content:  %s (dedup ratio %.2f)\n", format_bytes(res.unique_bytes, b, sizeof b), dedup);
                printf("stored:          %s in %llu objects and %llu manifests (compression ratio %.2f)\n",
                       format_bytes(res.stored_bytes, c, sizeof c), (unsigned long long)res.objects,
                       (unsigned long long)res.manifests, comp);
                printf("on disk:         %s\n", format_bytes(res.disk_bytes, d, sizeof d));
        }
        return NANO_EXIT_OK;
}

static const Verb store_verbs[] = {
        { "add", verb_add, NULL },       { "ls", verb_ls, NULL },     { "show", verb_show, NULL },
        { "cat", verb_cat, NULL },       { "checkout", verb_checkout, NULL }, { "rm", verb_rm, NULL },
        { "gc", verb_gc, NULL },         { "fsck", verb_fsck, NULL }, { "du", verb_du, NULL },
};

int verb_store(int argc, char **argv)
{
        return verb_dispatch("nano store", store_verbs, ELEMENTSOF(store_verbs), argc - 1, argv + 1, store_help);
}
