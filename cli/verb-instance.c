/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* nano ps, inspect, logs, stop, rm, exec: existing instances (doc/run.md). */
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "log.h"
#include "runtime.h"
#include "util.h"

static void store_unrefp(NanoStore **s)
{
        if (*s)
                nano_store_unref(*s);
}

/* The home, as the store resolves it (--home, $NANO_HOME, or the default). */
static int open_home(char **ret)
{
        _cleanup_(store_unrefp) NanoStore *s = NULL;
        NanoError err = {};
        int r;

        r = nano_store_open(arg_home, &s, &err);
        if (r < 0)
                return fail(&err, r, "cannot open the store");
        *ret = realpath(nano_store_home(s), NULL);
        if (!*ret)
                return fail(NULL, -errno, "cannot resolve the nano home");
        return 0;
}

static json_object *parse_state(const NanoInstanceInfo *i)
{
        json_object *j = i->state_json ? json_tokener_parse(i->state_json) : NULL;

        if (!j || !json_object_is_type(j, json_type_object)) {
                if (j)
                        json_object_put(j);
                j = json_object_new_object();
                json_object_object_add(j, "name", json_object_new_string(i->name));
        }
        /* What is true now, whatever the file said. */
        json_object_object_add(j, "state", json_object_new_string(nano_instance_state_to_string(i->state)));
        json_object_object_add(j, "monitor_alive", json_object_new_boolean(i->monitor_alive));
        json_object_object_add(j, "service_alive", json_object_new_boolean(i->service_alive));
        json_object_object_add(j, "orphaned", json_object_new_boolean(!i->monitor_alive && i->service_alive));
        return j;
}

static const char *jstr(json_object *j, const char *key, const char *def)
{
        json_object *v;
        if (json_object_object_get_ex(j, key, &v) && json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return def;
}

static int64_t jint(json_object *j, const char *key, int64_t def)
{
        json_object *v;
        if (json_object_object_get_ex(j, key, &v) && json_object_is_type(v, json_type_int))
                return json_object_get_int64(v);
        return def;
}

/* "running", "exited (1)", "unknown: monitor died, service pid 42 still runs (orphaned)". */
static void status_text(const NanoInstanceInfo *i, json_object *j, char *buf, size_t size)
{
        int64_t code = jint(j, "exit_code", -1);

        if (i->state == NANO_STATE_UNKNOWN) {
                if (i->service_alive)
                        snprintf(buf, size, "unknown: monitor died, service pid %d still runs (orphaned)", (int)i->pid);
                else
                        snprintf(buf, size, "unknown: monitor died, service gone");
        } else if ((i->state == NANO_STATE_EXITED || i->state == NANO_STATE_STOPPED ||
                    i->state == NANO_STATE_FAILED) && code >= 0)
                snprintf(buf, size, "%s (%lld)", nano_instance_state_to_string(i->state), (long long)code);
        else
                snprintf(buf, size, "%s", nano_instance_state_to_string(i->state));
}

static const char ps_help[] =
        "Usage: nano ps [--json]\n"
        "\n"
        "List the instances: name, state (starting, running, restarting, exited, stopped, failed, or\n"
        "unknown when its monitor died), service pid, restarts, release, command.\n";

int verb_instance_ps(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, 'j' },
                {},
        };
        _cleanup_free_ char *home = NULL;
        NanoInstanceInfo *list = NULL;
        NanoError err = {};
        bool json = false;
        size_t n = 0;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        fputs(ps_help, stdout);
                        return NANO_EXIT_OK;
                case 'j':
                        json = true;
                        break;
                default:
                        return usage_error("ps: see 'nano ps --help'");
                }
        r = open_home(&home);
        if (r)
                return r;
        r = nano_instance_list(home, &list, &n, &err);
        if (r < 0)
                return fail(&err, r, "cannot list the instances");

        json_object *arr = json ? json_object_new_array() : NULL;
        if (!json)
                printf("%-24s %-28s %8s %8s  %-20s %s\n", "NAME", "STATE", "PID", "RESTARTS", "RELEASE", "COMMAND");
        for (size_t i = 0; i < n; i++) {
                json_object *j = parse_state(&list[i]);
                if (json)
                        json_object_array_add(arr, j);
                else {
                        char st[160], cmd[256] = "", pid[16] = "-";
                        json_object *a;
                        status_text(&list[i], j, st, sizeof st);
                        if (list[i].service_alive)
                                snprintf(pid, sizeof pid, "%d", (int)list[i].pid);
                        if (json_object_object_get_ex(j, "command", &a) && json_object_is_type(a, json_type_array))
                                for (size_t k = 0; k < json_object_array_length(a); k++) {
                                        size_t l = strlen(cmd);
                                        snprintf(cmd + l, sizeof cmd - l, "%s%s", k ? " " : "",
                                                 json_object_get_string(json_object_array_get_idx(a, k)));
                                }
                        printf("%-24s %-28s %8s %8lld  %-20s %s\n", list[i].name, st, pid,
                               (long long)jint(j, "restarts", 0), jstr(j, "release", "?"), cmd);
                        json_object_put(j);
                }
                nano_instance_info_done(&list[i]);
        }
        free(list);
        if (json)
                json_print(arr);
        return NANO_EXIT_OK;
}

