# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers shared by the integration tests (conftest.py turns some into fixtures).

    run_nano(nano_bin, *args, home, input=None, check=True, timeout=None, env=None, cwd=None,
             text=True) -> NanoResult
    make_tree(path, spec, mtime_ns=None)
    tree_digest(path, mtime=True) -> sorted list of (relpath, type, mode & 0o777, size, mtime_ns,
                                                     sha256 hex | symlink target | None)
    probe_fuse(), probe_userns() -> None when usable, else the reason
    gate(reason)  skip with the reason, or fail when NANO_TEST_MUST_WORK=1
    cleanup_workdir(path)  unmount, kill leftover processes, check logs for sanitizer reports

Only the standard library and pytest: the runner is Debian's /usr/bin/python3.
"""

import errno
import functools
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# What a sanitizer writes on stderr when it finds something (UBSan: "file:line:col: runtime error: ...").
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                     "ThreadSanitizer", "MemorySanitizer", "runtime error:")

DEFAULT_TIMEOUT = float(os.environ.get("NANO_TEST_TIMEOUT", "60"))


def env_flag(name):
    return os.environ.get(name, "") not in ("", "0", "no", "false")


def must_work():
    """CI sets NANO_TEST_MUST_WORK=1: a capability the machine is known to have must work."""
    return env_flag("NANO_TEST_MUST_WORK")


def keep_tmp():
    return env_flag("NANO_TEST_KEEP")


def gate(reason):
    """Skip the test with `reason`; in CI (NANO_TEST_MUST_WORK=1) fail instead."""
    if reason is None:
        return
    if must_work():
        pytest.fail(f"{reason} [NANO_TEST_MUST_WORK=1: this is expected to work here]", pytrace=False)
    pytest.skip(reason)


# ---- the binary ----

def find_nano_bin():
    """NANO_BIN (relative to the current directory), else build/cli/nano in the source tree."""
    env = os.environ.get("NANO_BIN")
    if env:
        return Path(env).absolute()
    return REPO_ROOT / "build" / "cli" / "nano"


def sanitizer_report(data):
    """The sanitizer report in data (bytes or str), or None."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    for marker in SANITIZER_MARKERS:
        i = data.find(marker)
        if i >= 0:
            start = data.rfind("\n", 0, max(0, i - 2000)) + 1
            return data[start:start + 6000]
    return None


class NanoResult(subprocess.CompletedProcess):
    """CompletedProcess (args, returncode, stdout, stderr) plus json()."""

    def json(self):
        return json.loads(self.stdout)

    def __str__(self):
        return describe(self.args, self.returncode, self.stdout, self.stderr)


class NanoFailed(AssertionError):
    pass


