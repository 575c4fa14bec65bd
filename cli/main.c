/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The `nano` command: argument parsing, output and exit codes over libnano. Thin: every operation is
 * a library call, and this is the only place that prints user-facing errors. */
#include <getopt.h>
#include <stdarg.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "log.h"
#include "util.h"

const char *arg_home;

static const char main_help[] =
        "Usage: nano [OPTIONS] COMMAND [ARGS...]\n"
        "\n"
        "Run many versions and many instances of services without superuser.\n"
        "\n"
        "Commands:\n"
        "  store       the content-addressed store: add, ls, show, cat, checkout, rm, gc, fsck, du\n"
        "  mount       mount the store read-only with FUSE; --status tells how it is\n"
        "  umount      unmount it\n"
        "  run         run a release as a new instance (foreground, or -d detached)\n"
        "  ps          list the instances\n"
        "  inspect     everything about an instance, as applied\n"
        "  logs        what a detached instance's service wrote\n"
        "  stop        stop instances\n"
        "  rm          remove instances\n"
        "  exec        run a command inside a running instance\n"
        "  version     print the version and the features built in\n"
        "  help        print this help\n"
        "\n"
        "Options:\n"
        "  --home DIR        use DIR as NANO_HOME (default: $NANO_HOME, else\n"
        "                    ${XDG_DATA_HOME:-$HOME/.local/share}/nano)\n"
        "  --log-level LEVEL error, warning, notice, info or debug (also $NANO_LOG_LEVEL)\n"
        "  -h, --help        print this help\n"
        "  --version         print the version\n"
        "\n"
        "Run 'nano COMMAND --help' for a command's options. Exit codes are listed in doc/cli.md.\n";

int usage_error(const char *fmt, ...)
{
        va_list ap;

        fputs("nano: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\n", stderr);
        return NANO_EXIT_USAGE;
}

int exit_code_from_errno(int r)
{
        switch (r < 0 ? -r : r) {
        case 0:
                return NANO_EXIT_OK;
        case ENOENT:
                return NANO_EXIT_NOT_FOUND;
        case EBADMSG:
                return NANO_EXIT_CORRUPT;
        case EEXIST:
                return NANO_EXIT_EXISTS;
        default:
                return NANO_EXIT_FAILURE;
        }
}

int fail(const NanoError *err, int r, const char *what)
{
        if (err && err->error && err->message[0])
                log_error("%s", err->message);
        else
                log_error_errno(r, "%s: %m", what);
        return exit_code_from_errno(r);
}

void json_print(json_object *o)
{
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
}

int verb_dispatch(const char *prefix, const Verb *verbs, size_t n, int argc, char **argv, const char *help)
{
        if (argc < 1)
                return usage_error("%s: missing command; see '%s --help'", prefix, prefix);
        if (streq(argv[0], "--help") || streq(argv[0], "-h") || streq(argv[0], "help")) {
                fputs(help, stdout);
                return NANO_EXIT_OK;
        }
        for (size_t i = 0; i < n; i++)
                if (streq(argv[0], verbs[i].name))
                        return verbs[i].run(argc, argv);
        return usage_error("%s: unknown command '%s'; see '%s --help'", prefix, argv[0], prefix);
}

static int verb_version(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        printf("nano %s\n%s\n", NANO_VERSION, NANO_FEATURES);
        return NANO_EXIT_OK;
}

static int verb_help(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        fputs(main_help, stdout);
        return NANO_EXIT_OK;
}

static const Verb verbs[] = {
        { "store", verb_store, "the content-addressed store" },
        { "mount", verb_mount, "mount the store with FUSE" },
        { "umount", verb_umount, "unmount the store" },
        { "run", verb_run, "run a release" },
        { "ps", verb_instance_ps, "list the instances" },
        { "inspect", verb_instance_inspect, "show an instance" },
        { "logs", verb_instance_logs, "print an instance's log" },
        { "stop", verb_instance_stop, "stop instances" },
        { "rm", verb_instance_rm, "remove instances" },
        { "exec", verb_instance_exec, "run a command in an instance" },
        /* What the monitor execs for each (re)start of a service; not for people. */
        { "__spawn", verb_spawn, NULL },
        { "version", verb_version, "print the version" },
        { "help", verb_help, "print help" },
};

int main(int argc, char **argv)
{
        enum { OPT_HOME = 0x100, OPT_LOG_LEVEL, OPT_VERSION };
        static const struct option options[] = {
                { "home", required_argument, NULL, OPT_HOME },
                { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, OPT_VERSION },
                {},
        };
        int c, l;

        log_parse_environment();
        /* "+": stop at the command, whose options are its own. */
        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0) {
                switch (c) {
                case OPT_HOME:
                        arg_home = optarg;
                        break;
                case OPT_LOG_LEVEL:
                        if ((l = log_level_from_string(optarg)) < 0)
                                return usage_error("invalid log level '%s': use error, warning, notice, info or debug",
                                                   optarg);
                        log_set_max_level(l);
                        break;
                case 'h':
                        return verb_help(0, NULL);
                case OPT_VERSION:
                        return verb_version(0, NULL);
                default:
                        return usage_error("see 'nano --help'");
                }
        }
        if (optind >= argc)
                return usage_error("missing command; see 'nano --help'");
        argc -= optind;
        argv += optind;
        optind = 0; /* the verbs parse their own options with getopt_long */
        return verb_dispatch("nano", verbs, ELEMENTSOF(verbs), argc, argv, main_help);
}
