/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* nano run, and the hidden nano __spawn the monitor execs for each (re)start (doc/run.md). The work is
 * in runtime/; this parses, says the notices and errors, and picks the exit code. */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"
#include "runtime.h"
#include "util.h"

static const char run_help[] =
        "Usage: nano run [OPTIONS] RELEASE [-- CMD [ARGS...]]\n"
        "\n"
        "Run a release as a new instance ($NANO_HOME/instances/NAME: data/, logs/, state.json). In the\n"
        "foreground by default: signals are forwarded, and nano exits with the service's exit code\n"
        "(128+N when killed by signal N). Without CMD, the release's bin/NAME or .nano/command runs.\n"
        "\n"
        "Options:\n"
        "  -d, --detach             run in the background, owned by a small monitor; print the name\n"
        "  --name NAME              the instance's name (default: RELEASE-NAME-<random>)\n"
        "  -e, --env K=V            set a variable for the service (repeatable)\n"
        "  -w, --workdir DIR        working directory (default: the instance's data dir)\n"
        "  --restart POLICY         no (default), on-failure or always; exponential back-off\n"
        "  --rm                     remove the instance when it is over\n"
        "  --isolate MODE           bare, ns or rootfs (default: ns where user namespaces work)\n"
        "  --pid                    own pid namespace (with ns or rootfs)\n"
        "  --net none|host          none: a private network with only loopback (default: host)\n"
        "  --memory SIZE            memory limit, e.g. 256M\n"
        "  --cpus N                 CPU limit, e.g. 0.5\n"
        "  --pids N                 most processes\n"
        "  --require-limits         fail (125) unless every limit can be applied\n"
        "  --seccomp default|none|FILE  system call deny-list (FILE: one name a line, @default)\n"
        "  --log-max SIZE           service.log size before rotation to .1 (default 8M)\n"
        "\n"
        "Exit codes: the service's own; 125 nano failed; 126 the command cannot be executed;\n"
        "127 the command was not found.\n";

static void print_notice(const char *message, void *userdata)
{
        (void)userdata;
        log_notice("%s", message);
}

static int run_error(const char *fmt, ...) _printf_(1, 2);
static int run_error(const char *fmt, ...)
{
        va_list ap;

        fputs("nano: run: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\n", stderr);
        /* 125, not 2: the service's own exit codes must stay unambiguous. */
        return NANO_EXIT_RUN_FAILED;
}

