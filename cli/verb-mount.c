/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* nano mount, nano umount: the store's read-only FUSE mount (doc/mount.md). The daemon's life cycle
 * is in libnano (fuse/fuse.h); this file parses, decides what to say, and says it. */
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "config.h"
#include "log.h"
#include "util.h"

#if HAVE_FUSE
#include "fuse.h"
#endif

static const char mount_help[] =
        "Usage: nano mount [MOUNTPOINT] [OPTIONS]\n"
        "       nano mount --status [MOUNTPOINT] [--json]\n"
        "\n"
        "Mount the store read-only with FUSE on MOUNTPOINT (default: $NANO_HOME/mnt, created if\n"
        "missing): /<name>/<version>/... is each release, /by-id/sha256:<id>/... any tree of the\n"
        "store. Rootless (through fusermount3), or directly as root of a user namespace.\n"
        "The daemon runs in the background, logging to $NANO_HOME/mount.log; the command returns\n"
        "once the mount answers and prints MOUNTPOINT. Mounting again is a no-op; a dead mount left\n"
        "by a killed daemon is cleaned up first. One daemon serves a store.\n"
        "\n"
        "Options:\n"
        "  -f, --foreground   stay in the foreground, logging to stderr; Ctrl-C or SIGTERM unmounts\n"
        "  --cache-size SIZE  memory for decompressed chunks, e.g. 256M (default 64M; 0 disables)\n"
        "  --threads N        most threads serving requests, 1..256 (default 16)\n"
        "  --debug            log every request (with --foreground, to stderr)\n"
        "  --status           tell whether MOUNTPOINT is mounted, by which daemon, and if it is alive\n"
        "  --json             with --status: print it as JSON\n";

static const char umount_help[] =
        "Usage: nano umount [MOUNTPOINT] [--lazy]\n"
        "\n"
        "Unmount the store's mount (default: $NANO_HOME/mnt); its daemon then exits. Fails if a\n"
        "process still uses files under it, unless --lazy.\n"
        "\n"
        "Options:\n"
        "  -l, --lazy   detach now; the mount goes away when the last file under it is closed\n";

#if HAVE_FUSE

static void store_unrefp(NanoStore **s)
{
        nano_store_unref(*s);
}

/* The mountpoint argument, or $NANO_HOME/mnt (created), made absolute. */
static int resolve_mountpoint(NanoStore *s, const char *arg, char **ret)
{
        _cleanup_free_ char *def = NULL;
        int r;

        if (!arg) {
                if (asprintf(&def, "%s/mnt", nano_store_home(s)) < 0)
                        return log_error_errno(ENOMEM, "out of memory");
                if (mkdir(def, 0755) < 0 && errno != EEXIST)
                        return log_error_errno(errno, "cannot create the mountpoint '%s': %m", def);
                arg = def;
        }
        r = nano_mount_canonicalize(arg, ret);
        if (r < 0)
                return log_error_errno(r, "invalid mountpoint '%s': %m", arg);
        return 0;
}

static const char *state_name(NanoMountState s)
{
        switch (s) {
        case NANO_MOUNT_LIVE:
                return "mounted";
        case NANO_MOUNT_STALE:
                return "stale";
        case NANO_MOUNT_FOREIGN:
                return "foreign";
        default:
                return "not-mounted";
        }
}

static int print_status(const NanoMountStatus *st, const char *home, bool json)
{
        bool ours = st->state == NANO_MOUNT_LIVE;
        char b[32];

        if (json) {
                json_object *j = json_object_new_object();
                char *log = NULL;
                json_object_object_add(j, "mountpoint", json_object_new_string(st->mountpoint));
                json_object_object_add(j, "mounted", json_object_new_boolean(ours));
                json_object_object_add(j, "state", json_object_new_string(state_name(st->state)));
                json_object_object_add(
                        j, "pid", st->daemon_alive && st->pid > 0 ? json_object_new_int(st->pid) : NULL);
                json_object_object_add(j, "alive", json_object_new_boolean(st->daemon_alive));
                json_object_object_add(j, "daemon_mountpoint",
                                       st->daemon_alive && st->daemon_mountpoint[0]
                                               ? json_object_new_string(st->daemon_mountpoint)
                                               : NULL);
                json_object_object_add(j, "cache_size",
                                       st->daemon_alive ? json_object_new_int64((int64_t)st->cache_size)
                                                        : NULL);
                json_object_object_add(j, "threads",
                                       st->daemon_alive ? json_object_new_int((int)st->threads) : NULL);
                if (asprintf(&log, "%s/%s", home, NANO_MOUNT_LOG_FILE) >= 0) {
                        json_object_object_add(j, "log", json_object_new_string(log));
                        free(log);
                }
                json_print(j);
                return NANO_EXIT_OK;
        }

        printf("mountpoint: %s\n", st->mountpoint);
        switch (st->state) {
        case NANO_MOUNT_LIVE:
                printf("state:      mounted, daemon pid %ld alive\n", (long)st->pid);
                break;
        case NANO_MOUNT_STALE:
                printf("state:      stale (a nano mount whose daemon is gone; `nano mount` cleans it)\n");
                break;
        case NANO_MOUNT_FOREIGN:
                printf("state:      another filesystem is mounted there\n");
                break;
        default:
                printf("state:      not mounted\n");
        }
        if (st->daemon_alive) {
                if (!ours)
                        printf("daemon:     pid %ld serves '%s'\n", (long)st->pid, st->daemon_mountpoint);
                printf("cache size: %s\n", format_bytes(st->cache_size, b, sizeof b));
                printf("threads:    %u\n", st->threads);
        }
        printf("log:        %s/%s\n", home, NANO_MOUNT_LOG_FILE);
        return NANO_EXIT_OK;
}

