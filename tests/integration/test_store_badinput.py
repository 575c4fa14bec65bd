# SPDX-License-Identifier: LGPL-2.1-or-later
"""`nano store` against hostile or broken input, and against a broken store.

Every refused import must: exit nonzero with a message naming the file or member and the cause,
leave tmp/ empty, change nothing already stored (refs, manifests and objects keep their exact
bytes; anything new is garbage that gc removes), and leave `fsck` clean."""

import hashlib
import io
import json
import os
import random
import socket
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from nanotest import fsck_problems as problems, make_tree, sanitizer_report, tree_digest

KiB = 1024
MiB = 1024 * 1024


# ---- helpers ----

def sha256(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def fanout(root, digest):
    h = digest.split(":", 1)[-1]
    return Path(root) / h[:2] / h[2:]


def snapshot(home, parts=("objects", "manifests", "refs")):
    """{path relative to store/: (size, sha256)} of every regular file under parts."""
    top = Path(home) / "store"
    out = {}
    for part in parts:
        for dirpath, _, names in os.walk(top / part):
            for n in names:
                p = Path(dirpath) / n
                out[str(p.relative_to(top))] = (p.lstat().st_size, sha256_file(p))
    return out


def tmp_entries(home):
    t = Path(home) / "store" / "tmp"
    return sorted(os.listdir(t)) if t.is_dir() else []


def add(nano, src, name, version, **kw):
    r = nano("store", "add", src, "--name", name, "--version", version, "--json", **kw)
    return r.json()


def flip_byte(path, offset):
    os.chmod(path, 0o644)
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    os.chmod(path, 0o444)


def tar_with(path, members, fmt=tarfile.PAX_FORMAT):
    """members: list of (name, kind, arg, mode). kind: file (arg = bytes), dir, symlink / hardlink
    (arg = target), chr / blk (arg = (major, minor)), fifo."""
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
             "fifo": tarfile.FIFOTYPE}
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, kind, arg, mode in members:
            ti = tarfile.TarInfo(name)
            ti.type = types[kind]
            ti.mtime = 1_650_000_000
            ti.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
            data = None
            if kind == "file":
                ti.size = len(arg)
                data = io.BytesIO(arg)
            elif kind in ("symlink", "hardlink"):
                ti.linkname = arg
            elif kind in ("chr", "blk"):
                ti.devmajor, ti.devminor = arg
            tf.addfile(ti, data)
    return path


BASE_SPEC = {
    "keep.txt": b"already stored: must never change\n",
    "x": b"x",  # the same content as the hostile tars' first member: dedup must not hurt it
    "data": {"blob.bin": bytes(random.Random(1).randbytes(300 * KiB))},
    "link": ("symlink", "keep.txt"),
}


class Seeded:
    """A store holding base@1, and the checks that nothing of it changed."""

    def __init__(self, nano, home, workdir):
        self.nano, self.home, self.workdir = nano, home, workdir
        self.src = make_tree(workdir / "base", BASE_SPEC)
        self.id = add(nano, self.src, "base", "1")["id"]
        self.before = snapshot(home)

    def check_intact(self):
        """Call after a refused operation."""
        assert tmp_entries(self.home) == [], f"tmp/ not empty after a failed import: {tmp_entries(self.home)}"
        after = snapshot(self.home)
        for part in ("refs/", "manifests/"):
            b = {k: v for k, v in self.before.items() if k.startswith(part)}
            a = {k: v for k, v in after.items() if k.startswith(part)}
            assert a == b, f"{part} changed: before {b}, after {a}"
        for k, v in self.before.items():
            assert after.get(k) == v, f"{k} changed or vanished: {v} -> {after.get(k)}"
        f = self.nano("store", "fsck", "--json", check=False)
        assert f.returncode == 0 and f.json()["problems"] == 0, f"fsck after a refused operation\n{f}"
        # What a refused import left (objects of the members before the bad one) is garbage.
        g = self.nano("store", "gc", "--json").json()
        assert g["manifests"] == 0 and g["temporaries"] == 0, g
        assert snapshot(self.home) == self.before, "gc did not bring the store back to what it was"
        assert self.nano("store", "cat", "base@1", "keep.txt", text=False).stdout == BASE_SPEC["keep.txt"]
        co = self.workdir / f"check-{random.randrange(1 << 30)}"
        self.nano("store", "checkout", "base@1", co)
        assert tree_digest(co) == tree_digest(self.src)


