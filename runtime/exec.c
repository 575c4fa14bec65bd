/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* `nano exec NAME -- CMD`: a command in a running instance, as its service runs: the same cgroup (its
 * limits count it), the same namespaces (setns() through /proc/<pid>/ns/ files, opened while the pid
 * is checked against its start time), the same working directory, environment and hardening.
 * Foreground, supervised like `nano run`. */
#include <fcntl.h>
#include <json-c/json.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "log.h"
#include "runtime-internal.h"
#include "util.h"

typedef struct Exec {
        const RunPlan *plan;
        const NanoSeccompProgram *prog;
        const NanoCgroup *cg; /* the instance's, or NULL: it has none */
        char **argv, **env;
        int user_fd, mnt_fd, pid_fd, net_fd;
} Exec;

_Noreturn static void exec_fail(int fd, int stage, const NanoError *e)
{
        report_send(fd, REPORT_ERROR, stage, 0, e);
        _exit(stage == STAGE_EXEC ? (e->error == ENOENT ? 127 : 126) : 125);
}

_Noreturn static void exec_child(const Exec *x, int report_fd)
{
        const RunPlan *p = x->plan;
        PlanHarden h;
        NanoError e = {}, ce = {};
        sigset_t none;

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);

        /* The cgroup first, before anything can fork, as the service does: its limits are the
         * instance's, for whatever runs in it. */
        if (x->cg && nano_cgroup_attach(x->cg, 0, &ce) < 0) {
                nano_error_set(&e, ce.error, "cannot join the cgroup of '%s': %s", p->name, ce.message);
                exec_fail(report_fd, STAGE_SETUP, &e);
        }
        if (p->mode != NANO_ISOLATE_BARE) {
                /* The user namespace first: it gives us the capabilities the others need. */
                if (setns(x->user_fd, CLONE_NEWUSER) < 0) {
                        nano_error_set(&e, errno, "cannot join the user namespace of '%s': %m", p->name);
                        exec_fail(report_fd, STAGE_SETUP, &e);
                }
                if (setns(x->mnt_fd, CLONE_NEWNS) < 0) {
                        nano_error_set(&e, errno, "cannot join the mount namespace of '%s': %m", p->name);
                        exec_fail(report_fd, STAGE_SETUP, &e);
                }
                if (x->net_fd >= 0 && setns(x->net_fd, CLONE_NEWNET) < 0) {
                        nano_error_set(&e, errno, "cannot join the network namespace of '%s': %m", p->name);
                        exec_fail(report_fd, STAGE_SETUP, &e);
                }
                if (x->pid_fd >= 0) {
                        pid_t pid;
                        if (setns(x->pid_fd, CLONE_NEWPID) < 0) {
                                nano_error_set(&e, errno, "cannot join the pid namespace of '%s': %m", p->name);
                                exec_fail(report_fd, STAGE_SETUP, &e);
                        }
                        /* Our children are in it, not us: fork, report, and let our parent (a child
                         * subreaper) adopt the command. */
                        pid = fork();
                        if (pid < 0) {
                                nano_error_set(&e, errno, "cannot fork into the pid namespace: %m");
                                exec_fail(report_fd, STAGE_SETUP, &e);
                        }
                        if (pid > 0) {
                                report_send(report_fd, REPORT_PID, STAGE_SETUP, pid, NULL);
                                _exit(0);
                        }
                }
        }
        if (chdir(p->workdir) < 0 && chdir("/") < 0) {
                nano_error_set(&e, errno, "cannot change to '%s': %m", p->workdir);
                exec_fail(report_fd, STAGE_SETUP, &e);
        }
        run_plan_harden(p, x->prog, &h);
        if (nano_harden(&h.config, &e) < 0)
                exec_fail(report_fd, STAGE_SETUP, &e);
        nano_error_set(&e, exec_search(x->argv, x->env), "cannot execute '%s': %m", x->argv[0]);
        exec_fail(report_fd, STAGE_EXEC, &e);
}

static void exec_child_of(void *userdata, int report_fd)
{
        exec_child(userdata, report_fd);
}

static int spawn_exec_child(Supervisor *s, NanoError *err, int *ret_code)
{
        return spawn_reporting_child(exec_child_of, s->userdata, err, ret_code);
}

static int open_ns(pid_t pid, const char *ns, int *ret, NanoError *err)
{
        char path[64];

        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, ns);
        *ret = open(path, O_RDONLY | O_CLOEXEC);
        if (*ret < 0)
                return nano_error_set(err, errno, "cannot open '%s': %m", path);
        return 0;
}

