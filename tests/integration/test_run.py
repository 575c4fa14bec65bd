# SPDX-License-Identifier: LGPL-2.1-or-later
"""`nano run` and the instance verbs, driven as a user would: real FUSE mount, real namespaces, real
cgroups (where delegated: scripts/test.sh delegates v1 directories and sets NANO_CGROUP_V1_ROOT),
unprivileged. Bounded: every wait has a deadline, every service is stopped or removed."""

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from nanotest import REPO_ROOT, gate

EXAMPLES = REPO_ROOT / "examples" / "releases"


# ---- helpers ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, timeout=15.0):
    """The body served on 127.0.0.1:port, retrying until it answers or timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                return r.read().decode()
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise AssertionError(f"nothing answers on port {port} after {timeout}s: {last}")


def answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def inspect(nano, name):
    return nano("inspect", name, "--json").json()


def ps(nano):
    return {i["name"]: i for i in nano("ps", "--json").json()}


def cgroup_v1_usable():
    """None if delegated cgroup v1 directories for memory and pids exist for us, else why not."""
    root = os.environ.get("NANO_CGROUP_V1_ROOT")
    if not root:
        return "NANO_CGROUP_V1_ROOT is not set (scripts/test.sh sets it when it delegates cgroup v1 dirs)"
    for ctrl in ("memory", "pids"):
        d = os.path.join("/sys/fs/cgroup", ctrl, root.lstrip("/"))
        if not os.access(d, os.W_OK) or not os.access(os.path.join(d, "cgroup.procs"), os.W_OK):
            return f"{d} is not a cgroup directory writable by uid {os.geteuid()}"
    return None


def cgroup_usable():
    v2 = os.environ.get("NANO_CGROUP_V2_ROOT")
    if v2 and os.access(v2, os.W_OK):
        return None
    return cgroup_v1_usable()


@pytest.fixture
def hello(nano, require_fuse):
    """Both example releases in the store. At the end: every instance removed, then the mount taken
    down and its daemon waited for (instances in namespaces hold binds of the mount until their
    namespaces are gone, so the daemon may take a moment)."""
    nano("store", "add", EXAMPLES / "hello-1.0", "--name", "hello", "--version", "1.0", "-q")
    nano("store", "add", EXAMPLES / "hello-2.0", "--name", "hello", "--version", "2.0", "-q")
    yield nano
    left = [i["name"] for i in nano("ps", "--json").json()]
    if left:
        nano("rm", "-f", *left, check=False)
    umount_wait(nano)


def umount_wait(nano):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = nano("umount", check=False)
        if r.returncode == 0 or "busy" not in r.stderr:
            break
        time.sleep(0.1)


@pytest.fixture
def ns_ok(require_userns):
    return True


# ---- exit codes and errors ----

def test_run_exit_codes(hello):
    nano = hello
    r = nano("run", "--rm", "--isolate", "bare", "hello@1.0", "--", "sh", "-c", "exit 7", check=False)
    assert r.returncode == 7, r
    r = nano("run", "--rm", "--isolate", "bare", "hello@1.0", "--", "sh", "-c", "kill -9 $$", check=False)
    assert r.returncode == 128 + 9, r
    r = nano("run", "--rm", "--isolate", "bare", "hello@1.0", "--", "no-such-command-here", check=False)
    assert r.returncode == 127, r
    assert "no-such-command-here" in r.stderr and "not found" in r.stderr, r
    r = nano("run", "--rm", "--isolate", "bare", "hello@1.0", "--", "/etc/passwd", check=False)
    assert r.returncode == 126, r
    r = nano("run", "hello@9.9", check=False)
    assert r.returncode == 125, r
    assert "'hello@9.9' is not in the store" in r.stderr and "nano store add" in r.stderr, r
    r = nano("run", "--memory", "lots", "hello@1.0", check=False)
    assert r.returncode == 125 and "--memory" in r.stderr, r
    # No instance was left behind by --rm, nor by the missing release.
    assert ps(nano) == {}


def test_run_default_command_and_env(hello):
    nano = hello
    r = nano("run", "--rm", "--isolate", "bare", "hello@1.0")
    assert r.stdout.startswith("hello 1.0 from "), r
    r = nano("run", "--rm", "--isolate", "bare", "--env", "GREET=hi there", "hello@2.0", "--",
             "sh", "-c", 'echo "$GREET|$NANO_INSTANCE_NAME|$PWD"; hello')
    greet, name, pwd = r.stdout.splitlines()[0].split("|")
    assert greet == "hi there" and name.startswith("hello-") and pwd.endswith(f"/instances/{name}/data"), r
    assert r.stdout.splitlines()[1].startswith("hello 2.0 from "), r


@contextlib.contextmanager
def foreground(nano_bin, nano_home, *run_args, stderr=None):
    """`nano run *run_args` in the foreground, its output on a pipe: yields the process; at the end
    kills it if it still runs, and closes the pipes."""
    p = subprocess.Popen([str(nano_bin), "run", *run_args],
                         env=dict(os.environ, NANO_HOME=os.fspath(nano_home)), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        if p.stderr:
            p.stderr.close()


def test_foreground_rm_makes_only_what_it_needs(hello, nano_bin, nano_home):
    """A foreground --rm instance shows in ps while it runs (spec.json holding its lock, one
    state.json, data/), has no logs/ (its output is the terminal's), reaches its release through
    the per-release link in cache/release/ in bare mode, and leaves nothing behind."""
    nano = hello
    with foreground(nano_bin, nano_home, "--rm", "--name", "fg", "--isolate", "bare", "hello@1.0", "--",
                    "sh", "-c", 'echo "$NANO_RELEASE|$PATH"; exec sleep 1000') as p:
        st = wait_for(lambda: (s := ps(nano).get("fg")) and s["state"] == "running" and s, what="running")
        assert st["monitor_alive"] and st["service_alive"] and st["monitor_pid"] == p.pid, st
        inst = nano_home / "instances" / "fg"
        assert sorted(os.listdir(inst)) == ["data", "spec.json", "state.json"], os.listdir(inst)
        release, path = p.stdout.readline().strip().split("|")
        link = nano_home / "cache" / "release" / inspect(nano, "fg")["release_id"].split(":")[1]
        assert release == os.fspath(link) and path.startswith(f"{link}/bin:"), (release, path)
        assert os.readlink(link).startswith("../../mnt/by-id/sha256:") and (link / "bin" / "hello").exists()
        # The lock is spec.json's: rm refuses while the owner holds it.
        r = nano("rm", "fg", check=False)
        assert r.returncode != 0 and "running" in r.stderr, r
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 128 + signal.SIGTERM
    assert "fg" not in ps(nano) and not (nano_home / "instances" / "fg").exists()
    assert not [f for f in os.listdir(nano_home / "instances") if not f.startswith(".")]
    assert link.is_symlink(), "the release link is kept for the next runs"


def test_foreground_rm_killed_leaves_its_instance(hello, nano_bin, nano_home):
    """A foreground --rm run killed with SIGKILL deletes nothing: its instance stays as it was (its
    deleter, forked while the service runs, gets EOF and no trash name), `nano rm -f` removes it, and
    the name can be used again. Its output pipe closes when nano dies: the deleter holds none of it."""
    nano = hello
    with foreground(nano_bin, nano_home, "--rm", "--name", "killed", "hello@1.0", "--",
                    "sh", "-c", "echo up; exec sleep 1000") as p:
        assert p.stdout.readline() == "up\n"
        st = wait_for(lambda: (s := ps(nano).get("killed")) and s["state"] == "running" and s, what="running")
        p.kill()
        p.wait(timeout=20)
        # The service is the only writer left; nano's deleter must not be one.
        time.sleep(0.3)
        inst = nano_home / "instances" / "killed"
        assert sorted(os.listdir(inst)) == ["data", "spec.json", "state.json"], os.listdir(inst)
        assert not [f for f in os.listdir(nano_home / "instances") if f.startswith(".trash-")]
        st = ps(nano)["killed"]
        assert st["state"] == "unknown" and not st["monitor_alive"] and st["service_alive"], st
    nano("rm", "-f", "killed")
    assert not (nano_home / "instances" / "killed").exists()
    assert nano("run", "--rm", "--name", "killed", "hello@1.0", "--", "true").returncode == 0
    assert "killed" not in ps(nano)


def test_exit_at_once_is_reported(hello):
    nano = hello
    name = nano("run", "-d", "--name", "quick", "--isolate", "bare", "hello@1.0", "--",
                "sh", "-c", "echo bye; exit 3").stdout.strip()
    assert name == "quick"
    st = wait_for(lambda: (s := ps(nano)["quick"])["state"] == "exited" and s, what="the instance to exit")
    assert st["exit_code"] == 3 and st["exit_status"] == 3 and st["pid"] is None, st
    assert nano("logs", "quick").stdout == "bye\n"
    # Over: rm needs no -f, even if the monitor is still on its way out.
    nano("rm", "quick")
    assert "quick" not in ps(nano)


# ---- many versions, many instances ----

def test_two_versions_five_instances(hello, ns_ok):
    nano = hello
    ports = [free_port() for _ in range(6)]
    names = []
    for i, port in enumerate(ports[:5]):
        names.append(nano("run", "-d", "--name", f"web{i}", "hello@1.0", "--", "hello", "serve", port).stdout.strip())
    nano("run", "-d", "--name", "v2", "hello@2.0", "--", "hello", "serve", ports[5])
    for i, port in enumerate(ports[:5]):
        assert http_get(port).strip() == f"hello 1.0 from web{i}: Hello, world.", port
    assert http_get(ports[5]).strip() == "hello 2.0 from v2: Hello again, world."
    st = ps(nano)
    assert all(st[n]["state"] == "running" and st[n]["service_alive"] for n in names + ["v2"]), st

    # Stop one: the others keep serving.
    nano("stop", "-t", "5", "web2")
    assert not answers(ports[2])
    assert ps(nano)["web2"]["state"] == "stopped"
    for i in (0, 1, 3, 4):
        assert http_get(ports[i]).startswith("hello 1.0"), i
    assert http_get(ports[5]).startswith("hello 2.0")
    r = nano("rm", "web0", check=False)
    assert r.returncode != 0 and "running" in r.stderr, r
    nano("rm", "-f", *names, "v2")
    assert ps(nano) == {}
    assert not any(answers(p) for p in ports)


# ---- isolation ----

PROBE = r"""
import ctypes, errno, os
def w(p):
    try:
        with open(p, "w") as f:
            f.write("x")
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(250, 0, 0, 0, 0, 0)  # keyctl: on the deny-list
print({"store": w("/nano/store/x"), "release": w("/nano/release/x"), "usr": w("/usr/nano-x"),
       "home": w(os.path.expanduser("~/nano-escape")), "instance": w("/nano/instance/mine"),
       "tmp": w(os.environ["PROBE_TMP"]), "data": w(os.environ["NANO_INSTANCE"] + "/d"),
       "CapEff": st["CapEff"].strip(), "CapPrm": st["CapPrm"].strip(), "CapBnd": st["CapBnd"].strip(),
       "NoNewPrivs": st["NoNewPrivs"].strip(), "Seccomp": st["Seccomp"].strip(),
       "keyctl": (r, ctypes.get_errno()), "pid": os.getpid(), "uid": os.getuid()})
"""


def run_probe(nano, *opts, tmp="/tmp/nano-probe-unused"):
    r = nano("run", "--rm", "--env", f"PROBE_TMP={tmp}", *opts, "hello@1.0", "--", "python3", "-c", PROBE)
    return eval(r.stdout.strip().splitlines()[-1])  # noqa: S307 (our own output)


def test_ns_isolation(hello, ns_ok, workdir):
    nano = hello
    tmp = f"/tmp/nano-private-{os.getpid()}-{time.monotonic_ns()}"
    p = run_probe(nano, "--name", "iso", tmp=tmp)
    assert p["store"] == "EROFS" and p["release"] == "EROFS", p
    assert p["usr"] in ("EROFS", "EACCES") and p["home"] in ("EROFS", "EACCES"), p
    assert p["instance"] == "ok" and p["tmp"] == "ok" and p["data"] == "ok", p
    assert p["CapEff"] == p["CapPrm"] == p["CapBnd"] == "0000000000000000", p
    assert p["NoNewPrivs"] == "1" and p["Seccomp"] == "2", p
    assert p["keyctl"] == (-1, 1), p  # EPERM
    assert p["uid"] == os.getuid()
    assert not os.path.exists(os.path.expanduser("~/nano-escape"))
    assert not os.path.exists(tmp)  # its /tmp was its own


def test_ns_root_is_a_kept_skeleton(hello, ns_ok, nano_home):
    """The ns root is a read-only bind of a skeleton in cache/root, made by the first run and used by
    the next ones; a foreground --rm run's files go right after it, its name and pin at once."""
    nano = hello
    script = ("awk '$5 == \"/\" {print $4, $6}' /proc/self/mountinfo; ls /dev | tr '\\n' ' '; echo; "
              "touch /new 2>&1; touch /dev/new 2>&1; echo x > /dev/null && echo null-ok")
    first = nano("run", "--rm", "--name", "sk", "hello@1.0", "--", "sh", "-c", script).stdout.splitlines()
    if not (nano_home / "cache" / "root").exists() or not os.listdir(nano_home / "cache" / "root"):
        time.sleep(2.1)  # the host's '/' changed less than two seconds ago: no skeleton kept yet
        first = nano("run", "--rm", "--name", "sk", "hello@1.0", "--", "sh", "-c", script).stdout.splitlines()
    skels = os.listdir(nano_home / "cache" / "root")
    assert len(skels) == 1 and skels[0].startswith("v1-"), skels
    root, opts = first[0].split()
    assert root.endswith("/cache/root/" + skels[0]) and opts.split(",")[0] == "ro", first
    assert first[1].split() == sorted(["fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
                                       "stdout", "tty", "urandom", "zero"]), first
    assert "Read-only file system" in first[2] and "Read-only file system" in first[3], first
    assert first[4] == "null-ok", first
    assert "sk" not in ps(nano) and not (nano_home / "store" / "pins" / "instance:sk").exists()
    wait_for(lambda: not [f for f in os.listdir(nano_home / "instances") if f.startswith(".trash-sk-")],
             what="the trash of sk deleted")
    second = nano("run", "--rm", "--name", "sk", "hello@1.0", "--", "sh", "-c", script).stdout.splitlines()
    assert second[0] == first[0] and os.listdir(nano_home / "cache" / "root") == skels, (first, second)


HOST_MOUNT_LATER = r"""
set -e
w=$1
mkdir -p "$w/shared"
mount --bind "$w/shared" "$w/shared"
mount --make-shared "$w/shared"
"$NANO" run -d --name later --isolate ns hello@1.0 -- sleep 100 >/dev/null
mkdir "$w/shared/sub"
mount -t tmpfs tmpfs "$w/shared/sub"
echo host > "$w/shared/sub/f"
"$NANO" exec later -- sh -c "cat '$w/shared/sub/f' 2>/dev/null || echo absent
    if touch '$w/shared/sub/new' 2>/dev/null; then echo writable; else echo read-only; fi"
"$NANO" rm -f later >/dev/null
"$NANO" umount >/dev/null 2>&1 || true
"""


def test_ns_host_mounts_made_later_stay_out(hello, ns_ok, nano_bin, nano_home):
    """A mount the host makes after an instance started stays out of it: it would come in with its
    own flags, writable (a USB disk, an sshfs in $HOME on a systemd host, whose / is shared). The
    host here is a user+mount namespace of the test's own, where a shared mount needs no privilege,
    and the directory is under $HOME: the instance gets /home from the host (and a /tmp of its own)."""
    w = tempfile.mkdtemp(prefix="nano-later-", dir=os.path.expanduser("~"))
    try:
        r = subprocess.run(["unshare", "-Urm", "--propagation", "unchanged", "sh", "-c", HOST_MOUNT_LATER,
                            "sh", w],
                           env=dict(os.environ, NANO_HOME=os.fspath(nano_home), NANO=str(nano_bin)),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r
        assert r.stdout.split() == ["absent", "read-only"], r
    finally:
        shutil.rmtree(w, ignore_errors=True)


def test_ns_sees_its_instance_dir(hello, ns_ok, nano_home):
    nano = hello
    nano("run", "--name", "keep", "hello@1.0", "--", "sh", "-c", "echo mine > /nano/instance/file")
    assert (nano_home / "instances" / "keep" / "data" / "file").read_text() == "mine\n"
    st = inspect(nano, "keep")
    assert st["isolation"]["applied"]["mode"] == "ns" and st["isolation"]["applied"]["user_namespace"]
    assert st["state"] == "exited" and st["exit_code"] == 0
    nano("rm", "keep")


def test_bare_landlock(hello):
    nano = hello
    tmp = f"/tmp/nano-bare-{os.getpid()}-{time.monotonic_ns()}"
    r = nano("run", "--name", "bare1", "--isolate", "bare", "--env", f"PROBE_TMP={tmp}", "hello@1.0", "--",
             "python3", "-c", PROBE)
    p = eval(r.stdout.strip().splitlines()[-1])  # noqa: S307 (our own output)
    if p["home"] == "ok":
        os.unlink(os.path.expanduser("~/nano-escape"))
    if p["tmp"] == "ok":
        os.unlink(tmp)
    applied = inspect(nano, "bare1")["isolation"]["applied"]
    nano("rm", "bare1")
    assert p["data"] == "ok" and p["tmp"] == "ok", p
    assert p["CapEff"] == p["CapPrm"] == "0000000000000000", p
    assert p["NoNewPrivs"] == "1" and p["keyctl"] == (-1, 1), p
    if not applied["landlock"]:
        gate("nano found no Landlock on this kernel: the host outside the instance stays writable in bare mode")
    assert p["home"] == "EACCES" and p["usr"] in ("EACCES", "EROFS"), p
    assert applied["host_read_only"], applied


def test_seccomp_none_and_profile(hello, workdir):
    nano = hello
    p = run_probe(nano, "--isolate", "bare", "--seccomp", "none")
    assert p["Seccomp"] == "0" and p["keyctl"][1] != 1, p
    prof = workdir / "deny.txt"
    prof.write_text("# deny getcwd only\ngetcwd\n")
    r = nano("run", "--rm", "--isolate", "bare", "--seccomp", prof, "hello@1.0", "--",
             "python3", "-c", "import os\ntry:\n os.getcwd()\nexcept OSError as e: print(e.errno)")
    assert r.stdout.strip() == "1", r


def test_setuid_gains_nothing(hello, ns_ok):
    """no_new_privs: a setuid-root binary runs with our uid. `su` is setuid root on Debian; under
    no_new_privs it cannot become root, so it fails before asking anything."""
    nano = hello
    su = next((p for p in ("/usr/bin/su", "/bin/su") if os.path.exists(p) and os.stat(p).st_mode & 0o4000), None)
    if not su:
        pytest.skip("no setuid su on this machine")
    for mode in ("bare", "ns"):
        r = nano("run", "--rm", "--isolate", mode, "hello@1.0", "--", "sh", "-c",
                 f"grep NoNewPrivs /proc/self/status; {su} -c id root </dev/null; echo rc=$?", check=False)
        assert "NoNewPrivs:\t1" in r.stdout, r
        assert "uid=0" not in r.stdout, r


def test_pid_namespace(hello, ns_ok):
    nano = hello
    r = nano("run", "--rm", "--pid", "hello@1.0", "--", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'")
    pid, count = r.stdout.split()
    assert pid == "2", r  # pid 1 is nano's init
    assert int(count) <= 4, r  # init, sh, ls, grep: no host process


def test_pid_namespace_init_passes_sigterm_on(hello, ns_ok, nano_bin, nano_home):
    """A service with no SIGTERM handler, in its own pid namespace, is not its init (the kernel would
    drop SIGTERM): nano's init is, and passes the signal on. So `stop` ends it at once, by SIGTERM,
    and so does a SIGTERM to a foreground `nano run --pid`."""
    nano = hello
    nano("run", "-d", "--name", "pid1", "--pid", "hello@1.0", "--", "sleep", "1000")
    wait_for(lambda: ps(nano)["pid1"]["state"] == "running", what="running")
    t = time.monotonic()
    nano("stop", "-t", "30", "pid1")
    assert time.monotonic() - t < 10, "stop waited for the SIGKILL timeout"
    i = inspect(nano, "pid1")
    assert i["state"] == "stopped" and i["exit_code"] == 128 + signal.SIGTERM, i
    nano("rm", "pid1")

    p = subprocess.Popen([str(nano_bin), "run", "--rm", "--pid", "hello@1.0", "--", "sleep", "1000"],
                         env=dict(os.environ, NANO_HOME=os.fspath(nano_home)), stdin=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        wait_for(lambda: any(ps(nano).values()), what="the instance")
        time.sleep(0.3)
        t = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 128 + signal.SIGTERM
        assert time.monotonic() - t < 5, "SIGTERM waited for the SIGKILL fallback"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_pid_namespace_killed_run_is_not_alive(hello, ns_ok, nano_bin, nano_home):
    """The init of a pid namespace never execs, so it must close what `nano run` opened itself: it
    held the instance's lock, and a `nano run --pid` killed by SIGKILL looked alive for ever. Like
    the run without --pid (test_foreground_rm_killed_leaves_its_instance): its monitor is seen dead,
    its service alive, and `nano rm -f` ends the service and removes the instance."""
    nano = hello
    with foreground(nano_bin, nano_home, "--pid", "--name", "pidkill", "hello@1.0", "--",
                    "sh", "-c", "echo up; exec sleep 1000") as p:
        assert p.stdout.readline() == "up\n"
        st = wait_for(lambda: (s := ps(nano).get("pidkill")) and s["state"] == "running" and s, what="running")
        init = st["pid"]
        p.kill()
        p.wait(timeout=20)
        st = wait_for(lambda: (s := ps(nano)["pidkill"]) and not s["monitor_alive"] and s, timeout=5,
                      what="the killed nano run seen dead")
        assert st["state"] == "unknown" and st["service_alive"], st
        assert os.path.exists(f"/proc/{init}")
    nano("rm", "-f", "pidkill")
    assert not (nano_home / "instances" / "pidkill").exists()
    wait_for(lambda: not os.path.exists(f"/proc/{init}"), timeout=10, what="the namespace's init to end")


def test_no_core_dumps(hello, nano_bin, nano_home):
    """A service never dumps core (a dump can hold its secrets, and fill its instance's directory),
    whatever the caller's limit: here raised to its hard limit."""
    nano = hello
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    hard = "unlimited" if hard == resource.RLIM_INFINITY else hard
    if hard == 0:
        pytest.skip("the core dump hard limit is 0 here already")
    for mode in ("bare", "ns"):
        r = subprocess.run(["prlimit", f"--core={hard}:{hard}", str(nano_bin), "run", "--rm", "--isolate", mode,
                            "hello@1.0", "--", "sh", "-c", "ulimit -Sc; ulimit -Hc"],
                           env=dict(os.environ, NANO_HOME=os.fspath(nano_home)), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.split() == ["0", "0"], (mode, r)


def test_net_none(hello, ns_ok):
    nano = hello
    port = free_port()
    nano("run", "-d", "--name", "srv", "--isolate", "bare", "hello@1.0", "--", "hello", "serve", port)
    http_get(port)
    code = (f"import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}), 2); print('reached')\n"
            "except OSError as e: print('refused')\n"
            "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))")
    r = nano("run", "--rm", "--net", "none", "hello@1.0", "--", "python3", "-c", code)
    assert r.stdout.splitlines() == ["refused", "['lo']"], r
    r = nano("run", "--rm", "hello@1.0", "--", "python3", "-c", code)
    assert r.stdout.splitlines()[0] == "reached", r
    assert inspect(nano, "srv")["isolation"]["applied"]["net"] == "host"
    nano("rm", "-f", "srv")


def test_exec_joins_the_instance(hello, ns_ok):
    nano = hello
    nano("run", "-d", "--name", "ex", "--pid", "hello@1.0", "--", "sh", "-c",
         "echo from-service > /nano/instance/f; exec sleep 60")
    wait_for(lambda: ps(nano)["ex"]["state"] == "running", what="running")
    r = nano("exec", "ex", "--", "sh", "-c",
             "cat /nano/instance/f; grep NoNewPrivs /proc/self/status; ls /proc | grep -c '^[0-9]'; exit 4",
             check=False)
    assert r.returncode == 4, r
    lines = r.stdout.split("\n")
    # init, the service, sh, ls, grep
    assert lines[0] == "from-service" and lines[1] == "NoNewPrivs:\t1" and int(lines[2]) <= 5, r
    assert nano("exec", "ex", "--", "nope-not-here", check=False).returncode == 127
    nano("stop", "-t", "1", "ex")
    assert nano("exec", "ex", "--", "true", check=False).returncode == 125
    nano("rm", "ex")


# ---- supervision ----

def test_kill_monitor_reported_truthfully(hello):
    nano = hello
    port = free_port()
    nano("run", "-d", "--name", "orphan", "--isolate", "bare", "hello@1.0", "--", "hello", "serve", port)
    http_get(port)
    st = ps(nano)["orphan"]
    os.kill(st["monitor_pid"], signal.SIGKILL)
    st = wait_for(lambda: (s := ps(nano)["orphan"])["state"] == "unknown" and s, what="state unknown")
    assert not st["monitor_alive"] and st["service_alive"] and st["orphaned"], st
    assert "orphaned" in nano("ps").stdout
    nano("stop", "-t", "2", "orphan")
    st = ps(nano)["orphan"]
    assert st["state"] == "stopped" and not st["service_alive"], st
    assert not answers(port)
    nano("rm", "orphan")


def start_detached(nano_bin, nano_home, name, *cmd, env=None):
    """`nano run -d --name name --isolate bare hello@1.0 -- cmd`, started and not waited for."""
    return subprocess.Popen([str(nano_bin), "run", "-d", "--name", name, "--isolate", "bare", "hello@1.0", "--",
                             *cmd], env=dict(os.environ, NANO_HOME=os.fspath(nano_home), **(env or {})),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stopped_by_its_monitor(nano, name):
    """The instance is over, stopped by its monitor's SIGTERM (not by a SIGKILL from `nano stop`)."""
    st = wait_for(lambda: (s := inspect(nano, name))["state"] == "stopped" and not s["monitor_alive"] and s,
                  what=f"{name} to be stopped")
    assert not st["service_alive"] and st["exit_code"] == 128 + signal.SIGTERM, st
    return st


def test_stop_while_the_monitor_starts(hello, nano_bin, nano_home, workdir):
    """A stop between `nano run -d`'s first state.json and the monitor's first start: state.json names
    no monitor yet (never `nano run -d` itself), so the stop waits for the monitor, which stops the
    service it has just started. `nano run -d` is not signalled: it prints the name and exits 0, and
    the stop sends no SIGKILL. A wrapper that sleeps before exec'ing nano-monitor makes the window
    wide enough to hit every time."""
    nano = hello
    monitor = nano_bin.resolve().parent.parent / "runtime" / "nano-monitor"
    if not monitor.exists():
        monitor = nano_bin.resolve().parent / "nano-monitor"
    slow = workdir / "slow-monitor"
    slow.write_text(f"#!/bin/sh\nsleep 1\nexec {monitor} \"$@\"\n")
    slow.chmod(0o755)
    p = start_detached(nano_bin, nano_home, "slowmon", "sleep", "100", env={"NANO_MONITOR": os.fspath(slow)})
    try:
        state = nano_home / "instances" / "slowmon" / "state.json"
        wait_for(lambda: state.exists() or p.poll() is not None, what="the first state.json")
        assert p.poll() is None, p.communicate()
        st = json.loads(state.read_text())
        assert st["state"] == "starting" and st["monitor_pid"] is None, st
        t0 = time.monotonic()
        r = nano("stop", "-t", "1", "slowmon", check=False)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0 and out == "slowmon\n", (p.returncode, out, err)
        assert r.returncode == 0 and r.stdout == "slowmon\n", r
        assert time.monotonic() - t0 < 5, "the stop waited for a SIGKILL"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    stopped_by_its_monitor(nano, "slowmon")
    nano("rm", "slowmon")


def test_stop_right_after_run_detached(hello, nano_bin, nano_home):
    """`nano stop` in a tight loop from the moment `nano run -d` starts: each stop finds no instance
    yet (exit 3), or stops it for good, whatever step of its start it is at (the directory made, the
    lock taken, the first state written, the monitor starting), waiting for the owner to name itself
    where it has not yet. `nano run -d` always prints the name and exits 0."""
    nano = hello
    for n in range(6):
        name = f"race{n}"
        p = start_detached(nano_bin, nano_home, name, "sleep", "100")
        try:
            while True:
                r = nano("stop", "-t", "1", name, check=False)
                if r.returncode != 3:
                    break
                assert "no instance" in r.stderr, r
            assert r.returncode == 0 and r.stdout == f"{name}\n", r
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0 and out == f"{name}\n", (p.returncode, out, err)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        stopped_by_its_monitor(nano, name)
        nano("rm", name)


def test_stop_kills_a_monitor_that_does_not_go(hello, nano_bin, nano_home):
    """A monitor that does not answer the stop (here: SIGSTOPped) is killed with its service once the
    timeout and 5 s more are over, after checking that the pid is still that monitor's."""
    nano = hello
    nano("run", "-d", "--name", "stuck", "--isolate", "bare", "hello@1.0", "--", "sleep", "100")
    st = inspect(nano, "stuck")
    os.kill(st["monitor_pid"], signal.SIGSTOP)
    try:
        nano("stop", "-t", "0", "stuck")
    finally:
        try:
            os.kill(st["monitor_pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
    after = inspect(nano, "stuck")
    assert after["state"] == "stopped" and after["exit_code"] == 137, after
    assert not after["monitor_alive"] and not after["service_alive"], after
    nano("rm", "stuck")


def test_rm_force_of_a_foreground_rm_instance(hello, nano_bin, nano_home):
    """`nano rm -f` of a running foreground --rm instance: the stop makes its owner remove it, which
    is what rm was asked for (exit 0), not an instance gone missing."""
    nano = hello
    with foreground(nano_bin, nano_home, "--rm", "--name", "fgrm", "--isolate", "bare", "hello@1.0", "--",
                    "sleep", "1000", stderr=subprocess.PIPE) as p:
        wait_for(lambda: (s := ps(nano).get("fgrm")) and s["state"] == "running", what="running")
        r = nano("rm", "-f", "fgrm", check=False)
        assert r.returncode == 0 and r.stderr == "", r
        assert p.wait(timeout=20) == 128 + signal.SIGTERM
    assert "fgrm" not in ps(nano) and not (nano_home / "instances" / "fgrm").exists()


def test_fallback_monitor_honours_rm(hello, nano_home):
    """Without nano-monitor (NANO_MONITOR names nothing), the forked monitor does what nano-monitor
    does with --rm: the instance goes once its service is over."""
    nano = hello
    r = nano("run", "-d", "--rm", "--name", "fallrm", "--isolate", "bare", "hello@1.0", "--", "/bin/true",
             env={"NANO_MONITOR": "/nonexistent"})
    assert r.stdout == "fallrm\n", r
    wait_for(lambda: "fallrm" not in ps(nano), what="the instance to be removed")
    assert not (nano_home / "instances" / "fallrm").exists()


def test_restart_always_with_backoff(hello):
    nano = hello
    nano("run", "-d", "--name", "flappy", "--isolate", "bare", "--restart", "always", "hello@1.0", "--",
         "sh", "-c", "echo run; exit 1")
    st = wait_for(lambda: (s := inspect(nano, "flappy"))["restarts"] >= 3 and s, what="3 restarts")
    nano("stop", "flappy")
    st = inspect(nano, "flappy")
    assert st["state"] == "stopped" and st["restarts"] >= 3, st
    assert nano("logs", "flappy").stdout.count("run\n") >= 4
    nano("rm", "flappy")


def test_log_rotation(hello, nano_home):
    nano = hello
    nano("run", "--name", "chatty", "-d", "--log-max", "4K", "--isolate", "bare", "hello@1.0", "--",
         "python3", "-c", "import sys\nfor i in range(2000): print('line %05d' % i)")
    wait_for(lambda: ps(nano)["chatty"]["state"] == "exited", what="exit")
    logs = nano_home / "instances" / "chatty" / "logs"
    cur, old = (logs / "service.log").stat().st_size, (logs / "service.log.1").stat().st_size
    assert cur <= 4096 and old <= 4096, (cur, old)
    out = nano("logs", "chatty").stdout
    assert out.endswith("line 01999\n") and len(out) == cur + old, out[:40]
    nano("rm", "chatty")


# ---- limits ----

def test_memory_limit_kills_and_restarts(hello):
    gate(cgroup_usable())
    nano = hello
    nano("run", "-d", "--name", "hog", "--isolate", "bare", "--memory", "32M", "--restart", "on-failure",
         "--require-limits", "hello@1.0", "--",
         "python3", "-c", "import time\nb = bytearray(256 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
                          "time.sleep(60)")
    st = wait_for(lambda: (s := inspect(nano, "hog"))["restarts"] >= 1 and s, timeout=30, what="a restart")
    assert st["limits"]["applied"]["memory_max"] == 32 << 20, st["limits"]
    assert st["limits"]["cgroup"]["paths"], st["limits"]
    assert st["cgroup_now"]["memory_oom_kill"] >= 1 or st["cgroup_now"]["memory_oom"] >= 1, st["cgroup_now"]
    nano("stop", "-t", "1", "hog")
    st = inspect(nano, "hog")
    assert st["state"] == "stopped" and st["restarts"] >= 1
    nano("rm", "hog")


def test_pids_limit_stops_a_fork_bomb(hello):
    gate(cgroup_usable())
    nano = hello
    bomb = ("import os, time\nkids = []\n"
            "for i in range(60):\n"
            "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        time.sleep(2)\n        os._exit(0)\n    kids.append(pid)\n"
            "print(len(kids))\n"
            "for k in kids: os.waitpid(k, 0)\n")
    r = nano("run", "--name", "bomb", "--isolate", "bare", "--pids", "16", "hello@1.0", "--", "python3", "-c", bomb)
    assert int(r.stdout) < 16, r
    st = inspect(nano, "bomb")
    assert st["limits"]["applied"]["pids_max"] == 16, st["limits"]
    nano("rm", "bomb")


def procs_running(tag):
    """Pids of the live processes (not zombies) whose command line holds tag."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if tag in cmd and state != "Z":
            found.append(int(d))
    return found


def cgroup_members(paths):
    out = set()
    for p in paths:
        try:
            with open(os.path.join(p, "cgroup.procs")) as f:
                out |= {int(x) for x in f.read().split()}
        except FileNotFoundError:
            pass
    return out


def daemon_tag():
    """A `sleep` argument no other process has: a number of seconds with a unique fraction."""
    return "%d.%06d" % (900 + os.getpid() % 100, time.time_ns() // 1000 % 1000000)


def test_stop_and_rm_empty_the_cgroup(hello, nano_home):
    """A daemon that left the service's process group (setsid) is still in the instance's cgroup:
    `nano stop` kills it, `nano rm` removes the cgroup, and the next instance of the name gets its
    limits."""
    gate(cgroup_usable())
    nano = hello
    tag = daemon_tag()
    nano("run", "-d", "--name", "dmn", "--isolate", "bare", "--pids", "50", "--require-limits", "hello@1.0",
         "--", "sh", "-c", f"setsid sleep {tag} & exec sleep 300")
    wait_for(lambda: procs_running(tag), what="the daemon")
    paths = inspect(nano, "dmn")["limits"]["cgroup"]["paths"]
    assert set(procs_running(tag)) <= cgroup_members(paths), paths
    nano("stop", "-t", "2", "dmn")
    # Out of its cgroup (cgroup_exit()) a moment before it is a zombie: a short wait.
    wait_for(lambda: not procs_running(tag), timeout=3, what="the daemon killed by `nano stop`")
    assert not cgroup_members(paths), paths
    assert "killed" in (nano_home / "instances" / "dmn" / "logs" / "monitor.log").read_text()
    nano("rm", "dmn")
    assert not any(os.path.exists(p) for p in paths), paths
    r = nano("run", "--name", "dmn", "--isolate", "bare", "--pids", "50", "--require-limits", "hello@1.0",
             "--", "true", check=False)
    assert r.returncode == 0 and "not applied" not in r.stderr, r
    nano("rm", "dmn")


def test_service_end_empties_the_cgroup(hello):
    """The service exits on its own and leaves a daemon: the monitor (detached) or `nano run`
    (foreground) kills it with the service, and --rm removes the cgroup."""
    gate(cgroup_usable())
    nano = hello
    tag = daemon_tag()
    nano("run", "-d", "--name", "quits", "--isolate", "bare", "--pids", "50", "--require-limits", "hello@1.0",
         "--", "sh", "-c", f"setsid sleep {tag} & sleep 0.5")
    paths = inspect(nano, "quits")["limits"]["cgroup"]["paths"]
    wait_for(lambda: ps(nano)["quits"]["state"] == "exited", what="exit")
    wait_for(lambda: not procs_running(tag), timeout=5, what="the daemon killed with the service")
    assert not cgroup_members(paths), paths
    nano("rm", "quits")
    assert not any(os.path.exists(p) for p in paths), paths

    tag = daemon_tag()
    r = nano("run", "--rm", "--name", "fg", "--isolate", "bare", "--pids", "50", "--require-limits",
             "hello@1.0", "--", "sh", "-c", f"setsid sleep {tag} &")
    wait_for(lambda: not procs_running(tag), timeout=3, what="the daemon killed with its foreground run")
    assert "fg" not in ps(nano), r


def test_rm_reports_a_cgroup_it_cannot_remove(hello):
    gate(cgroup_usable())
    nano = hello
    nano("run", "-d", "--name", "stuck", "--isolate", "bare", "--pids", "50", "--require-limits", "hello@1.0",
         "--", "true")
    wait_for(lambda: ps(nano)["stuck"]["state"] == "exited", what="exit")
    paths = inspect(nano, "stuck")["limits"]["cgroup"]["paths"]
    # A child cgroup keeps its parent from being removed (EBUSY), as processes would.
    sub = os.path.join(paths[0], "sub")
    os.mkdir(sub)
    try:
        r = nano("rm", "stuck", check=False)
        assert r.returncode != 0, r
        assert "cgroup" in r.stderr and "kept" in r.stderr, r
        assert "stuck" in ps(nano), "the instance went with its cgroup left behind"
    finally:
        os.rmdir(sub)
    nano("rm", "stuck")
    assert not any(os.path.exists(p) for p in paths), paths


def test_exec_joins_the_cgroup(hello):
    """`nano exec` runs in the instance's cgroup: its limits hold for what it starts."""
    gate(cgroup_usable())
    nano = hello
    nano("run", "-d", "--name", "exq", "--isolate", "bare", "--pids", "5", "--memory", "32M",
         "--require-limits", "hello@1.0", "--", "sleep", "300")
    wait_for(lambda: ps(nano)["exq"]["state"] == "running", what="running")
    paths = inspect(nano, "exq")["limits"]["cgroup"]["paths"]
    name = os.path.basename(paths[0])
    forks = ("import os, time\nkids = []\n"
             "for i in range(8):\n"
             "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
             "    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    kids.append(pid)\n"
             "print(len(kids))\nprint(open('/proc/self/cgroup').read())\n"
             "for k in kids: os.waitpid(k, 0)\n")
    r = nano("exec", "exq", "--", "python3", "-c", forks)
    lines = r.stdout.split("\n")
    # the service and python are in the cgroup: at most 3 more under --pids 5
    assert int(lines[0]) <= 3, r
    for ctrl in ("pids", "memory"):
        assert any(ctrl in l.split(":")[1].split(",") and l.endswith("/" + name) for l in lines[1:] if l), r
    assert inspect(nano, "exq")["cgroup_now"]["pids_max_events"] >= 1

    # An instance cgroup that cannot be joined is an error, not a command run outside it.
    procs = os.path.join(paths[0], "cgroup.procs")
    os.chmod(procs, 0o444)
    try:
        r = nano("exec", "exq", "--", "true", check=False)
    finally:
        os.chmod(procs, 0o644)
    assert r.returncode == 125 and "cannot join the cgroup of 'exq'" in r.stderr, r
    nano("stop", "-t", "1", "exq")
    nano("rm", "exq")


def test_limits_refused_without_cgroup(hello):
    nano = hello
    env = {"NANO_CGROUP_V1_ROOT": "/nano-no-such-dir", "NANO_CGROUP_V2_ROOT": "/nano-no-such-dir"}
    r = nano("run", "--rm", "--isolate", "bare", "--memory", "64M", "hello@1.0", "--", "true", env=env)
    assert "not applied" in r.stderr, r
    r = nano("run", "--isolate", "bare", "--memory", "64M", "--require-limits", "hello@1.0", "--", "true",
             env=env, check=False)
    assert r.returncode == 125 and "require-limits" in r.stderr, r


# ---- GC roots ----

def test_gc_keeps_releases_of_instances(hello):
    nano = hello
    port = free_port()
    nano("run", "-d", "--name", "pinned", "--isolate", "bare", "hello@2.0", "--", "hello", "serve", port)
    assert http_get(port).startswith("hello 2.0")
    nano("store", "rm", "hello@2.0")
    gc = nano("store", "gc", "--json").json()
    # hello-2.0's own greeting.txt (and its manifest) are still used by the instance.
    assert gc["manifests"] == 0, gc
    r = nano("run", "--rm", "--isolate", "bare", inspect(nano, "pinned")["release_id"], "--",
             "sh", "-c", "cat $NANO_RELEASE/share/hello/greeting.txt")
    assert r.stdout.strip(), r
    assert nano("store", "fsck").returncode == 0
    nano("rm", "-f", "pinned")
    gc = nano("store", "gc", "--json").json()
    assert gc["manifests"] == 1 and gc["objects"] >= 1, gc


# ---- the monitor's cost ----

def test_monitor_is_small(hello):
    nano = hello
    nano("run", "-d", "--name", "small", "--isolate", "bare", "hello@1.0", "--", "sleep", "30")
    st = ps(nano)["small"]
    with open(f"/proc/{st['monitor_pid']}/status") as f:
        status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    rss_kib = int(status["VmRSS"].split()[0])
    with open(f"/proc/{st['monitor_pid']}/cmdline", "rb") as f:
        exe = f.read().split(b"\0")[0].decode()
    print(f"\nmonitor {exe}: VmRSS {rss_kib} KiB (RssAnon {status['RssAnon'].strip()})")
    assert exe.endswith("nano-monitor")
    assert rss_kib < 1024, status["VmRSS"]
    nano("rm", "-f", "small")


# ---- rootfs ----

def test_rootfs_mode(nano, require_fuse, ns_ok, workdir, nano_home):
    """A release that is a whole (tiny) root filesystem: dash and the libraries it needs."""
    import shutil
    root = workdir / "rootfs"
    for d in ("bin", "nano/instance", "tmp", "dev", "proc"):
        (root / d).mkdir(parents=True)
    sh = shutil.which("dash") or "/bin/sh"
    shutil.copy2(os.path.realpath(sh), root / "bin" / "sh")
    out = subprocess.run(["ldd", os.path.realpath(sh)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        path = next((w for w in line.split() if w.startswith("/")), None)
        if path and os.path.exists(path):
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(path), dest)
    nano("store", "add", root, "--name", "mini", "--version", "1", "-q")
    # $$ is 2: pid 1 is nano's init
    r = nano("run", "--name", "r1", "--isolate", "rootfs", "--pid", "mini@1", "--",
             "/bin/sh", "-c", "echo hi > /nano/instance/x; echo $$; cd /; echo /*; echo x > /bin/y || echo ro")
    lines = r.stdout.splitlines()
    assert lines[0] == "2" and "/nano" in lines[1].split() and "/home" not in lines[1].split(), r
    assert lines[-1] == "ro", r
    assert (nano_home / "instances" / "r1" / "data" / "x").read_text() == "hi\n"
    assert inspect(nano, "r1")["isolation"]["applied"]["mode"] == "rootfs"
    nano("rm", "r1")
    umount_wait(nano)