@pytest.fixture
def seeded(nano, nano_home, workdir):
    return Seeded(nano, nano_home, workdir)


def refused(r, code, *words):
    assert r.returncode == code, f"want exit {code}\n{r}"
    assert r.stdout == "", f"nothing on stdout when refusing\n{r}"
    msg = r.stderr
    for w in words:
        assert w in msg, f"the error does not mention {w!r}\n{r}"


# ---- archives that try to leave the tree ----

ESCAPES = {
    "dotdot": ([("ok", "file", b"x", None), ("../evil", "file", b"evil", None)], ["../evil", ".."]),
    "dotdot-inside": ([("ok", "file", b"x", None), ("a/../../evil", "file", b"evil", None)], ["a/../../evil"]),
    "dotdot-dir": ([("ok", "file", b"x", None), ("../up", "dir", None, None)], ["../up"]),
    "absolute": ([("ok", "file", b"x", None), ("@ABS@/abs-evil", "file", b"evil", None)], ["@ABS@/abs-evil", "absolute"]),
    "hardlink-absolute": ([("ok", "file", b"x", None), ("h", "hardlink", "/etc/passwd", None)], ["/etc/passwd"]),
    "hardlink-dotdot": ([("ok", "file", b"x", None), ("h", "hardlink", "../outside", None)], ["../outside"]),
    "through-symlink": ([("ok", "file", b"x", None), ("link", "symlink", "@ABS@/outside-dir", None),
                         ("link/evil", "file", b"evil", None)], ["link/evil"]),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_tar_escaping_members(seeded, nano, workdir, case):
    (workdir / "outside-dir").mkdir()
    members = [(n.replace("@ABS@", str(workdir)), k, a.replace("@ABS@", str(workdir)) if isinstance(a, str) else a, m)
               for n, k, a, m in ESCAPES[case][0]]
    tb = tar_with(workdir / f"{case}.tar", members)
    r = nano("store", "add", tb, "--name", "evil", "--version", "1", check=False)
    refused(r, 1, f"{case}.tar", *[w.replace("@ABS@", str(workdir)) for w in ESCAPES[case][1]])
    assert not (workdir / "abs-evil").exists() and not (workdir / "outside-dir" / "evil").exists()
    assert not (workdir.parent / "evil").exists()
    seeded.check_intact()


@pytest.mark.parametrize("kind,word", [("chr", "device"), ("blk", "device"), ("fifo", "fifo")])
def test_tar_special_files_refused(seeded, nano, workdir, kind, word):
    tb = tar_with(workdir / "special.tar", [("ok", "file", b"x", None), ("dev/thing", kind, (1, 3), None)])
    r = nano("store", "add", tb, "--name", "special", "--version", "1", check=False)
    refused(r, 1, "special.tar", "dev/thing", word)
    seeded.check_intact()


def test_tar_dangling_hard_link(seeded, nano, workdir):
    tb = tar_with(workdir / "dangling.tar", [("a", "file", b"x", None), ("b", "hardlink", "nothere", None)])
    r = nano("store", "add", tb, "--name", "d", "--version", "1", check=False)
    refused(r, 1, "dangling.tar", "nothere")
    seeded.check_intact()


def outside_targets(workdir):
    """Files a symlink may point to that nano must never read: ours (known content), and the
    system's (root-only /etc/shadow, world-readable /etc/passwd)."""
    secret = workdir / "outside-secret"
    secret.write_bytes(b"content outside the tree: must not be stored " + os.urandom(16))
    secret.chmod(0o600)
    targets = {"shadow": "/etc/shadow", "passwd": "/etc/passwd", "secret": str(secret),
               "up": "../../../../../../../../etc/shadow", "dot": "./../outside-secret"}
    forbidden = {sha256(secret.read_bytes())}
    for p in ("/etc/shadow", "/etc/passwd"):
        try:
            forbidden.add(sha256(Path(p).read_bytes()))
        except OSError:
            pass
    return targets, forbidden


def check_symlinks_verbatim(nano, home, workdir, release, targets, forbidden, regular):
    show = {e["path"]: e for e in nano("store", "show", release, "--json").json()["entries"]}
    for name, target in targets.items():
        assert show[name]["type"] == "symlink" and show[name]["target"] == target, show[name]
        r = nano("store", "cat", release, name, check=False)
        assert r.returncode == 1 and r.stdout == "" and "symlink" in r.stderr, r
    objects = {k.split("/")[1] + k.split("/")[2] for k in snapshot(home, ("objects",))}
    assert not objects & forbidden, "nano stored the content of a file outside the tree"
    assert {e["blob"].split(":")[1] for e in show.values() if e["type"] == "file"} == {sha256(d) for d in regular}
    co = workdir / f"co-{release.replace('@', '-')}"
    nano("store", "checkout", release, co)
    for name, target in targets.items():
        assert os.readlink(co / name) == target


def test_tar_symlinks_outside_stored_verbatim(seeded, nano, nano_home, workdir):
    targets, forbidden = outside_targets(workdir)
    tb = tar_with(workdir / "links.tar", [("f", "file", b"regular\n", None)] +
                  [(n, "symlink", t, None) for n, t in targets.items()])
    j = add(nano, tb, "links", "1")
    assert j["symlinks"] == len(targets) and j["files"] == 1, j
    check_symlinks_verbatim(nano, nano_home, workdir, "links@1", targets, forbidden, [b"regular\n"])
    assert nano("store", "fsck").returncode == 0


def test_dir_symlinks_outside_stored_verbatim(seeded, nano, nano_home, workdir):
    targets, forbidden = outside_targets(workdir)
    src = make_tree(workdir / "src", {"f": b"regular\n"} | {n: ("symlink", t) for n, t in targets.items()})
    j = add(nano, src, "links", "1")
    assert j["symlinks"] == len(targets) and j["files"] == 1, j
    check_symlinks_verbatim(nano, nano_home, workdir, "links@1", targets, forbidden, [b"regular\n"])


# ---- directories holding what a release cannot hold ----

def test_dir_with_fifo_refused(seeded, nano, workdir):
    src = make_tree(workdir / "src", {"ok": b"x", "sub": {"before": b"before\n"}})
    os.mkfifo(src / "sub" / "pipe")
    r = nano("store", "add", src, "--name", "f", "--version", "1", check=False, timeout=30)
    refused(r, 1, str(src / "sub" / "pipe"), "fifo")
    seeded.check_intact()


def test_dir_with_socket_refused(seeded, nano, workdir):
    src = make_tree(workdir / "s", {"ok": b"x"})
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(src / "sock"))
        r = nano("store", "add", src, "--name", "s", "--version", "1", check=False, timeout=30)
    finally:
        s.close()
    refused(r, 1, str(src / "sock"), "socket")
    seeded.check_intact()