int nano_instance_exec(const char *home, const char *name, char **argv, char **env, NanoRunResult *ret,
                       NanoError *err)
{
        _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL, *cache = NULL;
        _cleanup_(nano_cgroup_freep) NanoCgroup *cg = NULL;
        NanoSeccompProgram prog = {};
        NanoInstanceInfo info = {};
        char **full_env = NULL;
        json_object *j = NULL, *jp;
        Exec x = { .user_fd = -EBADF, .mnt_fd = -EBADF, .pid_fd = -EBADF, .net_fd = -EBADF };
        RunPlan p = {};
        size_t n = 0;
        int k, code = 0;

        ret->exit_code = NANO_EXIT_RUN_FAILED_CODE;
        k = nano_instance_get(home, name, &info, err);
        if (k < 0)
                return k;
        nano_instance_info_done(&info);
        if (!info.service_alive)
                return nano_error_set(err, ESRCH, "the instance '%s' is not running: `nano ps` shows its state", name);

        if (instance_dir_path(home, name, &dir) < 0 || asprintf(&path, "%s/spec.json", dir) < 0)
                return nano_error_set(err, ENOMEM, "out of memory");
        k = read_text_file(path, 4u << 20, &text);
        if (k < 0)
                return nano_error_set(err, k, "cannot read '%s': %m", path);
        if (!(j = json_tokener_parse(text)) || !json_object_object_get_ex(j, "plan", &jp)) {
                if (j)
                        json_object_put(j);
                return nano_error_set(err, EBADMSG, "'%s' is not a spec nano wrote", path);
        }
        k = run_plan_from_json(jp, &p, err);
        json_object_put(j);
        if (k < 0)
                return k;

        if (p.cgroup) {
                NanoError ce = {};
                k = nano_cgroup_open(&p.place, p.cgroup_name, &cg, &ce);
                if (k < 0)
                        k = nano_error_set(err, -k, "cannot join the cgroup of '%s': %s", name, ce.message);
        }
        if (k >= 0 && p.mode != NANO_ISOLATE_BARE) {
                k = open_ns(info.pid, "user", &x.user_fd, err);
                if (k >= 0)
                        k = open_ns(info.pid, "mnt", &x.mnt_fd, err);
                if (k >= 0 && (p.ns_flags & NANO_NS_PID))
                        k = open_ns(info.pid, "pid", &x.pid_fd, err);
                if (k >= 0 && (p.ns_flags & NANO_NS_NET))
                        k = open_ns(info.pid, "net", &x.net_fd, err);
                /* The namespaces are the service's only if its pid was not reused meanwhile. */
                if (k >= 0) {
                        NanoInstanceInfo again = {};
                        if (nano_instance_get(home, name, &again, err) >= 0 &&
                            (!again.service_alive || again.pid != info.pid))
                                k = nano_error_set(err, ESRCH, "the service of '%s' exited meanwhile", name);
                        nano_instance_info_done(&again);
                }
        }
        if (k >= 0 && p.seccomp != PLAN_SECCOMP_NONE) {
                if (asprintf(&cache, "%s/cache/seccomp", p.home) < 0)
                        k = nano_error_set(err, ENOMEM, "out of memory");
                else if (p.seccomp == PLAN_SECCOMP_DEFAULT)
                        k = nano_seccomp_prepare(NULL, cache, &prog, err);
                else {
                        _cleanup_free_ NanoSeccompProfile *profile = calloc(1, sizeof *profile);
                        _cleanup_free_ char *ptext = NULL;
                        size_t len = 0;
                        if (!profile)
                                k = nano_error_set(err, ENOMEM, "out of memory");
                        else if ((k = read_file_at(AT_FDCWD, p.seccomp_profile, NANO_SECCOMP_PROFILE_MAX_SIZE,
                                                   &ptext, &len)) < 0)
                                k = nano_error_set(err, k, "cannot read '%s': %m", p.seccomp_profile);
                        else if ((k = nano_seccomp_profile_parse(ptext, len, p.seccomp_profile, profile, err)) >= 0)
                                k = nano_seccomp_prepare(profile, cache, &prog, err);
                }
        }
        /* The service's environment, then the caller's additions. */
        char **const sources[] = { p.env, env };
        for (size_t i = 0; i < ELEMENTSOF(sources); i++)
                for (char **e = sources[i]; k >= 0 && e && *e; e++) {
                        char **nv = reallocarray(full_env, n + 2, sizeof *nv);
                        if (!nv) {
                                k = nano_error_set(err, ENOMEM, "out of memory");
                                break;
                        }
                        full_env = nv;
                        full_env[n++] = *e;
                        full_env[n] = NULL;
                }

        if (k >= 0) {
                Supervisor s = {
                        .instance_fd = -1,
                        .name = name,
                        .home = home,
                        .restart = NANO_RESTART_NO,
                        .foreground = true,
                        .sync_fd = -1,
                        .spawn = spawn_exec_child,
                        .userdata = &x,
                };
                sigset_t set;

                x.plan = &p;
                x.prog = &prog;
                x.cg = cg;
                x.argv = argv;
                x.env = full_env;
                k = supervisor_init(&s);
                if (k < 0)
                        k = nano_error_set(err, k, "cannot set up: %m");
                else {
                        k = supervisor_first_start(&s, err, &code);
                        if (k >= 0)
                                code = supervisor_loop(&s);
                        ret->exit_code = code;
                }
                supervisor_done(&s);
                supervisor_sigset(&set);
                (void)sigprocmask(SIG_UNBLOCK, &set, NULL);
        }
        free(full_env);
        safe_close(x.user_fd);
        safe_close(x.mnt_fd);
        safe_close(x.pid_fd);
        safe_close(x.net_fd);
        nano_seccomp_program_done(&prog);
        run_plan_done(&p);
        return k < 0 ? k : 0;
}
