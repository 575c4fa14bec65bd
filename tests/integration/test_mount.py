# SPDX-License-Identifier: LGPL-2.1-or-later
"""`nano mount`: the read-only FUSE view of the store (doc/mount.md), driven as a user would.

This file: byte- and metadata-identical trees (a Python stdlib, an unpacked .deb, symlinks, odd
names and modes, a 200 MB mostly-zero file, depth 100, 10,000 entries), reads at any offset and
mmap, programs run from the mount (a dynamically linked program through its loader, Python with
its stdlib in the mount), what programs expect (stat, access, statvfs, xattrs, EROFS for every
write), and concurrent readers. The big trees are imported once per module into a shared store;
every test mounts it and unmounts it at its end.

test_mount_views.py: views, releases coming and going, shared inodes and page cache.
test_mount_lifecycle.py: corruption, kill -9, busy and lazy unmounts, status, user namespaces,
memory. Both import the helpers below.

Expected values come from the source trees (os.lstat, hashlib), never from nano's output.
"""

import ctypes
import errno
import glob
import hashlib
import json
import mmap
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import pytest

from nanotest import cleanup_workdir, gate, keep_tmp, make_tree, mounts_under, probe_fuse, \
    remove_workdir, run_nano

KiB = 1024
MiB = 1024 * KiB
CHUNK = 128 * KiB  # the store's default chunk size (doc/formats.md)


# ---- helpers (also used by test_mount_views.py and test_mount_lifecycle.py) ----

def add(nano_bin, home, src, name, version, *extra):
    """`nano store add --json`; returns the parsed JSON."""
    r = run_nano(nano_bin, "store", "add", src, "--name", name, "--version", version, "--json",
                 "--no-progress", *extra, home=home, timeout=300)
    j = r.json()
    assert j["release"] == f"{name}@{version}", r
    return j


def is_mounted(mp):
    mp = os.path.realpath(mp)
    return mp in mounts_under(mp)


def _unescape(s):
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mount_count(mp):
    """How many mounts sit exactly on mp (stacked mounts count each)."""
    mp = os.path.realpath(mp)
    n = 0
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == mp:
                n += 1
    return n


def mount_fstype_and_opts(mp):
    """(fstype, mount options, super options) of the topmost mount on mp."""
    mp = os.path.realpath(mp)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split()
            if _unescape(fields[4]) == mp:
                r = right.split()
                found = (r[0], fields[5], r[2] if len(r) > 2 else "")
    return found


def status(nano_bin, home, mp=None):
    args = ["mount", "--status", "--json"] + ([mp] if mp else [])
    return run_nano(nano_bin, *args, home=home).json()


def pid_alive(pid):
    """True while any thread of pid runs. A zombie (dead, not yet reaped by its parent) whose
    threads have all exited does not count; a zombie leader with threads still exiting does (they
    may still hold its files, /dev/fuse among them)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    return not (fields["State"].split()[0] in ("Z", "X") and int(fields["Threads"]) <= 1)


def wait_for(pred, timeout, what, interval=0.05):
    """Poll pred() until it is true; fail after timeout seconds. Returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: still not the case after {timeout} s", pytrace=False)
        time.sleep(interval)


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    return h.hexdigest()


def errno_of(fn, *args, **kwargs):
    """The errno fn(*args) fails with, or None if it succeeds."""
    try:
        r = fn(*args, **kwargs)
    except OSError as e:
        return e.errno
    if isinstance(r, int) and fn is os.open:
        os.close(r)
    return None


