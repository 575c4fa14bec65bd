#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Start-to-exit of `nano run … -- /bin/true` against its peers, in alternating pairs.

This machine's speed drifts by 2x from minute to minute, the ratio of two commands timed one right
after the other does not: each pair runs A, B, A, B… N times in one go, and the report gives the
medians and the median of the per-round ratios A/B. Before each timed command, untimed, it waits
until the background cleanup of nano's previous run (a `--rm` run's detached deletion of its
instance's files) is over, so that neither side pays for it. Run by hand, never by CI:

    NANO_BIN=build-release/cli/nano bench/start.py [-n 40] [--pairs bare,ns,ns-pid,unshare]

As root, the commands run as --user (default nanotest, see scripts/test.sh), as unprivileged users
do. The release and the instances live in a fresh NANO_HOME under the user's ~/.cache (--dir), where
the default NANO_HOME (~/.local/share/nano) would be. Needs bwrap and unshare (apt-get install
bubblewrap util-linux). The Markdown goes to stdout.
"""
import argparse
import ctypes
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def become(user):
    """As root: re-exec this script as user (setpriv), so that no timed spawn pays for a preexec_fn
    (which makes Python fork the whole interpreter instead of vfork: ~2 ms per command)."""
    if os.getuid() != 0 or not user:
        return
    pw = pwd.getpwnam(user)
    env = {k: v for k, v in os.environ.items() if k.startswith("NANO_")}
    env.update(HOME=pw.pw_dir, PATH="/usr/bin:/bin")
    os.execvpe("setpriv", ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--",
                           sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40, help="rounds per pair (default 40)")
    ap.add_argument("--pairs", default="bare,ns,ns-pid,unshare")
    ap.add_argument("--nano-bin", default=os.environ.get("NANO_BIN", os.path.join(ROOT, "build/cli/nano")))
    ap.add_argument("--user", default="nanotest", help="as root: run everything as this user")
    ap.add_argument("--dir", default=None,
                    help="where the bench's NANO_HOME goes (default: ~/.cache of the user, as the default "
                         "NANO_HOME is under ~/.local/share: /tmp is where other programs churn files, and on "
                         "ext4 without a journal every file made scans the inodes freed in the last seconds)")
    args = ap.parse_args()

    nano = os.path.abspath(args.nano_bin)
    os.environ["NANO_BIN"] = nano  # passed on by become(); --nano-bin, if given, says the same
    for tool in ("bwrap", "unshare"):
        if not shutil.which(tool):
            sys.exit(f"start.py: {tool} is missing (apt-get install bubblewrap util-linux)")
    become(args.user)
    base = args.dir or os.path.join(os.path.expanduser("~"), ".cache")
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="nano-bench-start.", dir=base)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "NANO_HOME": os.path.join(work, "home")}
    for k in ("NANO_CGROUP_V1_ROOT", "NANO_CGROUP_V2_ROOT"):
        if k in os.environ:
            env[k] = os.environ[k]

    def run(argv, check=True):
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and p.returncode != 0:
            sys.exit(f"start.py: {' '.join(argv)} failed ({p.returncode}): {p.stderr.decode()}")
        return p

    instances = os.path.join(env["NANO_HOME"], "instances")
    warned = [0]
    waits = []  # ms spent in settle() when there was something to wait for

    def settle(timeout=5.0):
        """Untimed: wait until the background work of nano's previous run is over. A foreground
        `nano run --rm` exits once the service has, and leaves the deletion of the instance's files
        (instances/.trash-<name>-<pid>) to a detached child: on 2 CPUs, and with a disk discard per
        directory freed, that child would otherwise run during the next timed command, the peer's
        as often as nano's. We are a child subreaper, so that child is ours to reap once its parent
        is gone: done means no .trash-* left and no child of ours alive."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
                children = True
            except ChildProcessError:
                children = False
            try:
                trash = any(n.startswith(".trash-") for n in os.listdir(instances))
            except FileNotFoundError:
                trash = False
            if not trash and not children:
                if time.monotonic() > t0 + 0.0001:
                    waits.append((time.monotonic() - t0) * 1e3)
                return
            if time.monotonic() > deadline:
                warned[0] += 1
                if warned[0] <= 3:
                    print(f"start.py: warning: nano's cleanup of its last run is not over after {timeout:.0f} s "
                          f"({'a .trash-* is left in ' + instances if trash else 'a child is still running'}); "
                          "timing the next command anyway", file=sys.stderr)
                return
            time.sleep(0.0002)

    def timed(argv):
        settle()
        t = time.perf_counter_ns()
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = (time.perf_counter_ns() - t) / 1e6
        if p.returncode != 0:
            sys.exit(f"start.py: {' '.join(argv)} failed ({p.returncode}): {p.stderr.decode()}")
        return dt

    # A tiny release, and the mount up before the first timing (`nano run` would start it).
    rel = os.path.join(work, "rel")
    os.makedirs(os.path.join(rel, "bin"))
    run([nano, "store", "add", rel, "--name", "tiny", "--version", "1"])
    run([nano, "mount"], check=False)
    # From now on, what a `nano run --rm` leaves running in the background is reparented to us
    # (settle()). The mount's daemon, started above, is not: its parent was init already.
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"start.py: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")

    nano_run = [nano, "run", "--rm"]
    pairs = {
        "bare": ("nano run --isolate bare", nano_run + ["--isolate", "bare", "tiny@1", "--", "/bin/true"],
                 "/bin/true", ["/bin/true"]),
        "ns": ("nano run --isolate ns", nano_run + ["--isolate", "ns", "tiny@1", "--", "/bin/true"],
               "bwrap --unshare-user --ro-bind / / true",
               ["bwrap", "--unshare-user", "--ro-bind", "/", "/", "true"]),
        "ns-pid": ("nano run --isolate ns --pid", nano_run + ["--isolate", "ns", "--pid", "tiny@1", "--", "/bin/true"],
                   "bwrap --unshare-user --unshare-pid --ro-bind / / true",
                   ["bwrap", "--unshare-user", "--unshare-pid", "--ro-bind", "/", "/", "true"]),
        "unshare": ("nano run --isolate ns", nano_run + ["--isolate", "ns", "tiny@1", "--", "/bin/true"],
                    "unshare -Urm true", ["unshare", "-Urm", "true"]),
    }
    print(f"nano: {nano}; {args.n} alternating rounds per pair; uid {os.getuid()}; NANO_HOME in {work}",
          file=sys.stderr)
    rows = []
    for key in args.pairs.split(","):
        a_name, a, b_name, b = pairs[key]
        for _ in range(5):  # warm-up: page cache, seccomp and probe caches
            timed(a)
            timed(b)
        ta, tb, ratios = [], [], []
        for _ in range(args.n):
            x = timed(a)
            y = timed(b)
            ta.append(x)
            tb.append(y)
            ratios.append(x / y)
        rows.append((a_name, statistics.median(ta), b_name, statistics.median(tb), statistics.median(ratios),
                     statistics.median([x - y for x, y in zip(ta, tb)])))
        print(f"  {key}: done", file=sys.stderr)

    settle()
    run([nano, "umount"], check=False)
    shutil.rmtree(work, ignore_errors=True)
    if waits:
        print(f"start.py: waited for nano's cleanup before {len(waits)} commands, median {statistics.median(waits):.2f} ms, "
              f"max {max(waits):.2f} ms (untimed)", file=sys.stderr)
    if warned[0]:
        print(f"start.py: warning: {warned[0]} timed commands started before nano's cleanup was over",
              file=sys.stderr)
    print("| nano | median | peer | median | ratio (median of rounds) | difference |")
    print("|---|---|---|---|---|---|")
    for a_name, ma, b_name, mb, r, d in rows:
        print(f"| `{a_name}` | {ma:.2f} ms | `{b_name}` | {mb:.2f} ms | {r:.2f}x | {d:+.2f} ms |")


if __name__ == "__main__":
    main()