def _clip(data, limit=8000):
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    if data is None:
        return ""
    if len(data) > limit:
        data = data[:limit // 2] + f"\n[... {len(data) - limit} characters cut ...]\n" + data[-limit // 2:]
    return data


def describe(args, returncode, stdout, stderr):
    cmd = " ".join(str(a) for a in args)
    return (f"$ {cmd}\nexit code: {returncode}\n"
            f"--- stdout ---\n{_clip(stdout)}\n--- stderr ---\n{_clip(stderr)}")


def run_nano(nano_bin, *args, home, input=None, check=True, timeout=None, env=None, cwd=None,
             text=True):
    """Run `nano_bin args...` with NANO_HOME=home and return a NanoResult.

    input: str or bytes for stdin (stdin is /dev/null otherwise). check: raise NanoFailed unless
    the exit code is 0. timeout: seconds (default NANO_TEST_TIMEOUT or 60); on expiry the whole
    process group is killed and the test fails. env: extra variables (None as a value removes
    one). text: decode stdout/stderr as UTF-8 (invalid bytes replaced); False gives bytes.
    A sanitizer report on stderr always fails the test, whatever check says.
    """
    cmd = [str(nano_bin)] + [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    full_env = dict(os.environ)
    full_env["NANO_HOME"] = os.fspath(home)
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = str(v)
    if isinstance(input, str):
        input = input.encode()
    if timeout is None:
        timeout = DEFAULT_TIMEOUT

    proc = subprocess.Popen(cmd, env=full_env, cwd=cwd,
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = b"", b"(output lost: a process still holds the pipes)"
        pytest.fail(f"timed out after {timeout} s\n" + describe(cmd, "killed", out, err), pytrace=False)
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise

    report = sanitizer_report(err)
    if report:
        pytest.fail(f"sanitizer report from nano\n$ {' '.join(cmd)}\nexit code: {proc.returncode}\n"
                    f"{report}", pytrace=False)
    if text:
        out = out.decode("utf-8", "replace")
        err = err.decode("utf-8", "replace")
    result = NanoResult(cmd, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise NanoFailed("nano failed\n" + str(result))
    return result


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- capability probes (cached for the session) ----

@functools.lru_cache(maxsize=None)
def probe_fuse():
    """None if this user can mount FUSE filesystems, else why not."""
    uid = os.geteuid()
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError as e:
        return (f"/dev/fuse cannot be opened read/write by uid {uid}: {e.strerror} "
                f"(distributions ship it 0666; as root: chmod 0666 /dev/fuse)")
    if not shutil.which("fusermount3"):
        return "fusermount3 not found (Debian package fuse3)"
    # A real mount, when the tools are there: /dev/fuse can be open and fusermount3 still refuse.
    if shutil.which("squashfuse") and shutil.which("mksquashfs"):
        with tempfile.TemporaryDirectory(prefix="nano-fuse-probe-") as d:
            src, img, mnt = Path(d, "src"), Path(d, "img"), Path(d, "mnt")
            src.mkdir()
            mnt.mkdir()
            (src / "hello").write_bytes(b"hi\n")
            r = subprocess.run(["mksquashfs", src, img, "-quiet", "-no-progress", "-no-xattrs"],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            if r.returncode != 0:
                return None  # not FUSE's problem; trust the device check
            r = subprocess.run(["squashfuse", img, mnt], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)
            if r.returncode != 0:
                return ("a test FUSE mount (squashfuse via fusermount3) failed: "
                        + r.stderr.decode("utf-8", "replace").strip())
            try:
                ok = (mnt / "hello").read_bytes() == b"hi\n"
            finally:
                subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True, timeout=30)
            if not ok:
                return "a test FUSE mount (squashfuse) did not show its file"
    return None


@functools.lru_cache(maxsize=None)
def probe_userns():
    """None if `unshare -Ur true` works for this user, else why not."""
    if not shutil.which("unshare"):
        return "unshare not found (Debian package util-linux)"
    try:
        r = subprocess.run(["unshare", "-Ur", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=30)
    except subprocess.TimeoutExpired:
        return "`unshare -Ur true` timed out"
    if r.returncode != 0:
        return ("unprivileged user namespaces do not work here (`unshare -Ur true`: "
                + r.stderr.decode("utf-8", "replace").strip() + ")")
    return None


# ---- per-test working directory ----

def _unescape_mountinfo(s):
    # Spaces, tabs, newlines and backslashes are written as \ooo.
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounts_under(path):
    """Mount points at or below path (deepest first), as this process sees them."""
    root = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 5:
                    continue
                mp = _unescape_mountinfo(fields[4])
                if mp == root or mp.startswith(root + "/"):
                    found.append(mp)
    except OSError:
        pass
    return sorted(set(found), key=len, reverse=True)


def _unmount_all(path):
    for mp in mounts_under(path):
        subprocess.run(["fusermount3", "-u", "-z", mp], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
        if mp in mounts_under(path):
            subprocess.run(["umount", "-l", mp], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=30)


def processes_using(path):
    """PIDs (not ours) whose NANO_HOME lies under path, or whose cwd does."""
    root = os.path.realpath(path)
    key = b"NANO_HOME="
    me = os.getpid()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        hit = False
        for e in env:
            if e.startswith(key):
                h = os.fsdecode(e[len(key):])
                if h == root or h.startswith(root + "/"):
                    hit = True
                    break
        if not hit:
            try:
                cwd = os.readlink(f"/proc/{d}/cwd")
                hit = cwd == root or cwd.startswith(root + "/")
            except OSError:
                pass
        if hit:
            pids.append(int(d))
    return pids


def _kill_leftovers(path, grace=5.0):
    pids = processes_using(path)
    if not pids:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not any(os.path.exists(f"/proc/{p}") and not _is_zombie(p) for p in pids):
                return pids
            time.sleep(0.05)
    return pids


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def sanitizer_reports_in_logs(path, limit=8 << 20):
    """(file, report) for log files under path holding a sanitizer report."""
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            if not (name.endswith(".log") or name.startswith("log") or "stderr" in name):
                continue
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                    continue
                with open(p, "rb") as f:
                    report = sanitizer_report(f.read())
            except OSError:
                continue
            if report:
                found.append((p, report))
    return found


def _rmtree(path):
    def onerror(func, p, exc_info):
        # Read-only directories (a store's objects, a checkout of 0555 dirs): open up and retry.
        err = exc_info[1]
        if isinstance(err, FileNotFoundError):
            return
        if isinstance(err, PermissionError) or getattr(err, "errno", None) in (errno.EACCES, errno.EPERM):
            try:
                os.chmod(os.path.dirname(p), 0o700)
                if os.path.isdir(p) and not os.path.islink(p):
                    os.chmod(p, 0o700)
                func(p)
                return
            except OSError:
                pass
        raise err

    shutil.rmtree(path, onerror=onerror)


def cleanup_workdir(path):
    """Tear down what a test left under path. Returns a list of problems (strings)."""
    problems = []
    _unmount_all(path)
    killed = _kill_leftovers(path)
    if killed:
        problems.append(f"processes still running at the end of the test were killed: {killed}")
    _unmount_all(path)
    left = mounts_under(path)
    if left:
        problems.append(f"mounts that could not be removed: {left}")
    for p, report in sanitizer_reports_in_logs(path):
        problems.append(f"sanitizer report in {p}:\n{report}")
    return problems


def remove_workdir(path):
    if not mounts_under(path):
        _rmtree(path)


# ---- trees ----

def make_tree(path, spec, mtime_ns=None):
    """Create the tree `spec` under path (created if missing).

    spec maps a name to:
        bytes or str               a regular file (mode 0644) with that content
        dict                       a directory (0755) with that spec
        ("symlink", target)        a symbolic link
        ("mode", mode, content)    a file (bytes/str) or directory (dict) with permission bits mode
        ("hardlink", relpath)      a hard link to relpath (relative to the top of the tree,
                                   created earlier in spec order)
    mtime_ns: if given, every entry created (symlinks included) gets this mtime, directories last.
    Directory modes are applied after their contents exist, so 0555 directories work.
    """
    top = Path(path)
    top.mkdir(parents=True, exist_ok=True)
    created = []  # (path, is_dir) in creation order
    dir_modes = []

    def build(d, sp):
        for name, v in sp.items():
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"bad name in tree spec: {name!r}")
            p = d / name
            mode = None
            if isinstance(v, tuple) and v and v[0] == "mode":
                _, mode, v = v
            if isinstance(v, (bytes, str)):
                p.write_bytes(v.encode() if isinstance(v, str) else v)
                os.chmod(p, 0o644 if mode is None else mode)
                created.append((p, False))
            elif isinstance(v, dict):
                p.mkdir()
                build(p, v)
                dir_modes.append((p, 0o755 if mode is None else mode))
                created.append((p, True))
            elif isinstance(v, tuple) and len(v) == 2 and v[0] == "symlink":
                os.symlink(v[1], p)
                created.append((p, False))
            elif isinstance(v, tuple) and len(v) == 2 and v[0] == "hardlink":
                os.link(top / v[1], p)
                created.append((p, False))
            else:
                raise ValueError(f"bad tree spec entry {name!r}: {v!r}")

    build(top, spec)
    if mtime_ns is not None:
        for p, is_dir in created:
            if not is_dir:
                os.utime(p, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    # Deepest directories first, so setting a parent's mode/mtime comes after its children's.
    for p, mode in sorted(dir_modes, key=lambda x: len(x[0].parts), reverse=True):
        if mtime_ns is not None:
            os.utime(p, ns=(mtime_ns, mtime_ns))
        os.chmod(p, mode)
    return top


def _sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tree_digest(path, mtime=True):
    """Sorted [(relpath, type, mode & 0o777, size, mtime_ns, sha256 | target | None)] of everything
    below path (path itself excluded), symlinks not followed. type is "file", "dir", "symlink" or
    "other". Directories have size 0 (their st_size differs between filesystems) and None as the
    last field. mtime=False puts None in the mtime column."""
    top = os.fspath(path)
    out = []

    def walk(d, rel):
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            mt = st.st_mtime_ns if mtime else None
            perm = stat.S_IMODE(st.st_mode) & 0o777
            if stat.S_ISLNK(st.st_mode):
                out.append((r, "symlink", perm, st.st_size, mt, os.readlink(e.path)))
            elif stat.S_ISDIR(st.st_mode):
                out.append((r, "dir", perm, 0, mt, None))
                walk(e.path, r)
            elif stat.S_ISREG(st.st_mode):
                out.append((r, "file", perm, st.st_size, mt, _sha256_file(e.path)))
            else:
                out.append((r, "other", perm, 0, mt, None))

    walk(top, "")
    out.sort()
    return out


def fsck_problems(result):
    """The problem list of `nano store fsck --json`'s result."""
    return result.json()["problem_list"]


def checkout_equal(nano, workdir, release, src, name="co"):
    """Checks out release into workdir/name (replacing it) and compares it with the tree src."""
    co = workdir / name
    shutil.rmtree(co, ignore_errors=True)
    nano("store", "checkout", release, co)
    assert tree_digest(co) == tree_digest(src), f"checkout of {release} differs from {src}"