def compare_trees(src, dst):
    """Differences between the source tree src and its view dst in the mount, as strings.

    Checked, for src itself and every entry below it (symlinks never followed): the names a
    listing gives (exactly, no duplicates), the d_ino and d_type of readdir against lstat, type,
    permission bits, mtime with nanoseconds (atime and ctime equal to it), owner (the mounting
    user), st_blocks = ceil(size / 512), st_blksize 4096; regular files: size, st_nlink 1 and the
    sha256 of the content; symlinks: target and size; directories: st_nlink = 2 + subdirectories
    and st_size = number of entries (doc/mount.md)."""
    problems = []
    me = (os.getuid(), os.getgid())

    def bad(rel, msg):
        problems.append(f"{rel or '.'}: {msg}")

    def check(rel, sp, dp, s, d):
        if stat.S_IFMT(s.st_mode) != stat.S_IFMT(d.st_mode):
            bad(rel, f"type {stat.filemode(d.st_mode)} != source {stat.filemode(s.st_mode)}")
            return False
        if stat.S_IMODE(d.st_mode) != stat.S_IMODE(s.st_mode) & 0o777:
            bad(rel, f"mode {oct(stat.S_IMODE(d.st_mode))} != source {oct(stat.S_IMODE(s.st_mode))}")
        if d.st_mtime_ns != s.st_mtime_ns:
            bad(rel, f"mtime {d.st_mtime_ns} ns != source {s.st_mtime_ns} ns")
        if d.st_atime_ns != d.st_mtime_ns or d.st_ctime_ns != d.st_mtime_ns:
            bad(rel, f"atime {d.st_atime_ns} / ctime {d.st_ctime_ns} differ from mtime {d.st_mtime_ns}")
        if (d.st_uid, d.st_gid) != me:
            bad(rel, f"owner {d.st_uid}:{d.st_gid}, not the mounting user {me[0]}:{me[1]}")
        if d.st_blocks != -(-d.st_size // 512):
            bad(rel, f"st_blocks {d.st_blocks} for st_size {d.st_size}")
        if d.st_blksize != 4096:
            bad(rel, f"st_blksize {d.st_blksize}")
        if stat.S_ISREG(s.st_mode):
            if d.st_size != s.st_size:
                bad(rel, f"size {d.st_size} != source {s.st_size}")
            if d.st_nlink != 1:
                bad(rel, f"st_nlink {d.st_nlink}, expected 1")
            if d.st_size == s.st_size and sha256_file(dp) != sha256_file(sp):
                bad(rel, "content differs")
        elif stat.S_ISLNK(s.st_mode):
            t = os.readlink(sp)
            got = os.readlink(dp)
            if got != t:
                bad(rel, f"symlink target {got!r} != source {t!r}")
            if d.st_size != len(os.fsencode(t)):
                bad(rel, f"symlink size {d.st_size} != {len(os.fsencode(t))}")
        return True

    def walk(rel, sdir, ddir):
        snames = sorted(os.listdir(sdir))
        with os.scandir(ddir) as it:
            dents = list(it)
        dnames = [e.name for e in dents]
        if len(dnames) != len(set(dnames)):
            dups = sorted(n for n in set(dnames) if dnames.count(n) > 1)
            bad(rel, f"readdir gives duplicate names: {dups[:5]}")
        if sorted(dnames) != snames:
            missing = sorted(set(snames) - set(dnames))
            extra = sorted(set(dnames) - set(snames))
            bad(rel, f"readdir differs: missing {missing[:5]} ({len(missing)}), "
                     f"extra {extra[:5]} ({len(extra)})")
        wanted = set(snames)
        subdirs = 0
        for e in sorted(dents, key=lambda e: e.name):
            if e.name not in wanted:
                continue
            r = f"{rel}/{e.name}" if rel else e.name
            sp, dp = os.path.join(sdir, e.name), os.path.join(ddir, e.name)
            s, d = os.lstat(sp), os.lstat(dp)
            if e.inode() != d.st_ino:
                bad(r, f"readdir d_ino {e.inode()} != st_ino {d.st_ino}")
            if (e.is_dir(follow_symlinks=False), e.is_symlink()) != \
                    (stat.S_ISDIR(d.st_mode), stat.S_ISLNK(d.st_mode)):
                bad(r, "readdir d_type differs from lstat")
            if check(r, sp, dp, s, d) and stat.S_ISDIR(s.st_mode):
                subdirs += 1
                walk(r, sp, dp)
        dd = os.lstat(ddir)
        if dd.st_nlink != 2 + subdirs:
            bad(rel, f"directory st_nlink {dd.st_nlink}, expected 2 + {subdirs} subdirectories")
        if dd.st_size != len(snames):
            bad(rel, f"directory st_size {dd.st_size}, expected {len(snames)} (its entries)")

    src, dst = os.fspath(src), os.fspath(dst)
    if check("", src, dst, os.lstat(src), os.lstat(dst)):
        walk("", src, dst)
    return problems


def assert_same_tree(src, dst):
    problems = compare_trees(src, dst)
    assert not problems, f"{len(problems)} differences between {src} and {dst}:\n  " + \
        "\n  ".join(problems[:40])


def find_listing(top):
    """What find(1) sees below top (it skips stat calls where st_nlink says a directory has no
    subdirectories left, so a wrong st_nlink hides entries)."""
    r = subprocess.run(["find", ".", "-printf", "%y %M %T@ %l %p\\n", "-type", "f", "-printf", "%s %p\\n"],
                       cwd=top, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    return sorted(r.stdout.split(b"\n"))


def fincore_pages(path):
    """Pages of path resident in the page cache, from fincore(1) (mincore on a mapping)."""
    r = subprocess.run(["fincore", "--json", "--bytes", os.fspath(path)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return int(json.loads(r.stdout)["fincore"][0]["pages"])


def copy_tree(src, dst):
    """cp -a without owners: modes, symlinks, mtimes with nanoseconds (directories included)."""
    shutil.copytree(src, dst, symlinks=True)
    shutil.copystat(src, dst)


@pytest.fixture
def mounter(nano_bin, require_fuse):
    """mounter(home, mountpoint=None, *options, **run_nano kwargs) -> mountpoint (Path).

    Runs `nano mount`, checks the mount is there, and `nano umount`s everything still mounted at
    teardown (the workdir teardown is the safety net); a failing teardown unmount fails the test."""
    done = []

    def do(home, mp=None, *opts, **kw):
        r = run_nano(nano_bin, "mount", *([mp] if mp is not None else []), *opts, home=home, **kw)
        got = Path(r.stdout.strip().splitlines()[-1])
        done.append((home, got))
        assert is_mounted(got), f"`nano mount` returned but nothing is mounted on {got}\n{r}"
        return got

    yield do
    problems = []
    for home, mp in reversed(done):
        if not is_mounted(mp):
            continue
        r = run_nano(nano_bin, "umount", mp, home=home, check=False)
        if r.returncode != 0 or is_mounted(mp):
            problems.append(f"teardown: `nano umount` failed or left the mount\n{r}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---- the source trees ----

def special_tree(top):
    """Symlinks of every kind, empty files and directories, modes, odd names, hard links,
    duplicate content, and mtimes with nanoseconds (before 1970 and after 2038 too)."""
    make_tree(top, {
        "empty": b"",
        "empty-dir": {},
        "one": b"1",
        "exec.sh": ("mode", 0o755, b"#!/bin/sh\necho hi\n"),
        "private": ("mode", 0o600, b"secret\n"),
        "readonly": ("mode", 0o444, b"read only\n"),
        "odd-mode": ("mode", 0o751, b"odd\n"),
        "closed-dir": ("mode", 0o700, {"inside": b"inside a 0700 directory\n"}),
        "ro-dir": ("mode", 0o555, {"f": b"in a 0555 directory\n", "sub": {}}),
        "links": {
            "target.txt": b"the target\n",
            "relative": ("symlink", "target.txt"),
            "up": ("symlink", "../one"),
            "absolute": ("symlink", "/usr/bin/env"),
            "dangling": ("symlink", "does/not/exist"),
            "dangling-abs": ("symlink", "/nonexistent/nano/target"),
            "to-dir": ("symlink", "../ro-dir"),
            "self-loop": ("symlink", "self-loop"),
            "dot": ("symlink", "."),
            "long": ("symlink", "x/" * 1999 + "y"),  # 3999 bytes
            "utf8 target": ("symlink", "\u00fcn\u00ef c\u00f4d\u00e9/\u65e5\u672c"),
        },
        "names": {
            "with space": b"a\n",
            " leading space": b"b\n",
            "trailing space ": b"c\n",
            "tab\there": b"d\n",
            "new\nline": b"e\n",
            "\u00fcn\u00efc\u00f8d\u00e9.txt": "\u00e9\u00e8\u65e5\n",
            "\u65e5\u672c\u8a9e\u306e\u540d\u524d": b"f\n",
            "emoji \U0001f389": b"g\n",
            "back\\slash": b"h\n",
            "quote'\"": b"i\n",
            "-dash": b"j\n",
            ".hidden": b"k\n",
            "#hash%percent&amp;": b"l\n",
            "a" * 255: b"m\n",
            "\u00e9" * 127: b"n\n",
            "dir with space": {"nested \u00fc": b"o\n"},
        },
        "dups": {"a": b"same content\n", "b": b"same content\n"},
        "hard": b"hard-linked\n",
        "hard2": ("hardlink", "hard"),
    })
    # Names that are not UTF-8: bytes are bytes.
    (Path(os.fsdecode(os.path.join(os.fsencode(top), b"names", b"latin1-\xe9\xff")))).write_bytes(b"p\n")
    rng = random.Random(7)
    entries = []
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            entries.append(os.path.join(dirpath, n))
    entries.sort(key=lambda p: -p.count("/"))
    for i, p in enumerate(entries):
        ns = (1_600_000_000 + i * 1001) * 10**9 + rng.randrange(1, 10**9)
        os.utime(p, ns=(ns, ns), follow_symlinks=False)
    for name, ns in (("one", 1), ("empty", -300_000_000 * 10**9 + 5), ("odd-mode", 2**33 * 10**9 + 7)):
        os.utime(top / name, ns=(ns, ns))
    for name in ("a", "b"):  # identical files: same content, mode and mtime
        os.utime(top / "dups" / name, ns=(1_650_000_000_000_000_001,) * 2)
    os.utime(top, ns=(1_700_000_000_123_456_789,) * 2)
    return top


def deep_tree(top, depth=100):
    d = top
    d.mkdir()
    for i in range(depth):
        d = d / f"level-{i:03d}"
        d.mkdir()
        (d / "f").write_bytes(f"level {i}\n".encode())
    (d / "bottom.txt").write_bytes(b"at the bottom\n")
    os.symlink("../" * depth + "top.txt", d / "to-top")
    (top / "top.txt").write_bytes(b"top\n")
    return top


def wide_tree(top, n=10_000, subdirs=10):
    w = top / "wide"
    w.mkdir(parents=True)
    for i in range(n - subdirs):
        (w / f"f{i:05d}").write_bytes(b"" if i % 1000 == 0 else f"file {i}\n".encode())
    for i in range(subdirs):
        (w / f"d{i:02d}").mkdir()
        (w / f"d{i:02d}" / "x").write_bytes(b"x\n")
    return top


BIG_SIZE = 200 * MiB + 12345


def big_tree(top):
    """A 200 MB file that is mostly holes, with random blocks at the start, across a chunk
    boundary in the middle, and at the end."""
    top.mkdir()
    rng = random.Random(200)
    with open(top / "big.bin", "wb") as f:
        f.truncate(BIG_SIZE)
        for off in (0, 100 * MiB - 3, 150 * MiB + 77, BIG_SIZE - MiB - 5):
            f.seek(off)
            f.write(rng.randbytes(MiB))
    (top / "small.txt").write_bytes(b"next to a big one\n")
    return top


def reads_tree(top):
    rng = random.Random(256)
    text = b"".join(b"line %d: the quick brown fox jumps over the lazy dog %x\n" % (i, i * 7919)
                    for i in range(60_000))
    make_tree(top, {
        "rand.bin": rng.randbytes(8 * MiB + 12345),
        "text.txt": text,
        "s0": b"",
        "s1": b"\x01",
        "c-1": rng.randbytes(CHUNK - 1),
        "c": rng.randbytes(CHUNK),
        "c+1": rng.randbytes(CHUNK + 1),
        "3c": rng.randbytes(3 * CHUNK),
    })
    return top


def prog_tree(top):
    """bin/ls and bin/cat with the libraries ldd lists, under lib/, and their loader at its own
    path; a shell script; a non-executable copy of cat. None if ldd is missing or says nothing."""
    if not shutil.which("ldd"):
        return None
    progs = [shutil.which("ls"), shutil.which("cat")]
    libs, loader = {}, None
    for p in progs:
        r = subprocess.run(["ldd", p], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return None
        for line in r.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                libs[parts[0]] = parts[2]
            elif parts and parts[0].startswith("/"):
                loader = parts[0]
    if loader is None:
        return None
    (top / "bin").mkdir(parents=True)
    (top / "lib").mkdir()
    for p in progs:
        shutil.copy2(os.path.realpath(p), top / "bin" / os.path.basename(p))
    for soname, path in libs.items():
        shutil.copy2(os.path.realpath(path), top / "lib" / soname)
    ld = top / loader.lstrip("/")
    ld.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(loader), ld)
    (top / "bin" / "hello.sh").write_bytes(b"#!/bin/sh\necho \"hello from $0\"\n")
    os.chmod(top / "bin" / "hello.sh", 0o755)
    shutil.copy2(top / "bin" / "cat", top / "bin" / "cat-noexec")
    os.chmod(top / "bin" / "cat-noexec", 0o644)
    return top, loader


def deb_tree(top):
    """An unpacked Debian package: one from the apt cache, else one built here with dpkg-deb."""
    if not shutil.which("dpkg-deb"):
        return None
    debs = sorted(d for d in glob.glob("/var/cache/apt/archives/*.deb")
                  if 100 * 1000 <= os.path.getsize(d) <= 3 * 1000 * 1000)
    pick = next((d for pref in ("libssl-dev_", "perl-modules-", "python3-")
                 for d in debs if os.path.basename(d).startswith(pref)), debs[0] if debs else None)
    if pick is None:
        pkg = top.parent / "pkg"
        (pkg / "DEBIAN").mkdir(parents=True)
        (pkg / "DEBIAN" / "control").write_text(
            "Package: nano-mount-test\nVersion: 1.0\nArchitecture: all\n"
            "Maintainer: nano tests <nano@example.invalid>\nDescription: test package\n")
        shutil.copytree(sysconfig.get_path("stdlib") + "/json", pkg / "usr/lib/nano-test/json")
        os.symlink("json/__init__.py", pkg / "usr/lib/nano-test/init.py")
        pick = top.parent / "built.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", pkg, pick], check=True,
                       capture_output=True, timeout=120)
    top.mkdir()
    subprocess.run(["dpkg-deb", "-x", pick, top], check=True, capture_output=True, timeout=120)
    return top, pick


class Shared:
    """The module's store: sources under src/, NANO_HOME home/, each tree released as <key>@1."""

    def __init__(self, root, nano_bin):
        self.root, self.nano_bin = root, nano_bin
        self.home = root / "home"
        self.src = root / "src"
        self.trees = {}  # key -> source root
        self.info = {}
        self.ids = {}

    def add(self, key, src):
        self.trees[key] = src
        self.ids[key] = add(self.nano_bin, self.home, src, key, "1")["id"]


@pytest.fixture(scope="module")
def shared(nano_bin):
    gate(probe_fuse())
    root = Path(tempfile.mkdtemp(prefix="nano-test_mount-"))
    s = Shared(root, nano_bin)
    s.home.mkdir()
    s.src.mkdir()
    try:
        t0 = time.monotonic()
        stdlib = sysconfig.get_path("stdlib")
        pyver = os.path.basename(stdlib)  # python3.X
        s.info["pyver"] = pyver
        (s.src / "py" / "lib").mkdir(parents=True)
        copy_tree(stdlib, s.src / "py" / "lib" / pyver)
        s.add("py", s.src / "py")
        r = deb_tree(s.src / "deb")
        if r:
            s.info["deb"] = r[1]
            s.add("deb", r[0])
        s.add("special", special_tree(s.src / "special"))
        s.add("deep", deep_tree(s.src / "deep"))
        s.add("wide", wide_tree(s.src / "wide"))
        s.add("big", big_tree(s.src / "big"))
        s.add("reads", reads_tree(s.src / "reads"))
        r = prog_tree(s.src / "prog")
        if r:
            s.info["loader"] = r[1]
            s.add("prog", r[0])
        print(f"\nshared store built in {time.monotonic() - t0:.1f} s")
        yield s
    finally:
        problems = cleanup_workdir(root)
        log = s.home / "mount.log"
        if log.exists():
            bad = [line for line in log.read_text(errors="replace").splitlines()
                   if re.search(r"corrupt|missing|error|fail|warning", line, re.I)]
            if bad:
                problems.append("unexpected lines in mount.log:\n" + "\n".join(bad[:20]))
        if keep_tmp():
            print(f"\nNANO_TEST_KEEP: kept {root}")
        else:
            remove_workdir(root)
        assert not problems, "\n".join(problems)


# ---- 1. identical trees ----

@pytest.mark.parametrize("key", ["py", "deb", "special", "deep", "wide", "big", "reads", "prog"])
def test_identical_tree(shared, mounter, require_fuse, key):
    if key not in shared.trees:
        pytest.skip(f"no {key} tree on this machine (dpkg-deb or ldd missing)")
    mp = mounter(shared.home)
    assert_same_tree(shared.trees[key], mp / key / "1")
    if key == "deb":
        print(f"\ndeb: {shared.info['deb']}")


@pytest.mark.parametrize("key", ["py", "special", "deep"])
def test_find_sees_the_same_tree(shared, mounter, require_fuse, key):
    """find(1) trusts st_nlink of directories to skip stat calls: it must list the same entries,
    types, modes, mtimes, sizes and link targets on both sides."""
    mp = mounter(shared.home)
    src = find_listing(shared.trees[key])
    got = find_listing(mp / key / "1")
    assert len(src) > 10
    assert got == src, "find output differs:\n" + "\n".join(
        repr(x) for x in sorted(set(src) ^ set(got))[:20])


def test_special_entries(shared, mounter, require_fuse):
    """Symlinks resolve as they would on disk, odd names open, deep paths and the wide directory
    work by full path, the big file reads back block by block."""
    mp = mounter(shared.home)
    sp = mp / "special" / "1"
    links = sp / "links"
    assert (links / "relative").read_bytes() == b"the target\n"
    assert (links / "up").read_bytes() == b"1"
    assert os.path.samefile(links / "absolute", "/usr/bin/env")  # leaves the mount, as on disk
    assert errno_of(os.stat, links / "dangling") == errno.ENOENT
    assert errno_of(os.stat, links / "dangling-abs") == errno.ENOENT
    assert errno_of(os.stat, links / "self-loop") == errno.ELOOP
    assert sorted(os.listdir(links / "to-dir")) == ["f", "sub"]
    assert os.path.samefile(links / "dot", links)
    assert len(os.readlink(links / "long")) == 3999
    # readlink into a small buffer truncates, as on any filesystem
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(10)
    assert libc.readlink(os.fsencode(links / "relative"), buf, 4) == 4 and buf.raw[:4] == b"targ"
    # hard links are two entries with one content; duplicate content as well
    assert (sp / "hard2").read_bytes() == b"hard-linked\n"
    assert os.lstat(sp / "hard").st_ino == os.lstat(sp / "hard2").st_ino
    assert os.lstat(sp / "dups" / "a").st_ino == os.lstat(sp / "dups" / "b").st_ino
    for name in os.listdir(shared.trees["special"] / "names"):
        p = sp / "names" / name
        assert os.path.lexists(p), repr(name)
    assert (sp / "names" / ("a" * 255)).read_bytes() == b"m\n"
    assert errno_of(os.lstat, sp / "names" / ("a" * 256)) in (errno.ENAMETOOLONG, errno.ENOENT)
    latin1 = os.fsdecode(os.path.join(os.fsencode(sp), b"names", b"latin1-\xe9\xff"))
    assert Path(latin1).read_bytes() == b"p\n"
    for name, ns in (("one", 1), ("empty", -300_000_000 * 10**9 + 5), ("odd-mode", 2**33 * 10**9 + 7)):
        assert os.lstat(sp / name).st_mtime_ns == ns, name
    # depth 100 by a 1,100-character path, and a symlink climbing all the way up
    deep = mp / "deep" / "1" / "/".join(f"level-{i:03d}" for i in range(100))
    assert len(os.fspath(deep)) > 1000
    assert (deep / "bottom.txt").read_bytes() == b"at the bottom\n"
    assert (deep / "to-top").read_bytes() == b"top\n"
    # 10,000 entries
    wide = mp / "wide" / "1" / "wide"
    names = os.listdir(wide)
    assert len(names) == 10_000 and len(set(names)) == 10_000
    assert (wide / "f09989").read_bytes() == b"file 9989\n"
    assert os.lstat(wide).st_nlink == 12
    # 200 MB, mostly zeros, in 1 MiB blocks
    big = mp / "big" / "1" / "big.bin"
    assert os.lstat(big).st_size == BIG_SIZE
    with open(shared.trees["big"] / "big.bin", "rb") as a, open(big, "rb") as b:
        off = 0
        while True:
            x, y = a.read(MiB), b.read(MiB)
            assert x == y, f"big.bin differs in the MiB at {off}"
            if not x:
                break
            off += len(x)
    assert off == BIG_SIZE


# ---- 2. reads at any offset, mmap ----

def test_pread_any_offset(shared, mounter, require_fuse):
    mp = mounter(shared.home)
    rng = random.Random(2)
    lengths = (0, 1, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, MiB + 7)
    checked = 0
    for name in ("rand.bin", "text.txt", "s0", "s1", "c-1", "c", "c+1", "3c"):
        src = shared.trees["reads"] / name
        data = src.read_bytes()
        size = len(data)
        offsets = {0, 1, size - 1, size, size + 1, size + CHUNK, 10**12}
        for k in range(1, size // CHUNK + 2):
            offsets |= {k * CHUNK - 1, k * CHUNK, k * CHUNK + 1}
        offsets = sorted(o for o in offsets if o >= 0)
        fd = os.open(mp / "reads" / "1" / name, os.O_RDONLY)
        try:
            for i, off in enumerate(offsets):
                for n in lengths:
                    got = os.pread(fd, n, off)
                    assert got == data[off:off + n], f"{name}: pread({n}, {off})"
                    checked += 1
                if i % 4 == 0:  # forget the pages now and then: the daemon answers again
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for _ in range(300 if size > MiB else 30):
                off = rng.randrange(0, size + 2)
                n = rng.randrange(0, 2 * CHUNK)
                if rng.random() < 0.3:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                assert os.pread(fd, n, off) == data[off:off + n], f"{name}: pread({n}, {off})"
                checked += 1
            # sequential reads of odd sizes give the file, then EOF
            os.lseek(fd, 0, os.SEEK_SET)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            parts = []
            while True:
                b = os.read(fd, 100_003)
                if not b:
                    break
                parts.append(b)
            assert b"".join(parts) == data, name
            assert os.read(fd, 10) == b""
        finally:
            os.close(fd)
    print(f"\n{checked} preads checked")


def test_mmap(shared, mounter, require_fuse):
    mp = mounter(shared.home)
    for name in ("rand.bin", "c+1", "text.txt"):
        data = (shared.trees["reads"] / name).read_bytes()
        with open(mp / "reads" / "1" / name, "rb") as f:
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                assert len(m) == len(data)
                assert hashlib.sha256(m).digest() == hashlib.sha256(data).digest(), name
                rng = random.Random(name)
                for _ in range(200):
                    off = rng.randrange(len(data))
                    n = rng.randrange(1, 3 * CHUNK)
                    assert m[off:off + n] == data[off:off + n], f"{name}: mmap[{off}:{off + n}]"
                assert m[len(data) - 1] == data[-1]
            if len(data) > 3 * CHUNK:
                # a mapping at an offset, private, touched backwards
                with mmap.mmap(f.fileno(), 2 * CHUNK, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ,
                               offset=3 * CHUNK) as m:
                    for off in range(2 * CHUNK - 4096, -1, -4096 * 7):
                        assert m[off:off + 4096] == data[3 * CHUNK + off:3 * CHUNK + off + 4096]


# ---- 3. programs run from the mount ----

def test_dynamic_program_from_mount(shared, mounter, require_fuse, tmp_path):
    if "prog" not in shared.trees:
        pytest.skip("ldd is missing or lists nothing: no program tree")
    mp = mounter(shared.home)
    rel = mp / "prog" / "1"
    ld = rel / shared.info["loader"].lstrip("/")
    lib = rel / "lib"
    # ls run by the loader in the mount, with the libraries of the mount
    r = subprocess.run([ld, "--library-path", lib, rel / "bin" / "ls", "-la", rel / "bin"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.endswith(" ls") and line.startswith("-rwxr-xr-x") for line in lines), r.stdout
    assert any(line.endswith(" hello.sh") for line in lines), r.stdout
    # what is mapped really comes from the mount
    r = subprocess.run([ld, "--library-path", lib, rel / "bin" / "cat", "/proc/self/maps"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    mapped = {line.split()[-1] for line in r.stdout.splitlines() if len(line.split()) >= 6}
    libc = next(p for p in os.listdir(lib) if p.startswith("libc.so"))
    for want in (rel / "bin" / "cat", lib / libc, ld):
        assert os.fspath(want) in mapped, f"{want} not mapped:\n{r.stdout}"
    # exec straight from the mount (the host's loader, the mount's libraries)
    r = subprocess.run([rel / "bin" / "ls", "-1", rel / "lib"], capture_output=True, text=True,
                       env={"LD_LIBRARY_PATH": os.fspath(lib), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0 and sorted(r.stdout.split()) == sorted(os.listdir(lib)), r
    r = subprocess.run([rel / "bin" / "hello.sh"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == f"hello from {rel / 'bin' / 'hello.sh'}\n", r
    with pytest.raises(PermissionError):
        subprocess.run([rel / "bin" / "cat-noexec"], capture_output=True, timeout=60)


PY_SCRIPT = r"""
import json, sys, decimal, _decimal, ctypes, email.parser, xml.etree.ElementTree as ET
mods = {m.__name__: m.__file__ for m in (json, decimal, _decimal, ctypes, email.parser, ET)}
doc = ET.fromstring("<a><b>1.1</b><b>2.2</b></a>")
total = sum(decimal.Decimal(b.text) for b in doc)
print(json.dumps({"total": str(total), "prefix": sys.prefix, "files": mods,
                  "modules": sorted(k for k in sys.modules if k.startswith("json"))}))
"""


def test_python_from_mount(shared, mounter, require_fuse, tmp_path):
    """The host's interpreter with its whole stdlib, extension modules included, from the mount."""
    mp = mounter(shared.home)
    home = mp / "py" / "1"
    env = {"PYTHONHOME": os.fspath(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    r = subprocess.run([sys.executable, "-S", "-c", PY_SCRIPT], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["total"] == "3.3"
    assert out["prefix"] == os.fspath(home)
    stdlib = os.fspath(home / "lib" / shared.info["pyver"])
    for mod, f in out["files"].items():
        assert f.startswith(stdlib + "/"), f"{mod} loaded from {f}, not from the mount"
    assert "json.decoder" in out["modules"]
    # PYTHONPATH into the mount works as well (the interpreter's own stdlib otherwise)
    r = subprocess.run([sys.executable, "-S", "-c", "import json; print(json.__file__)"],
                       env={"PYTHONPATH": stdlib, "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == stdlib + "/json/__init__.py", r


# ---- 4. what programs expect: stat, access, statvfs, xattrs, EROFS ----

def test_read_only_everywhere(shared, mounter, require_fuse):
    mp = mounter(shared.home)
    sp = mp / "special" / "1"
    before = compare_trees(shared.trees["special"], sp)
    assert not before
    libc = ctypes.CDLL(None, use_errno=True)

    def access_errno(p, mode):
        ctypes.set_errno(0)
        rc = libc.access(os.fsencode(p), mode)
        return 0 if rc == 0 else ctypes.get_errno()

    # access: read and execute where the bits say, never write
    assert os.access(sp / "one", os.R_OK) and not os.access(sp / "one", os.X_OK)
    assert os.access(sp / "exec.sh", os.R_OK | os.X_OK)
    assert os.access(sp / "private", os.R_OK) and os.access(sp / "readonly", os.R_OK)
    assert os.access(sp / "closed-dir", os.R_OK | os.X_OK)
    assert os.access(mp, os.R_OK | os.X_OK) and os.access(mp / "special", os.R_OK | os.X_OK)
    for p in (sp / "one", sp / "readonly", sp / "exec.sh", sp / "empty-dir", sp, mp / "special", mp,
              mp / "by-id"):
        assert access_errno(p, os.W_OK) == errno.EROFS, p
        assert not os.access(p, os.W_OK), p
    # stat, lstat, readlink, statvfs
    assert stat.S_ISLNK(os.lstat(sp / "links" / "relative").st_mode)
    assert stat.S_ISREG(os.stat(sp / "links" / "relative").st_mode)
    assert os.readlink(sp / "links" / "absolute") == "/usr/bin/env"
    assert errno_of(os.readlink, sp / "one") == errno.EINVAL
    for p in (mp, sp, sp / "one"):
        v = os.statvfs(p)
        assert v.f_flag & os.ST_RDONLY, p
        assert v.f_bsize == 4096 and v.f_frsize == 4096, v
        assert v.f_namemax == 255 and v.f_blocks > 0 and 0 <= v.f_bfree <= v.f_blocks, v
        assert v.f_files >= 1, v
    fstype = mount_fstype_and_opts(mp)
    assert fstype and fstype[0] == "fuse.nano" and "ro" in fstype[1].split(","), fstype
    # xattrs: none
    for p in (sp / "one", sp, mp):
        assert errno_of(os.getxattr, p, "user.nano") in (errno.ENODATA, errno.ENOTSUP), p
        assert os.listxattr(p) == [], p
    assert errno_of(os.getxattr, sp / "links" / "relative", "user.x", follow_symlinks=False) in \
        (errno.ENODATA, errno.ENOTSUP)
    # every write fails with EROFS: in a release, in a name directory, at the root, in by-id
    f, d = sp / "one", sp / "empty-dir"
    W = os.O_WRONLY
    attempts = {
        "open O_WRONLY": (os.open, f, W),
        "open O_RDWR": (os.open, f, os.O_RDWR),
        "open O_APPEND": (os.open, f, W | os.O_APPEND),
        "open O_TRUNC": (os.open, f, os.O_RDONLY | os.O_TRUNC),
        "create": (os.open, sp / "new", W | os.O_CREAT, 0o644),
        "create excl": (os.open, d / "new", W | os.O_CREAT | os.O_EXCL, 0o644),
        "create at root": (os.open, mp / "new", W | os.O_CREAT, 0o644),
        "create in name dir": (os.open, mp / "special" / "2", W | os.O_CREAT, 0o644),
        "create in by-id": (os.open, mp / "by-id" / "x", W | os.O_CREAT, 0o644),
        "mkdir": (os.mkdir, sp / "newdir"),
        "mkdir at root": (os.mkdir, mp / "newname"),
        "mkdir in name dir": (os.mkdir, mp / "special" / "9"),
        "rmdir": (os.rmdir, d),
        "rmdir release": (os.rmdir, sp),
        "unlink": (os.unlink, f),
        "unlink symlink": (os.unlink, sp / "links" / "relative"),
        "rename": (os.rename, f, sp / "renamed"),
        "rename over": (os.rename, f, sp / "empty"),
        "rename dir": (os.rename, d, sp / "renamed-dir"),
        "rename release": (os.rename, sp, mp / "special" / "renamed"),
        "chmod": (os.chmod, f, 0o600),
        "chmod dir": (os.chmod, sp, 0o700),
        "chown": (os.chown, f, os.getuid(), os.getgid()),
        "utime": (os.utime, f, (1, 1)),
        "utime now": (os.utime, f, None),
        "symlink": (os.symlink, "one", sp / "newlink"),
        "link": (os.link, f, sp / "newhard"),
        "truncate": (os.truncate, f, 0),
        "truncate larger": (os.truncate, f, 100),
        "mkfifo": (os.mkfifo, sp / "fifo"),
        "setxattr": (os.setxattr, f, "user.x", b"1"),
        "removexattr": (os.removexattr, f, "user.x"),
    }
    wrong = {}
    for what, (fn, *args) in attempts.items():
        e = errno_of(fn, *args)
        if e != errno.EROFS:
            wrong[what] = errno.errorcode.get(e, e)
    assert not wrong, f"expected EROFS, got: {wrong}"
    # through a file descriptor too
    fd = os.open(f, os.O_RDONLY)
    try:
        assert errno_of(os.fchmod, fd, 0o600) == errno.EROFS
        assert errno_of(os.utime, fd, (1, 1)) == errno.EROFS
        assert errno_of(os.write, fd, b"x") == errno.EBADF
        assert errno_of(os.posix_fallocate, fd, 0, 10) in (errno.EBADF, errno.EROFS)
    finally:
        os.close(fd)
    assert compare_trees(shared.trees["special"], sp) == []


# ---- 7. concurrency ----

HAMMER_SRC = r'''
import os, random
def hammer(files, seed, n, chunk):
    """n random preads over files [(source, mounted, size)], files[0] the hot one shared by
    everybody; reopens and forgets cached pages now and then. Returns (reads, mismatches)."""
    rng = random.Random(seed)
    bad, fds, srcs = [], {}, {}
    try:
        for _ in range(n):
            src, mnt, size = files[0] if rng.random() < 0.4 else files[rng.randrange(len(files))]
            if mnt not in fds or rng.random() < 0.15:
                if mnt in fds:
                    os.close(fds.pop(mnt))
                fds[mnt] = os.open(mnt, os.O_RDONLY)
            if src not in srcs:
                srcs[src] = os.open(src, os.O_RDONLY)
            fd = fds[mnt]
            if rng.random() < 0.25:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if rng.random() < 0.3:
                off = max(0, rng.randrange(0, size // chunk + 1) * chunk + rng.choice((-1, 0, 1)))
            else:
                off = rng.randrange(0, size + 100)
            length = rng.choice((1, 4096, chunk, chunk + 1, rng.randrange(1, 3 * chunk)))
            got = os.pread(fd, length, off)
            want = os.pread(srcs[src], length, off)
            if got != want:
                bad.append([mnt, off, length, len(got), len(want)])
    finally:
        for fd in list(fds.values()) + list(srcs.values()):
            os.close(fd)
    return n, bad
'''

HAMMER_MAIN = HAMMER_SRC + r'''
import json, sys
a = json.load(sys.stdin)
print(json.dumps(hammer(a["files"], a["seed"], a["n"], a["chunk"])))
'''


def test_concurrent_readers(shared, mounter, require_fuse):
    mp = mounter(shared.home, None, "--threads", "16")
    files = []

    def pair(key, rel):
        s = shared.trees[key] / rel
        files.append((os.fspath(s), os.fspath(mp / key / "1" / rel), os.lstat(s).st_size))

    pair("reads", "rand.bin")  # the hot file
    for rel in ("text.txt", "3c", "c+1", "c-1"):
        pair("reads", rel)
    pair("big", "big.bin")
    pyfiles = []
    top = shared.trees["py"]
    for dirpath, _, names in os.walk(top):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                pyfiles.append((p.stat().st_size, os.fspath(p.relative_to(top))))
    for _, rel in sorted(pyfiles, reverse=True)[:40]:
        pair("py", rel)

    ns = {}
    exec(HAMMER_SRC, ns)
    hammer = ns["hammer"]
    procs = []
    for i in range(4):
        p = subprocess.Popen([sys.executable, "-c", HAMMER_MAIN], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdin.write(json.dumps({"files": files, "seed": 1000 + i, "n": 300, "chunk": CHUNK}))
        p.stdin.close()
        procs.append(p)
    results, errors = [], []

    def run(seed):
        try:
            results.append(hammer(files, seed, 200, CHUNK))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for p in procs:
        out, err = p.stdout.read(), p.stderr.read()
        p.wait(120)
        if p.returncode != 0:
            errors.append(f"reader process failed: {err}")
        else:
            results.append(tuple(json.loads(out)))
    took = time.monotonic() - t0
    assert not errors, errors
    assert len(results) == 20
    reads = sum(n for n, _ in results)
    bad = [b for _, bs in results for b in bs]
    print(f"\n{reads} concurrent reads (16 threads, 4 processes) in {took:.1f} s")
    assert not bad, f"{len(bad)} reads gave wrong bytes, e.g. {bad[:5]}"
