# SPDX-License-Identifier: LGPL-2.1-or-later
"""The test harness itself (nanotest.py): trees, digests, the nano() runner's checks, cleanup.
These need no nano binary, so a broken build cannot hide a broken harness."""

import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from nanotest import cleanup_workdir, make_tree, mounts_under, probe_fuse, run_nano, tree_digest

SPEC = {
        "a.txt": b"hello\n",
        "empty": b"",
        "s": "text as str",
        "bin": ("mode", 0o755, b"#!/bin/sh\n"),
        "ro": ("mode", 0o444, b"read only"),
        "dir": {
                "nested": {"deep.dat": bytes(range(256)) * 10},
                "link": ("symlink", "../a.txt"),
                "dangling": ("symlink", "no/such/file"),
        },
        "locked": ("mode", 0o555, {"inside": b"x"}),
        "hard": ("hardlink", "a.txt"),
}


def fake_nano(workdir, body):
    """A stand-in binary: a Python script with body as its code."""
    p = workdir / "fake-nano"
    p.write_text(f"#!{sys.executable}\nimport os, sys, time\n" + textwrap.dedent(body))
    p.chmod(0o755)
    return p


def test_make_tree_and_digest(workdir):
    t = make_tree(workdir / "t", SPEC, mtime_ns=1_600_000_000_123_456_789)
    d = {e[0]: e for e in tree_digest(t)}
    assert sorted(d) == sorted(["a.txt", "empty", "s", "bin", "ro", "dir", "dir/nested",
                                "dir/nested/deep.dat", "dir/link", "dir/dangling", "locked",
                                "locked/inside", "hard"])
    assert d["a.txt"] == ("a.txt", "file", 0o644, 6, 1_600_000_000_123_456_789,
                          "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
    assert d["empty"][5] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert d["bin"][2] == 0o755 and d["ro"][2] == 0o444
    assert d["dir/link"][1] == "symlink" and d["dir/link"][5] == "../a.txt"
    assert d["dir/dangling"][5] == "no/such/file"
    assert d["locked"][1:3] == ("dir", 0o555)
    assert d["dir"] == ("dir", "dir", 0o755, 0, 1_600_000_000_123_456_789, None)
    assert d["hard"][5] == d["a.txt"][5]
    assert os.stat(t / "hard").st_ino == os.stat(t / "a.txt").st_ino
    assert tree_digest(t) == sorted(tree_digest(t))


def test_digest_sees_differences(workdir):
    a = make_tree(workdir / "a", SPEC, mtime_ns=10**18)
    b = make_tree(workdir / "b", SPEC, mtime_ns=10**18)
    assert tree_digest(a) == tree_digest(b)
    os.chmod(b / "a.txt", 0o600)
    assert tree_digest(a) != tree_digest(b)
    os.chmod(b / "a.txt", 0o644)
    os.utime(b / "a.txt", ns=(10**18, 10**18 + 1))
    assert tree_digest(a) != tree_digest(b)
    assert tree_digest(a, mtime=False) == tree_digest(b, mtime=False)
    (b / "a.txt").write_bytes(b"hellO\n")
    assert tree_digest(a, mtime=False) != tree_digest(b, mtime=False)


def test_make_tree_rejects_bad_spec(workdir):
    with pytest.raises(ValueError):
        make_tree(workdir / "x", {"../escape": b""})
    with pytest.raises(ValueError):
        make_tree(workdir / "y", {"f": 42})


def test_run_nano_basics(workdir):
    f = fake_nano(workdir, """
        print("home=" + os.environ["NANO_HOME"])
        print("args=" + "|".join(sys.argv[1:]))
        print("stdin=" + sys.stdin.read())
        sys.exit(int(os.environ.get("RC", "0")))
        """)
    r = run_nano(f, "store", "ls", workdir, home=workdir / "h", input="in put")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [f"home={workdir / 'h'}", f"args=store|ls|{workdir}", "stdin=in put"]
    # stdin is /dev/null without input: no test can hang on it.
    r = run_nano(f, home=workdir, check=False, env={"RC": "3"})
    assert r.returncode == 3 and "stdin=\n" in r.stdout
    with pytest.raises(AssertionError, match="exit code: 3"):
        run_nano(f, home=workdir, env={"RC": "3"})
    r = run_nano(f, home=workdir, text=False)
    assert isinstance(r.stdout, bytes)


@pytest.mark.parametrize("report", [
    "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1",
    "base/util.c:12:3: runtime error: signed integer overflow",
    "==1==ERROR: LeakSanitizer: detected memory leaks",
])
def test_run_nano_catches_sanitizers(workdir, report):
    f = fake_nano(workdir, f"sys.stderr.write({report!r} + '\\n')\n")
    # Even with check=False and exit code 0.
    with pytest.raises(pytest.fail.Exception, match="sanitizer report"):
        run_nano(f, home=workdir, check=False)


def test_run_nano_timeout_kills_group(workdir):
    f = fake_nano(workdir, """
        import subprocess
        subprocess.Popen(["sleep", "300"])
        time.sleep(300)
        """)
    with pytest.raises(pytest.fail.Exception, match="timed out"):
        run_nano(f, home=workdir, timeout=1)


def test_cleanup_kills_leftover_processes(workdir):
    home = workdir / "h"
    home.mkdir()
    p = subprocess.Popen(["sleep", "300"], env={**os.environ, "NANO_HOME": str(home)})
    problems = cleanup_workdir(workdir)
    assert p.wait(timeout=10) != 0
    assert any(str(p.pid) in x for x in problems)
    assert cleanup_workdir(workdir) == []


def test_cleanup_finds_sanitizer_reports_in_logs(workdir):
    (workdir / "monitor.log").write_text("starting\n==7==ERROR: AddressSanitizer: SEGV on unknown address\n")
    problems = cleanup_workdir(workdir)
    assert len(problems) == 1 and "monitor.log" in problems[0]
    (workdir / "monitor.log").unlink()


def test_cleanup_unmounts_fuse(workdir):
    if not (shutil.which("squashfuse") and shutil.which("mksquashfs")):
        pytest.skip("squashfuse or mksquashfs missing (Debian packages squashfuse, squashfs-tools)")
    if probe_fuse():
        pytest.skip(probe_fuse())
    src, mnt = workdir / "src", workdir / "mnt"
    make_tree(src, {"f": b"data"})
    mnt.mkdir()
    subprocess.run(["mksquashfs", src, workdir / "img", "-quiet", "-no-progress"], check=True,
                   capture_output=True)
    subprocess.run(["squashfuse", workdir / "img", mnt], check=True, capture_output=True)
    assert mounts_under(workdir) == [str(mnt)]
    assert (mnt / "f").read_bytes() == b"data"
    cleanup_workdir(workdir)
    assert mounts_under(workdir) == []


def test_workdir_is_private_and_removable(workdir, nano_home):
    assert nano_home.is_dir() and not any(nano_home.iterdir())
    assert stat.S_IMODE(os.stat(workdir).st_mode) == 0o700
    # Read-only leftovers must not break removal at teardown.
    make_tree(workdir / "ro", {"d": ("mode", 0o555, {"f": ("mode", 0o444, b"x")})})
    os.chmod(workdir / "ro", 0o555)