static const char inspect_help[] =
        "Usage: nano inspect NAME [--json]\n"
        "\n"
        "Everything about an instance: release, command, pids, state, restarts, exit status, the\n"
        "isolation and limits actually applied (and what the host refused), live cgroup counters.\n";

static void print_members(json_object *j, int indent)
{
        json_object_object_foreach(j, key, val)
        {
                if (json_object_is_type(val, json_type_object)) {
                        printf("%*s%s:\n", indent, "", key);
                        print_members(val, indent + 2);
                } else
                        printf("%*s%-*s %s\n", indent, "", 22 - indent, key,
                               val ? json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN |
                                                                            JSON_C_TO_STRING_NOSLASHESCAPE) :
                                     "null");
        }
}

int verb_instance_inspect(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, 'j' },
                {},
        };
        _cleanup_free_ char *home = NULL, *cg = NULL;
        NanoInstanceInfo info;
        NanoError err = {};
        bool json = false;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        fputs(inspect_help, stdout);
                        return NANO_EXIT_OK;
                case 'j':
                        json = true;
                        break;
                default:
                        return usage_error("inspect: see 'nano inspect --help'");
                }
        if (argc - optind != 1)
                return usage_error("inspect: expected one NAME");
        r = open_home(&home);
        if (r)
                return r;
        r = nano_instance_get(home, argv[optind], &info, &err);
        if (r < 0)
                return fail(&err, r, "cannot read the instance");
        json_object *j = parse_state(&info);
        (void)nano_instance_cgroup_now(home, info.name, &cg);
        json_object_object_add(j, "cgroup_now", cg ? json_tokener_parse(cg) : NULL);
        nano_instance_info_done(&info);
        if (json)
                json_print(j);
        else {
                print_members(j, 0);
                json_object_put(j);
        }
        return NANO_EXIT_OK;
}

static const char logs_help[] =
        "Usage: nano logs [-f] NAME\n"
        "\n"
        "Print what the detached instance's service wrote on stdout and stderr (logs/service.log.1,\n"
        "then logs/service.log). -f: keep printing as it comes, until the instance is over.\n";

static int copy_from(int fd, off_t *off)
{
        char buf[65536];
        for (;;) {
                ssize_t n = pread(fd, buf, sizeof buf, *off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return (int)n;
                if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
                        return -EPIPE;
                *off += n;
        }
}

int verb_instance_logs(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "follow", no_argument, NULL, 'f' },
                {},
        };
        _cleanup_free_ char *home = NULL, *old = NULL, *cur = NULL;
        _cleanup_close_ int fd = -EBADF;
        bool follow = false;
        NanoError err = {};
        struct stat st;
        off_t off = 0;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        fputs(logs_help, stdout);
                        return NANO_EXIT_OK;
                case 'f':
                        follow = true;
                        break;
                default:
                        return usage_error("logs: see 'nano logs --help'");
                }
        if (argc - optind != 1)
                return usage_error("logs: expected one NAME");
        r = open_home(&home);
        if (r)
                return r;
        r = nano_instance_log_paths(home, argv[optind], &old, &cur, &err);
        if (r < 0)
                return fail(&err, r, "cannot find the logs");

        fd = open(old, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                (void)copy_from(fd, &off);
                fd = safe_close(fd);
        }
        off = 0;
        fd = open(cur, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && copy_from(fd, &off) == -EPIPE)
                return NANO_EXIT_OK;
        while (follow) {
                NanoInstanceInfo i;
                bool over;
                struct stat now;

                if (nano_instance_get(home, argv[optind], &i, &err) < 0)
                        break;
                over = !i.monitor_alive;
                nano_instance_info_done(&i);
                /* Rotated (a new file under the name): finish the old one, start the new. */
                if (stat(cur, &now) == 0 && (fd < 0 || (fstat(fd, &st) == 0 && st.st_ino != now.st_ino))) {
                        if (fd >= 0)
                                (void)copy_from(fd, &off);
                        safe_close(fd);
                        fd = open(cur, O_RDONLY | O_CLOEXEC);
                        off = 0;
                }
                if (fd >= 0 && copy_from(fd, &off) == -EPIPE)
                        break;
                if (over)
                        break;
                (void)poll(NULL, 0, 200);
        }
        return NANO_EXIT_OK;
}