static void foreground_ready(void *userdata)
{
        /* The mountpoint on stdout means "ready", as for the background mode. */
        printf("%s\n", (const char *)userdata);
        fflush(stdout);
}

/* Waits (at most 10 s: a daemon that takes longer to mount has failed, and says so in its log) for
 * the mount at mp to answer. Gives up after 2 s when no daemon of this store is alive: the daemon's
 * pid and state files are replaced while it starts, so a reader can briefly see neither it alive
 * nor where it serves. True once the mount answers. */
static bool wait_for_live(const char *home, const char *mp, NanoMountStatus *st)
{
        for (unsigned i = 0; i < 500; i++) {
                if (nano_mount_status(home, mp, st) < 0)
                        return false;
                if (st->state == NANO_MOUNT_LIVE)
                        return true;
                if (i >= 100 && !st->daemon_alive)
                        return false;
                (void)usleep(20 * 1000);
        }
        return false;
}

int verb_mount(int argc, char **argv)
{
        enum { OPT_CACHE = 0x100, OPT_THREADS, OPT_DEBUG, OPT_STATUS, OPT_JSON };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "foreground", no_argument, NULL, 'f' },
                { "cache-size", required_argument, NULL, OPT_CACHE },
                { "threads", required_argument, NULL, OPT_THREADS },
                { "debug", no_argument, NULL, OPT_DEBUG },
                { "status", no_argument, NULL, OPT_STATUS },
                { "json", no_argument, NULL, OPT_JSON },
                {},
        };
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        _cleanup_free_ char *mp = NULL;
        NanoFuseOptions o = { .cache_size = NANO_FUSE_CACHE_SIZE_DEFAULT,
                              .threads = NANO_FUSE_THREADS_DEFAULT };
        bool foreground = false, status = false, json = false;
        NanoMountStatus st;
        NanoError err = {};
        pid_t pid = 0;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        fputs(mount_help, stdout);
                        return NANO_EXIT_OK;
                case 'f':
                        foreground = true;
                        break;
                case OPT_CACHE:
                        if (parse_size(optarg, &o.cache_size) < 0)
                                return usage_error("mount: invalid --cache-size '%s': use e.g. 64M, 1G or 0",
                                                   optarg);
                        break;
                case OPT_THREADS: {
                        char *end;
                        long l = strtol(optarg, &end, 10);
                        if (*end || l < 1 || l > (long)NANO_FUSE_THREADS_MAX)
                                return usage_error("mount: --threads must be 1..%u, not '%s'",
                                                   NANO_FUSE_THREADS_MAX, optarg);
                        o.threads = (unsigned)l;
                        break;
                }
                case OPT_DEBUG:
                        o.debug = true;
                        log_set_max_level(LOG_LEVEL_DEBUG);
                        break;
                case OPT_STATUS:
                        status = true;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                default:
                        return usage_error("mount: see 'nano mount --help'");
                }
        }
        if (argc - optind > 1)
                return usage_error("mount: expected at most one MOUNTPOINT");
        if (json && !status)
                return usage_error("mount: --json goes with --status");

        r = nano_store_open(arg_home, &s, &err);
        if (r < 0)
                return fail(&err, r, "cannot open the store");
        const char *home = nano_store_home(s);
        if (resolve_mountpoint(s, optind < argc ? argv[optind] : NULL, &mp) < 0)
                return NANO_EXIT_FAILURE;

        r = nano_mount_status(home, mp, &st);
        if (r < 0) {
                log_error_errno(r, "cannot read the mount table: %m");
                return NANO_EXIT_FAILURE;
        }
        if (status)
                return print_status(&st, home, json);

        /* A daemon of this store that is alive but does not serve here yet is a concurrent `nano mount`
         * (or `nano run`) starting it (the mount may even be there before the daemon says where it
         * serves): its mount is ours too once it answers. */
        if (st.state != NANO_MOUNT_LIVE &&
            ((st.daemon_alive && (!st.daemon_mountpoint[0] || streq(st.daemon_mountpoint, mp))) ||
             st.state == NANO_MOUNT_FOREIGN) &&
            wait_for_live(home, mp, &st)) {
                printf("%s\n", mp);
                return NANO_EXIT_OK;
        }

        switch (st.state) {
        case NANO_MOUNT_LIVE:
                log_notice("'%s' is already mounted (daemon pid %ld)", mp, (long)st.pid);
                printf("%s\n", mp);
                return NANO_EXIT_OK;
        case NANO_MOUNT_FOREIGN:
                log_error("'%s' is already the mountpoint of another filesystem", mp);
                return NANO_EXIT_FAILURE;
        case NANO_MOUNT_STALE:
                log_notice("'%s' is a stale mount (its daemon is gone): unmounting it", mp);
                r = nano_mount_clean_stale(home, mp, &err);
                if (r < 0)
                        return fail(&err, r, "cannot clean the stale mount");
                break;
        default:
                break;
        }
        /* Refresh: cleaning may have let the old daemon go. */
        r = nano_mount_status(home, mp, &st);
        if (r < 0) {
                log_error_errno(r, "cannot read the mount table: %m");
                return NANO_EXIT_FAILURE;
        }
        if (st.daemon_alive && (!st.daemon_mountpoint[0] || streq(st.daemon_mountpoint, mp)) &&
            wait_for_live(home, mp, &st)) {
                printf("%s\n", mp);
                return NANO_EXIT_OK;
        }
        if (st.daemon_alive) {
                log_error("the store '%s' is already served on '%s' (daemon pid %ld): one daemon serves a "
                          "store; "
                          "use that mountpoint or `nano umount` it first",
                          home, st.daemon_mountpoint[0] ? st.daemon_mountpoint : "?", (long)st.pid);
                return NANO_EXIT_FAILURE;
        }

        if (foreground)
                r = nano_mount_run(s, mp, &o, foreground_ready, mp, &pid, &err);
        else
                r = nano_mount_start(s, mp, &o, &pid, &err);
        if (r == -EALREADY) {
                /* Another `nano mount` won the race for the pid file: fine once it mounted here. */
                if (wait_for_live(home, mp, &st)) {
                        printf("%s\n", mp);
                        return NANO_EXIT_OK;
                }
                log_error("another mount daemon of the store '%s' is starting (pid %ld)", home, (long)pid);
                return NANO_EXIT_FAILURE;
        }
        if (r < 0)
                return fail(&err, r, "cannot mount the store");
        if (!foreground)
                printf("%s\n", mp);
        return NANO_EXIT_OK;
}