int verb_run(int argc, char **argv)
{
        enum { OPT_NAME = 0x100, OPT_RESTART, OPT_RM, OPT_ISOLATE, OPT_PID, OPT_NET, OPT_MEMORY, OPT_CPUS,
               OPT_PIDS, OPT_REQUIRE_LIMITS, OPT_SECCOMP, OPT_LOG_MAX };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "detach", no_argument, NULL, 'd' },
                { "name", required_argument, NULL, OPT_NAME },
                { "env", required_argument, NULL, 'e' },
                { "workdir", required_argument, NULL, 'w' },
                { "restart", required_argument, NULL, OPT_RESTART },
                { "rm", no_argument, NULL, OPT_RM },
                { "isolate", required_argument, NULL, OPT_ISOLATE },
                { "pid", no_argument, NULL, OPT_PID },
                { "net", required_argument, NULL, OPT_NET },
                { "memory", required_argument, NULL, OPT_MEMORY },
                { "cpus", required_argument, NULL, OPT_CPUS },
                { "pids", required_argument, NULL, OPT_PIDS },
                { "require-limits", no_argument, NULL, OPT_REQUIRE_LIMITS },
                { "seccomp", required_argument, NULL, OPT_SECCOMP },
                { "log-max", required_argument, NULL, OPT_LOG_MAX },
                {},
        };
        NanoRunOptions o = { .home = arg_home, .isolate = NANO_RUN_ISOLATE_AUTO, .notice = print_notice,
                             .exits_after = true };
        _cleanup_free_ char **env = NULL;
        NanoRunResult res = {};
        NanoError err = {};
        size_t n_env = 0;
        int c, r;

        optind = 0;
        /* "+": options stop at RELEASE; what follows is the command's. */
        while ((c = getopt_long(argc, argv, "+hde:w:", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        fputs(run_help, stdout);
                        return NANO_EXIT_OK;
                case 'd':
                        o.detach = true;
                        break;
                case OPT_NAME:
                        if (!nano_instance_name_is_valid(optarg))
                                return run_error("invalid --name '%s': use [A-Za-z0-9][A-Za-z0-9._+-]{0,63}", optarg);
                        o.name = optarg;
                        break;
                case 'e': {
                        char **nv = reallocarray(env, n_env + 2, sizeof *nv);
                        if (!strchr(optarg, '=') || optarg[0] == '=')
                                return run_error("--env '%s': expected KEY=VALUE", optarg);
                        if (!nv)
                                return run_error("out of memory");
                        env = nv;
                        env[n_env++] = optarg;
                        env[n_env] = NULL;
                        break;
                }
                case 'w':
                        o.workdir = optarg;
                        break;
                case OPT_RESTART:
                        o.restart = nano_restart_policy_from_string(optarg);
                        if (o.restart < 0)
                                return run_error("--restart must be no, on-failure or always, not '%s'", optarg);
                        break;
                case OPT_RM:
                        o.remove = true;
                        break;
                case OPT_ISOLATE:
                        if (streq(optarg, "bare"))
                                o.isolate = NANO_RUN_ISOLATE_BARE;
                        else if (streq(optarg, "ns"))
                                o.isolate = NANO_RUN_ISOLATE_NS;
                        else if (streq(optarg, "rootfs"))
                                o.isolate = NANO_RUN_ISOLATE_ROOTFS;
                        else
                                return run_error("--isolate must be bare, ns or rootfs, not '%s'", optarg);
                        break;
                case OPT_PID:
                        o.pid_ns = true;
                        break;
                case OPT_NET:
                        if (!streq(optarg, "none") && !streq(optarg, "host"))
                                return run_error("--net must be none or host, not '%s'", optarg);
                        o.net_none = streq(optarg, "none");
                        break;
                case OPT_MEMORY:
                        if (parse_size(optarg, &o.memory) < 0 || o.memory < 4096)
                                return run_error("invalid --memory '%s': use e.g. 64M or 1G", optarg);
                        break;
                case OPT_CPUS: {
                        char *end;
                        double d = strtod(optarg, &end);
                        if (*end || !(d >= 0.01) || d > 4096)
                                return run_error("invalid --cpus '%s': use e.g. 0.5 or 2", optarg);
                        o.cpus_milli = (uint64_t)(d * 1000 + 0.5); /* d > 0: rounds, without libm */
                        break;
                }
                case OPT_PIDS: {
                        char *end;
                        unsigned long long v = strtoull(optarg, &end, 10);
                        if (*end || v < 1 || v > 4194304)
                                return run_error("invalid --pids '%s': use a number of processes", optarg);
                        o.pids = v;
                        break;
                }
                case OPT_REQUIRE_LIMITS:
                        o.require_limits = true;
                        break;
                case OPT_SECCOMP:
                        o.seccomp = optarg;
                        break;
                case OPT_LOG_MAX:
                        if (parse_size(optarg, &o.log_max) < 0 || o.log_max < 1024)
                                return run_error("invalid --log-max '%s': use e.g. 8M", optarg);
                        break;
                default:
                        return run_error("see 'nano run --help'");
                }
        }
        if (optind >= argc)
                return run_error("missing RELEASE (name@version or sha256:<id>); see 'nano run --help'");
        o.release = argv[optind++];
        if (optind < argc && streq(argv[optind], "--"))
                optind++;
        if (optind < argc)
                o.argv = argv + optind;
        o.env = env;

        r = nano_run(&o, &res, &err);
        if (r < 0) {
                if (err.message[0])
                        log_error("%s", err.message);
                else
                        log_error_errno(r, "cannot run '%s': %m", o.release);
                return res.exit_code ? res.exit_code : NANO_EXIT_RUN_FAILED;
        }
        if (o.detach) {
                printf("%s\n", res.name);
                return NANO_EXIT_OK;
        }
        return res.exit_code;
}

int verb_spawn(int argc, char **argv)
{
        NanoError err = {};

        if (argc != 2)
                return NANO_EXIT_RUN_FAILED;
        (void)nano_run_spawn_exec(arg_home, argv[1], &err);
        return NANO_EXIT_RUN_FAILED;
}