# ---- setuid, setgid, sticky ----

def check_stripped(nano, release, r, want_modes):
    show = {e["path"]: e for e in nano("store", "show", release, "--json").json()["entries"]}
    for path, mode in want_modes.items():
        assert show[path]["mode"] == mode, f"{path}: mode {show[path]['mode']:o}, want {mode:o}"
        assert path.rstrip("/") in r.stderr, f"no warning names {path}\n{r}"
    assert "warning" in r.stderr.lower() and "setuid" in r.stderr, r
    assert sum("warning" in line for line in r.stderr.splitlines()) >= len(want_modes), r


def test_setuid_setgid_sticky_dir(seeded, nano, workdir):
    src = make_tree(workdir / "src", {"su": b"#!/bin/sh\n", "sg": b"#!/bin/sh\n", "plain": b"p",
                                      "shared": {"f": b"in a sticky dir\n"}})
    os.chmod(src / "su", 0o4755)
    os.chmod(src / "sg", 0o2711)
    os.chmod(src / "shared", 0o3777)
    if stat.S_IMODE(os.stat(src / "sg").st_mode) != 0o2711:
        pytest.skip("this filesystem would not set the setgid bit for this user")
    r = nano("store", "add", src, "--name", "bits", "--version", "1")
    check_stripped(nano, "bits@1", r, {"su": 0o755, "sg": 0o711, "shared": 0o777})
    assert "plain" not in r.stderr
    co = workdir / "co"
    nano("store", "checkout", "bits@1", co)
    for p in ("su", "sg", "shared"):
        assert not os.stat(co / p).st_mode & 0o7000, p