static const char stop_help[] =
        "Usage: nano stop [-t SECS] NAME...\n"
        "\n"
        "Stop instances: SIGTERM to the service (its process group), SIGKILL after SECS (default 10);\n"
        "no restart after. Also stops a service whose monitor died.\n";

int verb_instance_stop(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "time", required_argument, NULL, 't' },
                {},
        };
        _cleanup_free_ char *home = NULL;
        unsigned timeout = NANO_STOP_TIMEOUT_DEFAULT;
        int c, r, ret = NANO_EXIT_OK;

        optind = 0;
        while ((c = getopt_long(argc, argv, "ht:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        fputs(stop_help, stdout);
                        return NANO_EXIT_OK;
                case 't': {
                        char *end;
                        unsigned long v = strtoul(optarg, &end, 10);
                        if (*end || v > 86400)
                                return usage_error("stop: -t takes seconds, 0..86400, not '%s'", optarg);
                        timeout = (unsigned)v;
                        break;
                }
                default:
                        return usage_error("stop: see 'nano stop --help'");
                }
        if (optind >= argc)
                return usage_error("stop: expected NAME...");
        r = open_home(&home);
        if (r)
                return r;
        for (int i = optind; i < argc; i++) {
                NanoError err = {};
                r = nano_instance_stop(home, argv[i], timeout, &err);
                if (r < 0)
                        ret = fail(&err, r, "cannot stop the instance");
                else
                        printf("%s\n", argv[i]);
        }
        return ret;
}

static const char rm_help[] =
        "Usage: nano rm [-f] NAME...\n"
        "\n"
        "Remove instances: directory (data and logs included), cgroup, and the pin that kept their\n"
        "release from `nano store gc`. Refuses a running instance unless -f (which kills it).\n";

int verb_instance_rm(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "force", no_argument, NULL, 'f' },
                {},
        };
        _cleanup_free_ char *home = NULL;
        bool force = false;
        int c, r, ret = NANO_EXIT_OK;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        fputs(rm_help, stdout);
                        return NANO_EXIT_OK;
                case 'f':
                        force = true;
                        break;
                default:
                        return usage_error("rm: see 'nano rm --help'");
                }
        if (optind >= argc)
                return usage_error("rm: expected NAME...");
        r = open_home(&home);
        if (r)
                return r;
        for (int i = optind; i < argc; i++) {
                NanoError err = {};
                r = nano_instance_remove(home, argv[i], force, &err);
                if (r < 0)
                        ret = r == -EBUSY ? (log_error("%s", err.message), NANO_EXIT_FAILURE) :
                                            fail(&err, r, "cannot remove the instance");
        }
        return ret;
}

static const char exec_help[] =
        "Usage: nano exec [-e K=V] NAME -- CMD [ARGS...]\n"
        "\n"
        "Run CMD in a running instance: in its namespaces (user, mount, pid, net), with its\n"
        "environment, working directory and hardening. Exit codes as for `nano run`.\n";

int verb_instance_exec(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "env", required_argument, NULL, 'e' },
                {},
        };
        _cleanup_free_ char *home = NULL;
        _cleanup_free_ char **env = NULL;
        NanoRunResult res = {};
        NanoError err = {};
        const char *name;
        size_t n_env = 0;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "+he:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        fputs(exec_help, stdout);
                        return NANO_EXIT_OK;
                case 'e': {
                        char **nv = reallocarray(env, n_env + 2, sizeof *nv);
                        if (!nv || !strchr(optarg, '='))
                                return usage_error("exec: --env takes KEY=VALUE");
                        env = nv;
                        env[n_env++] = optarg;
                        env[n_env] = NULL;
                        break;
                }
                default:
                        fputs("nano: exec: see 'nano exec --help'\n", stderr);
                        return NANO_EXIT_RUN_FAILED;
                }
        if (optind >= argc) {
                fputs("nano: exec: expected NAME -- CMD\n", stderr);
                return NANO_EXIT_RUN_FAILED;
        }
        name = argv[optind++];
        if (optind < argc && streq(argv[optind], "--"))
                optind++;
        if (optind >= argc) {
                fputs("nano: exec: expected a command after NAME --\n", stderr);
                return NANO_EXIT_RUN_FAILED;
        }
        r = open_home(&home);
        if (r)
                return NANO_EXIT_RUN_FAILED;
        r = nano_instance_exec(home, name, argv + optind, env, &res, &err);
        if (r < 0) {
                log_error("%s", err.message[0] ? err.message : "exec failed");
                return res.exit_code ? res.exit_code : NANO_EXIT_RUN_FAILED;
        }
        return res.exit_code;
}