int verb_umount(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "lazy", no_argument, NULL, 'l' },
                {},
        };
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        _cleanup_free_ char *mp = NULL, *def = NULL;
        NanoError err = {};
        bool lazy = false;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hl", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        fputs(umount_help, stdout);
                        return NANO_EXIT_OK;
                case 'l':
                        lazy = true;
                        break;
                default:
                        return usage_error("umount: see 'nano umount --help'");
                }
        }
        if (argc - optind > 1)
                return usage_error("umount: expected at most one MOUNTPOINT");

        r = nano_store_open(arg_home, &s, &err);
        if (r < 0)
                return fail(&err, r, "cannot open the store");
        if (optind >= argc && asprintf(&def, "%s/mnt", nano_store_home(s)) < 0) {
                log_error_errno(ENOMEM, "out of memory");
                return NANO_EXIT_FAILURE;
        }
        const char *arg = optind < argc ? argv[optind] : def;
        r = nano_mount_canonicalize(arg, &mp);
        if (r < 0) {
                log_error_errno(r, "invalid mountpoint '%s': %m", arg);
                return NANO_EXIT_FAILURE;
        }

        r = nano_mount_stop(nano_store_home(s), mp, lazy, &err);
        if (r < 0) {
                log_error("%s", err.message[0] ? err.message : "cannot unmount");
                return NANO_EXIT_FAILURE;
        }
        if (r > 0)
                log_warning("'%s' is unmounted, but its daemon has not exited yet", mp);
        return NANO_EXIT_OK;
}

#else /* !HAVE_FUSE */

static int without_fuse(int argc, char **argv, const char *help)
{
        for (int i = 1; i < argc; i++)
                if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        fputs(help, stdout);
                        return NANO_EXIT_OK;
                }
        log_error("nano was built without FUSE support");
        return NANO_EXIT_FAILURE;
}

int verb_mount(int argc, char **argv)
{
        return without_fuse(argc, argv, mount_help);
}

int verb_umount(int argc, char **argv)
{
        return without_fuse(argc, argv, umount_help);
}

#endif