def test_setuid_setgid_sticky_tar(seeded, nano, workdir):
    tb = tar_with(workdir / "bits.tar", [("bin", "dir", None, 0o755), ("bin/su", "file", b"#!/bin/sh\n", 0o4755),
                                          ("sg", "file", b"g", 0o2755), ("tmp", "dir", None, 0o1777),
                                          ("plain", "file", b"p", 0o644)])
    r = nano("store", "add", tb, "--name", "bits", "--version", "1")
    check_stripped(nano, "bits@1", r, {"bin/su": 0o755, "sg": 0o755, "tmp": 0o777})
    assert "bits.tar" in r.stderr


# ---- names and versions ----

BAD_NAMES = ["", ".hidden", ".", "..", "a/b", "../x", "x" * 129, "x" * 200, "a b", "a@b", "-x", "a\nb",
             "caf\u00e9", "a:b", "a\\b"]


@pytest.mark.parametrize("field", ["name", "version"])
@pytest.mark.parametrize("bad", BAD_NAMES, ids=lambda v: repr(v)[:20])
def test_invalid_names(seeded, nano, field, bad):
    args = {"name": "ok", "version": "1"}
    args[field] = bad
    r = nano("store", "add", seeded.src, "--name", args["name"], "--version", args["version"], check=False)
    refused(r, 2, "invalid", field)
    assert not (seeded.home / "store" / "refs" / "ok").exists()
    assert snapshot(seeded.home) == seeded.before


def test_reserved_name(seeded, nano):
    """`by-id` is a valid name, but the mount shows its by-id view there (doc/mount.md)."""
    r = nano("store", "add", seeded.src, "--name", "by-id", "--version", "1", check=False)
    refused(r, 2, "invalid name 'by-id'", "reserved", "by-id view")
    assert not (seeded.home / "store" / "refs" / "by-id").exists()
    assert snapshot(seeded.home) == seeded.before
    # as a version, or within a longer name, it is an ordinary word
    assert add(nano, seeded.src, "by-id2", "by-id")["id"] == seeded.id
    assert add(nano, seeded.src, "x", "by-id")["id"] == seeded.id


def test_longest_name_is_valid(seeded, nano):
    n = "a" + "Z9._+-" * 21 + "b"
    assert len(n) == 128
    j = add(nano, seeded.src, n, n)
    assert j["id"] == seeded.id
    assert nano("store", "cat", f"{n}@{n}", "keep.txt").stdout.encode() == BASE_SPEC["keep.txt"]


def test_missing_name_or_version(seeded, nano):
    for args in (["--name", "a"], ["--version", "1"], []):
        r = nano("store", "add", seeded.src, *args, check=False)
        refused(r, 2, "--name")
    r = nano("store", "add", "--name", "a", "--version", "1", check=False)
    refused(r, 2, "PATH")


# ---- broken archives ----

def good_tgz(workdir):
    src = make_tree(workdir / "t", {"big.bin": random.Random(3).randbytes(200 * KiB),
                                    "text": b"some text\n" * 2000, "d": {"e": b"e\n"}})
    tb = workdir / "good.tar.gz"
    subprocess.run(["tar", "-C", src, "-czf", tb, "."], check=True, capture_output=True)
    return tb


@pytest.mark.parametrize("cut", ["1", "10", "100", "third", "half", "minus20", "minus1"])
def test_truncated_tar_gz(seeded, nano, workdir, cut):
    data = good_tgz(workdir).read_bytes()
    n = {"third": len(data) // 3, "half": len(data) // 2, "minus20": len(data) - 20,
         "minus1": len(data) - 1}.get(cut) or int(cut)
    tb = workdir / f"cut-{cut}.tar.gz"
    tb.write_bytes(data[:n])
    r = nano("store", "add", tb, "--name", "cut", "--version", "1", check=False)
    refused(r, 1, tb.name)
    seeded.check_intact()


def test_tar_member_truncated_mid_data(seeded, nano, workdir):
    content = random.Random(4).randbytes(100 * KiB)
    tb = tar_with(workdir / "whole.tar", [("first", "file", b"x", None), ("victim.bin", "file", content, None)],
                  fmt=tarfile.GNU_FORMAT)
    data = tb.read_bytes()
    cut = workdir / "cut.tar"
    cut.write_bytes(data[:data.find(content[:64]) + 50 * KiB])
    r = nano("store", "add", cut, "--name", "cut", "--version", "1", check=False)
    refused(r, 1, "cut.tar", "victim.bin")
    assert "runcat" in r.stderr, f"the error should say the archive is truncated\n{r}"
    seeded.check_intact()


