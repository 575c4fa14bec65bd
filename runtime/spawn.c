/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The child side of a start: from fork() to execve() of the service, applying the plan with ns/.
 *
 * Runs after fork() of a single-threaded process (the foreground `nano run`, or `nano __spawn` that
 * the monitor exec'ed), so it may use ns/'s allocating steps (libcap). Every failure is a NanoError
 * record on the report pipe, which the parent turns into 125 (setup) or 126/127 (exec). */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime-internal.h"

_Noreturn static void fail(int fd, int stage, const NanoError *e)
{
        report_send(fd, REPORT_ERROR, stage, 0, e);
        _exit(stage == STAGE_EXEC ? (e->error == ENOENT ? 127 : 126) : 125);
}

int exec_search(char **argv, char **env)
{
        const char *path = NULL, *p;
        char buf[PATH_MAX];
        bool denied = false;

        /* Our own search rather than execvpe(): a directory of PATH we may not enter must not turn
         * "not found" (127) into "permission denied" (126), and this child must not allocate (nor
         * set environ: it may share its parent's memory). */
        if (strchr(argv[0], '/')) {
                execve(argv[0], argv, env);
                return -errno;
        }
        for (char **e = env; e && *e; e++)
                if (strncmp(*e, "PATH=", 5) == 0)
                        path = *e + 5;
        if (!path)
                path = "/usr/local/bin:/usr/bin:/bin";
        for (p = path;; p++) {
                size_t n = strcspn(p, ":");
                if ((size_t)snprintf(buf, sizeof buf, "%.*s%s%s", (int)n, p, n ? "/" : "", argv[0]) < sizeof buf) {
                        execve(buf, argv, env);
                        if (errno == EACCES && access(buf, F_OK) == 0)
                                denied = true;
                        else if (errno != ENOENT && errno != ENOTDIR && errno != EACCES && errno != ELOOP)
                                return -errno; /* found, but it cannot run: ENOEXEC, E2BIG… */
                }
                p += n;
                if (!*p)
                        break;
        }
        return denied ? -EACCES : -ENOENT;
}

/* Pid 1 of the instance's pid namespace (--pid), with the service as its child, pid 2.
 *
 * The kernel delivers to a namespace's init only the signals it has a handler for: a service that
 * is pid 1 and never installed one would ignore SIGTERM and Ctrl-C and end only with SIGKILL. So
 * this init blocks every signal, waits for them with sigwaitinfo() (blocked signals are queued even
 * for an init), passes each on to the service, reaps whatever gets reparented to it, and exits with
 * the service's status (128+N when signal N killed it) — the kernel then kills what is left in the
 * namespace. A signal the terminal sent (SI_KERNEL) went to the whole foreground process group, the
 * service included: it is not sent again. Detached, the service has a process group of its own, so a
 * stop aimed at our group reaches it once, through us, and reaches its children too.
 *
 * Runs between fork() and exec(): syscalls only, no allocation. Already hardened (nano_harden()
 * before the fork), so the service inherits exactly what it would have had as pid 1. */
_Noreturn static void run_init(pid_t service, bool own_group)
{
        sigset_t all;

        sigfillset(&all);
        for (;;) {
                siginfo_t si;
                int sig, status;
                pid_t pid;

                sig = sigwaitinfo(&all, &si);
                if (sig < 0)
                        continue;
                if (sig != SIGCHLD) {
                        if (si.si_code != SI_KERNEL)
                                (void)kill(own_group ? -service : service, sig);
                        continue;
                }
                while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
                        if (pid == service)
                                _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
}

/* Passes fd on the datagram socket sock (SCM_RIGHTS). No allocation. */
static void send_fd(int sock, int fd)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } u = {};
        char byte = 'k';
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);

        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        (void)sendmsg(sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* What a start needs once its namespaces are entered: the plan, and where to report. */
typedef struct ChildRun {
        const RunPlan *p;
        const NanoSeccompProgram *prog;
        int report_fd, keep_sock;
} ChildRun;

static void ns_config(const RunPlan *p, NanoNsConfig *ret)
{
        *ret = (NanoNsConfig){
                .mode = p->mode,
                .flags = p->ns_flags,
                .store_dir = p->mode == NANO_ISOLATE_NS ? p->mount_root : NULL,
                .release_dir = p->release_dir,
                .instance_dir = p->data_dir,
                .workdir = p->workdir,
                .skeleton = p->root_skeleton[0] ? p->root_skeleton : NULL,
        };
}

/* The rest of a start, in the namespaces: the new root, hardening, the init with a pid namespace,
 * then the service's exec. */
_Noreturn static void run_child_root(const ChildRun *x)
{
        const RunPlan *p = x->p;
        PlanHarden h;
        NanoNsConfig c;
        NanoError e = {};
        sigset_t none;
        int r, kept = -1;

        sigemptyset(&none);
        if (p->mode != NANO_ISOLATE_BARE) {
                ns_config(p, &c);
                r = nano_ns_setup_root(&c, &e);
                if (r < 0)
                        fail(x->report_fd, STAGE_SETUP, &e);
        }

        /* Detached: its own session, so that a stop reaches everything it started, and no terminal. */
        if (p->new_session)
                (void)setsid();

        /* The filter's listener goes to our parent, which holds it past the service's end: see
         * nano_seccomp_install_kept(). */
        run_plan_harden(p, x->prog, &h);
        if (x->keep_sock >= 0 && h.config.seccomp)
                h.config.seccomp_kept_fd = &kept;
        r = nano_harden(&h.config, &e);
        if (r < 0)
                fail(x->report_fd, STAGE_SETUP, &e);
        if (x->keep_sock >= 0) {
                if (kept >= 0) {
                        send_fd(x->keep_sock, kept);
                        close(kept);
                }
                close(x->keep_sock);
        }

        if (p->ns_flags & NANO_NS_PID) {
                /* We are pid 1 here: become the namespace's init, the service is our child. Every
                 * signal blocked first, so none is lost between the fork and sigwaitinfo(). */
                sigset_t all;
                pid_t pid;

                sigfillset(&all);
                sigprocmask(SIG_SETMASK, &all, NULL);
                /* vfork: the service borrows our memory until its exec, which nobody else uses. */
#if NANO_SANITIZED
                pid = fork();
#else
                pid = vfork();
#endif
                if (pid < 0) {
                        nano_error_set(&e, errno, "cannot fork the service from its init: %m");
                        fail(x->report_fd, STAGE_SETUP, &e);
                }
                if (pid > 0) {
                        /* The service held the report pipe until its exec: EOF now means it ran. A
                         * plain close(): from here on we may share the memory of the `nano run` that
                         * reads it (start_init()), and must not write errno. The init never execs, so
                         * close-on-exec never applies to it: it lets go of every descriptor but the
                         * standard three, the instance's lock among them (held here, it made a killed
                         * `nano run` look alive, and `stop` signal its dead pid). close_range() of a
                         * valid range cannot fail (Linux 5.9 and later; before, ENOSYS, and they stay). */
                        close(x->report_fd);
                        (void)syscall(SYS_close_range, 3u, ~0u, 0u);
                        run_init(pid, p->new_session);
                }
                if (p->new_session)
                        (void)setpgid(0, 0);
                sigprocmask(SIG_SETMASK, &none, NULL);
        }

        r = exec_search(p->argv, p->env);
        nano_error_set(&e, r, "cannot execute '%s': %m%s", p->argv[0],
                       r == -ENOENT ? (strchr(p->argv[0], '/') ? "" : " (not found in PATH)") : "");
        fail(x->report_fd, STAGE_EXEC, &e);
}

#if !NANO_SANITIZED
static int init_main(void *arg)
{
        run_child_root(arg);
}

#define INIT_STACK_SIZE (1024 * 1024)
#endif

/* The init of a pid namespace: our first child after unshare(CLONE_NEWPID), pid 1 there, which never
 * execs. A clone(CLONE_VM) on a stack of its own, not a fork: no copy of our page tables, none of the
 * copy-on-write faults that followed in it and in `nano run` (whose memory we are in when born of
 * spawn_reporting_child_vm()), and an exit that unmaps nothing, one wakeup before `nano run`'s. We
 * report its pid and exit right away; then it shares its memory with `nano run` alone, which until
 * the service's exec only waits in read() for the report pipe's EOF, and after it, the init makes
 * only calls that cannot fail (sigwaitinfo() with every signal blocked and no handler, waitpid() while
 * its child is there, kill() of its child not yet reaped, close() of an fd it holds, _exit()): so it
 * writes no errno, the one piece of state the two would share (their TLS is the same). Under
 * AddressSanitizer, which cannot follow a child in our memory, a fork. */
static pid_t start_init(const ChildRun *x)
{
#if NANO_SANITIZED
        pid_t pid = fork();

        if (pid == 0)
                run_child_root(x);
        return pid;
#else
        /* Mapped once, in the memory we share with `nano run`, and kept for the restarts (the
         * previous init has exited by then). */
        static uint8_t *stack = NULL;
        long page = sysconf(_SC_PAGESIZE);
        ChildRun *copy;

        if (!stack) {
                uint8_t *m = mmap(NULL, INIT_STACK_SIZE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
                if (m == MAP_FAILED)
                        return -1;
                (void)mprotect(m, (size_t)(page > 0 ? page : 4096), PROT_NONE);
                stack = m;
        }
        /* Its arguments on its own stack: ours is gone once we have reported. */
        copy = (ChildRun *)(stack + INIT_STACK_SIZE - 64);
        *copy = *x;
        return clone(init_main, (uint8_t *)copy - 64, CLONE_VM | SIGCHLD, copy);
#endif
}

_Noreturn void run_child(const RunPlan *p, const NanoSeccompProgram *prog, const NanoCgroup *cg,
                         const ChildBorn *born, int report_fd, int keep_sock)
{
        ChildRun x = { .p = p, .prog = prog, .report_fd = report_fd, .keep_sock = keep_sock };
        NanoError e = {};
        sigset_t none;
        int r;

        /* The supervisor blocks these for its signalfd: the mask survives execve(). */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);

        if (cg) {
                /* First, before anything it could fork: its children are counted too. */
                r = nano_cgroup_attach(cg, 0, &e);
                if (r < 0)
                        fail(report_fd, STAGE_SETUP, &e);
        }

        if (p->mode == NANO_ISOLATE_BARE) {
                if (chdir(p->workdir) < 0) {
                        nano_error_set(&e, errno, "cannot change to the working directory '%s': %m", p->workdir);
                        fail(report_fd, STAGE_SETUP, &e);
                }
        } else {
                NanoNsConfig c;

                ns_config(p, &c);
                r = born ? nano_ns_setup_entered(&c, born->uid, born->gid, &e) : nano_ns_unshare(&c, &e);
                if (r < 0)
                        fail(report_fd, STAGE_SETUP, &e);
                if (p->ns_flags & NANO_NS_PID) {
                        /* Only our children enter the new pid namespace: the init is the next one,
                         * pid 1 there (start_init()), and goes on with the start. We report its pid
                         * and leave; our parent, a child subreaper, inherits it. Born in our memory
                         * (clone(CLONE_VM | CLONE_VFORK)), we unshare it only now: as our first child,
                         * its init would never exec, and our parent would wait for that forever. */
                        pid_t pid;

                        if (born && unshare(CLONE_NEWPID) < 0) {
                                nano_error_set(&e, errno, "unshare(CLONE_NEWPID): %m");
                                fail(report_fd, STAGE_SETUP, &e);
                        }
                        pid = start_init(&x);
                        if (pid < 0) {
                                nano_error_set(&e, errno, "cannot start the init of the pid namespace: %m");
                                fail(report_fd, STAGE_SETUP, &e);
                        }
                        report_send(report_fd, REPORT_PID, STAGE_SETUP, pid, NULL);
                        _exit(0);
                }
        }
        run_child_root(&x);
}

int spawn_reporting_child(void (*child)(void *userdata, int report_fd), void *userdata, NanoError *err,
                          int *ret_code)
{
        int fds[2];
        pid_t pid;

        if (pipe2(fds, O_CLOEXEC) < 0) {
                *ret_code = NANO_EXIT_RUN_FAILED_CODE;
                return nano_error_set(err, errno, "cannot create a pipe: %m");
        }
        pid = fork();
        if (pid < 0) {
                *ret_code = NANO_EXIT_RUN_FAILED_CODE;
                safe_close(fds[0]);
                safe_close(fds[1]);
                return nano_error_set(err, errno, "cannot fork: %m");
        }
        if (pid == 0) {
                safe_close(fds[0]);
                child(userdata, fds[1]);
                _exit(NANO_EXIT_RUN_FAILED_CODE); /* not reached: child never returns */
        }
        safe_close(fds[1]);
        return supervisor_collect(pid, fds[0], err, ret_code);
}

/* The stack of a clone(CLONE_VM) child: it runs ns/'s setup, which keeps paths and a getdents buffer
 * on the stack (tens of KiB). Reserved, not committed: only the pages touched cost. */
#define CHILD_STACK_SIZE (1024 * 1024)

typedef struct CloneStart {
        void (*child)(void *userdata, int report_fd);
        void *userdata;
        int report_fd;
} CloneStart;

static int clone_start(void *arg)
{
        CloneStart *cs = arg;

        cs->child(cs->userdata, cs->report_fd);
        _exit(NANO_EXIT_RUN_FAILED_CODE); /* not reached: child never returns */
}

int spawn_reporting_child_vm(void (*child)(void *userdata, int report_fd), void *userdata, int clone_flags,
                             NanoError *err, int *ret_code)
{
        /* Mapped once and kept for the restarts: the process is single-threaded and sleeps while a
         * child uses it. Never unmapped: an munmap() would have to flush the TLB of the CPU the child
         * ran on, and exit frees it anyway. */
        static uint8_t *stack = NULL;
        CloneStart cs = { .child = child, .userdata = userdata };
        long page = sysconf(_SC_PAGESIZE);
        int fds[2], saved;
        pid_t pid;

        if (pipe2(fds, O_CLOEXEC) < 0) {
                *ret_code = NANO_EXIT_RUN_FAILED_CODE;
                return nano_error_set(err, errno, "cannot create a pipe: %m");
        }
        if (!stack) {
                uint8_t *m = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
                if (m == MAP_FAILED) {
                        *ret_code = NANO_EXIT_RUN_FAILED_CODE;
                        safe_close(fds[0]);
                        safe_close(fds[1]);
                        return nano_error_set(err, errno, "cannot map a stack for the service's start: %m");
                }
                /* A guard page below it: an overflow faults instead of writing over whatever lies
                 * there. */
                (void)mprotect(m, (size_t)(page > 0 ? page : 4096), PROT_NONE);
                stack = m;
        }

        /* We sleep until the child execs or exits (CLONE_VFORK), so it may use our memory: no copy of
         * our page tables, and no copy-on-write faults in either process. Born in its namespaces:
         * unshare(CLONE_NEWUSER) refuses a process that shares its memory. */
        cs.report_fd = fds[1];
        pid = clone(clone_start, stack + CHILD_STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD | clone_flags, &cs);
        saved = errno;
        /* Not safe_close(), which writes errno back: with a pid namespace, the init (start_init())
         * may be setting up in our memory now, errno included; until the report pipe's EOF we only
         * read() it. */
        close(fds[1]);
        if (pid < 0) {
                *ret_code = NANO_EXIT_RUN_FAILED_CODE;
                safe_close(fds[0]);
                return nano_error_set(err, saved, "cannot start the service (clone): %m");
        }
        return supervisor_collect(pid, fds[0], err, ret_code);
}