@pytest.mark.parametrize("what", ["garbage", "empty", "text", "gzip-garbage"])
def test_not_an_archive(seeded, nano, workdir, what):
    p = workdir / f"input-{what}"
    if what == "garbage":
        p.write_bytes(random.Random(5).randbytes(10 * KiB))
    elif what == "empty":
        p.write_bytes(b"")
    elif what == "text":
        p.write_text("just some text\n" * 20)
    else:
        p.write_bytes(b"\x1f\x8b\x08\x00" + random.Random(6).randbytes(5000))
    r = nano("store", "add", p, "--name", "junk", "--version", "1", check=False)
    refused(r, 1, p.name)
    seeded.check_intact()


def test_missing_source(seeded, nano, workdir):
    p = workdir / "no" / "such" / "source"
    r = nano("store", "add", p, "--name", "m", "--version", "1", check=False)
    refused(r, 3, str(p))
    seeded.check_intact()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode: needs an unprivileged user")
@pytest.mark.parametrize("what", ["file", "dir"])
def test_unreadable_source_entry(seeded, nano, workdir, what):
    src = make_tree(workdir / "src", {"ok": b"x", "sub": {"secret": b"s", "inner": {"f": b"f"}}})
    victim = src / "sub" / ("secret" if what == "file" else "inner")
    victim.chmod(0)
    try:
        r = nano("store", "add", src, "--name", "u", "--version", "1", check=False)
    finally:
        victim.chmod(0o700)
    refused(r, 1, str(victim), "Permission denied")
    seeded.check_intact()


# ---- a damaged store ----

def corrupt_setup(nano, workdir):
    src = make_tree(workdir / "c", {"big": random.Random(8).randbytes(3 * MiB), "small": b"small\n",
                                    "dir": {"other": b"other\n"}})
    j = add(nano, src, "c", "1")
    return src, j


def test_flipped_byte_in_object(nano, nano_home, workdir):
    src, j = corrupt_setup(nano, workdir)
    truth = (src / "big").read_bytes()
    digest = sha256(truth)
    obj = fanout(nano_home / "store" / "objects", digest)
    assert stat.S_IMODE(obj.stat().st_mode) == 0o444
    flip_byte(obj, obj.stat().st_size // 2)

    r = nano("store", "cat", "c@1", "big", text=False, check=False)
    assert r.returncode == 4, r
    assert b"corrupt" in r.stderr, r
    assert len(r.stdout) < len(truth) and r.stdout == truth[:len(r.stdout)], \
        "cat of a corrupt object wrote bytes that are not the file's"
    assert nano("store", "cat", "c@1", "small").stdout == "small\n"
    r = nano("store", "checkout", "c@1", workdir / "co", check=False)
    assert r.returncode == 4 and "big" in r.stderr, r

    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4, f
    rel = f"objects/{digest[:2]}/{digest[2:]}"
    hits = [p for p in problems(f) if p["file"] == rel]
    assert hits and all(p["kind"] == "corrupt-object" for p in hits), f
    assert any(p["release"] == "c@1" and p["path"] == "big" for p in hits), f"no problem names c@1 big\n{f}"
    assert all(p["file"] == rel for p in problems(f)), f"fsck blames something else too\n{f}"
    assert f.json()["problems"] == len(problems(f))
    txt = nano("store", "fsck", check=False)
    assert txt.returncode == 4 and rel in txt.stdout + txt.stderr

    f = nano("store", "fsck", "--repair", "--json", check=False)
    assert any(p["file"] == rel and p["repaired"] for p in problems(f)), f
    assert f.json()["repaired"] >= 1
    assert not obj.exists(), "fsck --repair left the corrupt object"
    # The release still needs it: fsck says so, with the release and path.
    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4, f
    assert any(p["release"] == "c@1" and p["path"] == "big" for p in problems(f)), f
    r = nano("store", "cat", "c@1", "big", check=False)
    assert r.returncode == 4 and r.stdout == "", r

    j2 = add(nano, src, "c", "1")
    assert j2["id"] == j["id"] and j2["new_objects"] == 1, j2
    assert nano("store", "cat", "c@1", "big", text=False).stdout == truth
    f = nano("store", "fsck", "--json")
    assert f.json()["problems"] == 0
    assert tmp_entries(nano_home) == []


@pytest.mark.parametrize("size", [pytest.param(10, id="truncated-10-bytes"), pytest.param(0, id="empty")])
def test_truncated_object_repair(nano, nano_home, workdir, size):
    src, j = corrupt_setup(nano, workdir)
    digest = sha256_file(src / "big")
    obj = fanout(nano_home / "store" / "objects", digest)
    os.chmod(obj, 0o644)
    os.truncate(obj, size)
    r = nano("store", "cat", "c@1", "big", check=False)
    assert r.returncode == 4 and "corrupt" in r.stderr and r.stdout == "", r
    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4
    assert any(p["release"] == "c@1" and p["path"] == "big" and digest[2:] in p["file"] for p in problems(f)), f
    f = nano("store", "fsck", "--repair", "--json", check=False)
    assert not obj.exists(), f
    assert add(nano, src, "c", "1")["new_objects"] == 1
    assert nano("store", "fsck").returncode == 0
    assert nano("store", "cat", "c@1", "big", text=False).stdout == (src / "big").read_bytes()


@pytest.mark.parametrize("size", [
    pytest.param(0, id="empty"),
    pytest.param(10, id="truncated-10-bytes"),
])
def test_readd_heals_short_object(nano, nano_home, workdir, size):
    """doc/formats.md: an object is trusted when at least as long as an empty container; a shorter
    one is rewritten by the next import that needs it, without fsck --repair."""
    src, j = corrupt_setup(nano, workdir)
    digest = sha256_file(src / "big")
    obj = fanout(nano_home / "store" / "objects", digest)
    os.chmod(obj, 0o644)
    os.truncate(obj, size)
    j2 = add(nano, src, "c", "1")
    assert j2["new_objects"] == 1, j2
    assert obj.stat().st_size >= 48
    assert nano("store", "cat", "c@1", "big", text=False).stdout == (src / "big").read_bytes()
    assert nano("store", "fsck").returncode == 0


def test_missing_object(nano, nano_home, workdir):
    src, j = corrupt_setup(nano, workdir)
    obj = fanout(nano_home / "store" / "objects", sha256_file(src / "big"))
    os.unlink(obj)
    r = nano("store", "cat", "c@1", "big", check=False)
    assert r.returncode == 4 and "missing" in r.stderr and r.stdout == "", r
    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4
    assert any(p["release"] == "c@1" and p["path"] == "big" for p in problems(f)), f
    assert add(nano, src, "c", "1")["new_objects"] == 1
    assert nano("store", "fsck").returncode == 0


def test_checkout_missing_object_is_corrupt(nano, nano_home, workdir):
    src, j = corrupt_setup(nano, workdir)
    os.unlink(fanout(nano_home / "store" / "objects", sha256_file(src / "big")))
    r = nano("store", "checkout", "c@1", workdir / "co", check=False)
    assert r.returncode == 4 and "big" in r.stderr, r


def test_flipped_byte_in_manifest(nano, nano_home, workdir):
    src, j = corrupt_setup(nano, workdir)
    mf = fanout(nano_home / "store" / "manifests", j["id"])
    good = mf.read_bytes()
    flip_byte(mf, len(good) // 2)
    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4, f
    rel = f"manifests/{j['id'][7:9]}/{j['id'][9:]}"
    assert any(p["kind"] == "corrupt-manifest" and p["file"] == rel for p in problems(f)), f
    assert any(p["release"] == "c@1" and p["kind"] in ("missing-manifest", "corrupt-manifest")
               for p in problems(f)), f"no problem names the release c@1\n{f}"

    f = nano("store", "fsck", "--repair", "--json", check=False)
    assert not mf.exists(), f"fsck --repair left the corrupt manifest\n{f}"
    r = nano("store", "show", "c@1", check=False)
    assert r.returncode == 4 and "c@1" in r.stderr, r
    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4 and any(p["release"] == "c@1" for p in problems(f)), f

    j2 = add(nano, src, "c", "1")
    assert j2["id"] == j["id"]
    assert mf.read_bytes() == good
    assert nano("store", "fsck").returncode == 0
    co = workdir / "co"
    nano("store", "checkout", "c@1", co)
    assert tree_digest(co) == tree_digest(src)


def test_manifest_bit_flip_is_never_served(nano, nano_home, workdir):
    """Like a blob chunk, a manifest that is not the bytes its id names must give an error, not
    wrong metadata. Flip the low byte of entry 1's mode (offset 64 + 80 + 12, doc/formats.md):
    the manifest still parses, so only the sha256 can tell."""
    src, j = corrupt_setup(nano, workdir)
    mf = fanout(nano_home / "store" / "manifests", j["id"])
    flip_byte(mf, 64 + 80 + 12)
    r = nano("store", "show", "c@1", "--json", check=False)
    assert r.returncode == 4 and "corrupt" in r.stderr, r
    r = nano("store", "checkout", "c@1", workdir / "co", check=False)
    assert r.returncode == 4, r


def test_malformed_ref(nano, nano_home, workdir):
    src, j = corrupt_setup(nano, workdir)
    ref = nano_home / "store" / "refs" / "c" / "1"
    os.chmod(ref, 0o644)
    ref.write_text("sha256:not-an-id\n")
    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4
    assert any(p["file"] == "refs/c/1" and p["release"] == "c@1" for p in problems(f)), f
    r = nano("store", "cat", "c@1", "small", check=False)
    assert r.returncode != 0 and r.stdout == "", r
    f = nano("store", "fsck", "--repair", "--json", check=False)
    assert f.returncode == 0 and not ref.exists(), f
    add(nano, src, "c", "1")
    assert nano("store", "cat", "c@1", "small").stdout == "small\n"


# ---- a full disk ----

FULL_DISK_SCRIPT = r'''
mount -t tmpfs -o size=4m none "$MNT" || exit 90
export NANO_HOME="$MNT/home"
step() { name=$1; shift; "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; echo $? >"$OUT/$name.rc"; }
step add-small "$NANO" store add "$SMALL" --name small --version 1
step add-big "$NANO" store add "$BIG" --name big --version 1
ls -A "$MNT/home/store/tmp" >"$OUT/tmp.ls" 2>&1
step cat "$NANO" store cat small@1 hello.txt
step ls "$NANO" store ls --json
step fsck "$NANO" store fsck --json
step gc "$NANO" store gc --json
step add-after "$NANO" store add "$AFTER" --name after --version 1
step cat-after "$NANO" store cat after@1 one-mib
exit 0
'''


def test_full_disk(nano_bin, workdir, require_userns):
    mnt = workdir / "mnt"
    mnt.mkdir()
    out = workdir / "out"
    out.mkdir()
    small = make_tree(workdir / "small", {"hello.txt": b"hello, small disk\n"})
    rnd = random.Random(9)
    big = make_tree(workdir / "big", {f"r{i:02}": rnd.randbytes(MiB) for i in range(20)})
    after = make_tree(workdir / "after", {"one-mib": rnd.randbytes(MiB)})
    env = dict(os.environ, MNT=str(mnt), OUT=str(out), NANO=str(nano_bin), SMALL=str(small),
               BIG=str(big), AFTER=str(after))
    p = subprocess.run(["unshare", "-Urm", "sh", "-c", FULL_DISK_SCRIPT], env=env, capture_output=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    if p.returncode == 90:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {p.stderr.decode(errors='replace')}")
    assert p.returncode == 0, p

    def res(name):
        err = (out / f"{name}.err").read_text(errors="replace")
        report = sanitizer_report(err)
        assert not report, f"sanitizer report from `{name}`:\n{report}"
        return int((out / f"{name}.rc").read_text()), (out / f"{name}.out").read_bytes().decode("latin-1"), err

    rc, so, se = res("add-small")
    assert rc == 0, se
    rc, so, se = res("add-big")
    assert rc == 1, f"adding 20 MiB to a 4 MiB disk: want exit 1, got {rc}\n{so}\n{se}"
    assert "full" in se or "No space" in se, f"the error does not say the disk is full:\n{se}"
    assert (out / "tmp.ls").read_text() == "", f"tmp/ after the failed import: {(out / 'tmp.ls').read_text()}"
    rc, so, se = res("cat")
    assert rc == 0 and so == "hello, small disk\n", se
    rc, so, se = res("ls")
    assert rc == 0 and [x["name"] for x in json.loads(so)] == ["small"], so
    rc, so, se = res("fsck")
    assert rc == 0 and json.loads(so)["problems"] == 0, so + se
    rc, so, se = res("gc")
    assert rc == 0, se
    # Once gc has taken the failed import's leftovers away, the disk has room again.
    rc, so, se = res("add-after")
    assert rc == 0, se
    rc, so, se = res("cat-after")
    assert rc == 0 and so.encode("latin-1") == (after / "one-mib").read_bytes(), se
