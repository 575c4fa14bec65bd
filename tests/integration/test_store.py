# SPDX-License-Identifier: LGPL-2.1-or-later
"""`nano store` driven as a user would: add (directories, tarballs, .deb), ls, show, cat,
checkout, rm, gc, fsck, du. Every expected value is computed here from the source trees and the
store's files (hashlib, os.stat), never copied from nano's own output."""

import hashlib
import io
import os
import random
import re
import shutil
import stat
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from nanotest import fsck_problems, make_tree, tree_digest

KiB = 1024
MiB = 1024 * 1024
ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
EMPTY_CONTAINER = 48  # doc/formats.md: magic 8 + trailer 40


# ---- helpers ----

def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def fanout(root, digest):
    """objects/ab/cdef… or manifests/ab/cdef… for 'sha256:abcdef…' or 'abcdef…'."""
    h = digest.split(":", 1)[-1]
    return Path(root) / h[:2] / h[2:]


def store_files(home, parts=("objects", "manifests", "refs")):
    """{relative path: size} of the regular files under the given parts of the store."""
    out = {}
    top = Path(home) / "store"
    for part in parts:
        for dirpath, _, names in os.walk(top / part):
            for n in names:
                p = Path(dirpath) / n
                out[str(p.relative_to(top))] = p.lstat().st_size
    return out


def store_size(home, parts=("objects", "manifests", "refs")):
    return sum(store_files(home, parts).values())


def object_digests(home):
    return {k.split("/")[1] + k.split("/")[2] for k in store_files(home, ("objects",))}


def tmp_entries(home):
    t = Path(home) / "store" / "tmp"
    return sorted(os.listdir(t)) if t.is_dir() else []


def add(nano, src, name, version, *extra, **kw):
    """`nano store add --json`; returns the parsed JSON."""
    r = nano("store", "add", src, "--name", name, "--version", version, "--json", *extra, **kw)
    j = r.json()
    assert j["release"] == f"{name}@{version}", r
    assert ID_RE.match(j["id"]), r
    return j


def walk_source(top):
    """{relpath: os.stat_result} of everything below top (top itself is ''), links not followed."""
    out = {"": os.lstat(top)}

    def rec(d, rel):
        with os.scandir(d) as it:
            for e in it:
                r = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                out[r] = st
                if stat.S_ISDIR(st.st_mode):
                    rec(e.path, r)

    rec(top, "")
    return out


def source_counts(top):
    files = dirs = links = nbytes = 0
    digests = {}
    for rel, st in walk_source(top).items():
        if stat.S_ISREG(st.st_mode):
            files += 1
            nbytes += st.st_size
            digests[sha256_file(Path(top) / rel)] = st.st_size
        elif stat.S_ISDIR(st.st_mode):
            dirs += 1
        elif stat.S_ISLNK(st.st_mode):
            links += 1
    return {"files": files, "directories": dirs, "symlinks": links, "bytes": nbytes, "digests": digests}


def set_mtimes(top, base_sec, seed=1):
    """Give every entry below top (and top) its own mtime with nanoseconds, children before parents."""
    rng = random.Random(seed)
    entries = sorted(walk_source(top), key=lambda r: (-r.count("/") if r else 1, r))
    # Deepest first; the root ('') last.
    entries = [r for r in entries if r] + [""]
    for i, rel in enumerate(entries):
        ns = (base_sec + i * 997) * 10**9 + rng.randrange(1, 10**9)
        os.utime(Path(top) / rel if rel else top, ns=(ns, ns), follow_symlinks=False)


def zstd_size(data):
    """Size of data compressed on its own (zstd -3, or zlib -6 where zstd is missing): a bound."""
    if shutil.which("zstd"):
        r = subprocess.run(["zstd", "-3", "-q", "-c"], input=data, capture_output=True, check=True)
        return len(r.stdout)
    return len(zlib.compress(data, 6))


def text_like(seed, size):
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(2, 9)))
             for _ in range(400)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:size])


def rich_tree(top):
    """Every kind of entry and attribute nano keeps: sizes around the chunk size, nested and
    read-only directories, all sorts of symlinks, odd names, modes and mtimes (with ns)."""
    rnd = random.Random(42)
    make_tree(top, {
        "empty": b"",
        "one": b"x",
        "small.txt": b"hello, store\n",
        "chunk-exact": rnd.randbytes(256 * KiB),
        "chunk-plus-one": rnd.randbytes(256 * KiB + 1),
        "chunk-minus-one": rnd.randbytes(256 * KiB - 1),
        "random-3m": rnd.randbytes(3 * MiB + 12345),
        "text": text_like(7, 700 * KiB),
        "with space.txt": b"spaces in names\n",
        "caf\u00e9 \u00fc \u65e5\u672c.txt": "UTF-8 name, UTF-8 content: \u00e9\u00e8\u65e5\n",
        "private": ("mode", 0o600, b"secret\n"),
        "tool": ("mode", 0o755, b"#!/bin/sh\necho hi\n"),
        "readonly": ("mode", 0o444, b"read only\n"),
        "odd-mode": ("mode", 0o751, b"odd\n"),
        "nested": {"a": {"b": {"c": {"deep.txt": b"deep\n", "same-as-small": b"hello, store\n"}}}},
        "dir with space": {"f": b"in a dir with a space\n"},
        "closed": ("mode", 0o700, {"inside": b"inside a 0700 dir\n"}),
        "ro-dir": ("mode", 0o555, {"kept": b"in a 0555 dir\n"}),
        "empty-dir": {},
        "links": {
            "relative": ("symlink", "../small.txt"),
            "absolute": ("symlink", "/etc/hostname"),
            "dangling": ("symlink", "no/such/file"),
            "outside": ("symlink", "../../../../outside/the/tree"),
            "to-dir": ("symlink", "../nested/a"),
            "utf8 \u00e9": ("symlink", "caf\u00e9 \u00fc \u65e5\u672c.txt"),
        },
    })
    # Dates before 1970 and after 2038 too.
    set_mtimes(top, 1_500_000_000)
    os.utime(top / "one", ns=(-300_000_000 * 10**9 + 5, -300_000_000 * 10**9 + 5))
    os.utime(top / "small.txt", ns=(4_102_444_800 * 10**9 + 999_999_999,) * 2)
    os.chmod(top, 0o750)
    return top


def assert_same_root(src, dst):
    a, b = os.lstat(src), os.lstat(dst)
    assert stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode), "root directory mode differs"
    assert a.st_mtime_ns == b.st_mtime_ns, "root directory mtime differs"


def diff_digests(a, b):
    da, db = dict((x[0], x) for x in a), dict((x[0], x) for x in b)
    lines = []
    for k in sorted(set(da) | set(db)):
        if da.get(k) != db.get(k):
            lines.append(f"  {k}: source {da.get(k)} != checkout {db.get(k)}")
    return "\n".join(lines[:30])


def assert_same_tree(src, dst, mtime=True):
    a, b = tree_digest(src, mtime=mtime), tree_digest(dst, mtime=mtime)
    assert a == b, "trees differ:\n" + diff_digests(a, b)


# ---- round trips ----

def test_round_trip_directory(nano, nano_home, workdir):
    src = rich_tree(workdir / "src")
    want = source_counts(src)
    j = add(nano, src, "rich", "1.0")
    for k in ("files", "directories", "symlinks", "bytes"):
        assert j[k] == want[k], f"add --json {k}: {j[k]} != {want[k]} counted in the source\n{j}"
    assert j["new_objects"] == len(want["digests"]), j
    assert j["existed"] is False
    assert j["new_bytes"] > 0 and j["seconds"] >= 0

    co = workdir / "co"
    nano("store", "checkout", "rich@1.0", co)
    assert_same_tree(src, co)
    assert_same_root(src, co)
    assert tmp_entries(nano_home) == []

    # Checkout into a directory that exists and is empty works too.
    co2 = workdir / "co2"
    co2.mkdir()
    nano("store", "checkout", "rich@1.0", co2)
    assert_same_tree(src, co2)


def test_plain_output_and_quiet(nano, workdir):
    src = make_tree(workdir / "src", {"f": b"plain\n"})
    r = nano("store", "add", src, "--name", "p", "--version", "1")
    m = re.fullmatch(r"p@1 (sha256:[0-9a-f]{64})\n", r.stdout)
    assert m, f"add output is not 'p@1 sha256:<64 hex>':\n{r}"
    r2 = nano("store", "add", src, "--name", "p", "--version", "2", "-q")
    assert r2.stdout == "", r2
    r3 = nano("store", "add", src, "--name", "p", "--version", "3", "--no-progress", "--json")
    assert r3.json()["id"] == m.group(1), "the same tree under another name must have the same id"


def test_show_matches_source(nano, nano_home, workdir):
    """show --json lists exactly the source tree; every id is a real sha256 of real bytes."""
    src = rich_tree(workdir / "src")
    rid = add(nano, src, "rich", "1")["id"]
    show = nano("store", "show", "rich@1", "--json").json()
    assert show["release"] == "rich@1" and show["id"] == rid
    entries = {e["path"]: e for e in show["entries"]}
    stats = walk_source(src)
    assert set(entries) == set(stats), f"show lists {sorted(set(entries) ^ set(stats))} differently"
    assert show["entries"][0]["path"] == "" and show["entries"][0]["type"] == "directory"
    for rel, st in stats.items():
        e = entries[rel]
        assert e["mode"] == stat.S_IMODE(st.st_mode) & 0o777 or stat.S_ISLNK(st.st_mode), (rel, e)
        assert e["mtime"] * 10**9 + e["mtime_nsec"] == st.st_mtime_ns, (rel, e, st.st_mtime_ns)
        assert 0 <= e["mtime_nsec"] < 10**9
        if stat.S_ISREG(st.st_mode):
            digest = sha256_file(src / rel)
            assert e["type"] == "file" and e["size"] == st.st_size, (rel, e)
            assert e["blob"] == "sha256:" + digest, f"{rel}: blob is not the sha256 of the content"
            obj = fanout(nano_home / "store" / "objects", digest)
            assert obj.is_file(), f"{rel}: no object at {obj}"
            assert obj.stat().st_size >= EMPTY_CONTAINER
        elif stat.S_ISLNK(st.st_mode):
            assert e["type"] == "symlink" and e["target"] == os.readlink(src / rel), (rel, e)
            assert "blob" not in e or e["blob"] is None
        else:
            assert e["type"] == "directory", (rel, e)
            assert e["size"] == len(os.listdir(src / rel)), (rel, e)

    # The id is the sha256 of the manifest's bytes.
    mf = fanout(nano_home / "store" / "manifests", rid)
    assert mf.is_file(), f"no manifest at {mf}"
    assert "sha256:" + sha256_file(mf) == rid
    assert mf.read_bytes()[:8] == b"NANOMAN\x01"
    # The ref names it.
    assert (nano_home / "store" / "refs" / "rich" / "1").read_bytes() == (rid + "\n").encode()
    # A fresh store holds exactly the source's distinct contents.
    assert object_digests(nano_home) == set(source_counts(src)["digests"])
    # Plain (table) output lists every path.
    table = nano("store", "show", "rich@1").stdout
    for rel in stats:
        if rel:
            assert rel in table, f"{rel!r} missing from `store show`:\n{table}"


def test_cat_exact_bytes(nano, workdir):
    src = rich_tree(workdir / "src")
    rid = add(nano, src, "rich", "1")["id"]
    for rel in ("empty", "one", "chunk-exact", "chunk-plus-one", "chunk-minus-one", "random-3m",
                "text", "caf\u00e9 \u00fc \u65e5\u672c.txt", "nested/a/b/c/deep.txt", "private",
                "closed/inside"):
        for release in ("rich@1", rid):
            r = nano("store", "cat", release, rel, text=False)
            assert r.stdout == (src / rel).read_bytes(), f"cat {release} {rel!r}: wrong bytes"
            assert r.stderr == b""


def test_cat_errors(nano, workdir):
    src = rich_tree(workdir / "src")
    add(nano, src, "rich", "1")
    cases = [
        ("nested/a", 1, "directory"),
        ("links/relative", 1, "symlink"),
        ("links/dangling", 1, "symlink"),
        ("no-such-file", 3, None),
        ("nested/nope/deeper", 3, None),
        ("small.txt/below-a-file", 3, None),
    ]
    for path, code, word in cases:
        r = nano("store", "cat", "rich@1", path, check=False)
        assert r.returncode == code, f"cat {path!r}: want exit {code}\n{r}"
        assert r.stdout == "", f"cat {path!r} wrote to stdout\n{r}"
        assert path in r.stderr and "rich@1" in r.stderr, f"the error must name the path and release\n{r}"
        if word:
            assert word in r.stderr, r
    r = nano("store", "cat", "nope@1", "small.txt", check=False)
    assert r.returncode == 3 and "nope@1" in r.stderr, r
    r = nano("store", "cat", "sha256:" + "0" * 64, "small.txt", check=False)
    assert r.returncode == 3 and "0" * 64 in r.stderr, r
    r = nano("store", "cat", "rich@1", check=False)
    assert r.returncode == 2, r


def test_checkout_refuses_non_empty_dir(nano, workdir):
    src = make_tree(workdir / "src", {"f": b"x"})
    add(nano, src, "a", "1")
    dst = make_tree(workdir / "dst", {"mine": b"keep me"})
    r = nano("store", "checkout", "a@1", dst, check=False)
    assert r.returncode != 0 and str(dst) in r.stderr and "empty" in r.stderr, r
    assert sorted(os.listdir(dst)) == ["mine"] and (dst / "mine").read_bytes() == b"keep me"
    r = nano("store", "checkout", "nope@1", workdir / "new", check=False)
    assert r.returncode == 3 and "nope@1" in r.stderr, r


def test_by_id(nano, workdir):
    src = rich_tree(workdir / "src")
    rid = add(nano, src, "rich", "1")["id"]
    s1 = nano("store", "show", rid, "--json").json()
    s2 = nano("store", "show", "rich@1", "--json").json()
    assert s1["id"] == rid and s1["entries"] == s2["entries"]
    co = workdir / "co"
    nano("store", "checkout", rid, co)
    assert_same_tree(src, co)
    # Still there by id after the name is gone... until gc.
    nano("store", "rm", "rich@1")
    assert nano("store", "cat", rid, "tool", text=False).stdout == (src / "tool").read_bytes()
    r = nano("store", "show", "sha256:" + "f" * 64, check=False)
    assert r.returncode == 3, r
    r = nano("store", "show", "sha256:XYZ", check=False)
    assert r.returncode != 0 and "sha256:XYZ" in r.stderr, r


# ---- options that change storage but never the id ----

def test_compression_options_keep_the_id(nano, nano_home, workdir):
    src = rich_tree(workdir / "src")
    rid = add(nano, src, "rich", "1")["id"]
    other = workdir / "home2"
    other.mkdir()
    j = add(nano, src, "rich", "1", "--chunk-size", "4K", "--level", "19", "--threads", "1", home=other)
    assert j["id"] == rid, "chunk size and level must not change the release id"
    # The container of a 3 MiB file has 4 KiB chunks: read its trailer (doc/formats.md).
    obj = fanout(other / "store" / "objects", sha256_file(src / "random-3m"))
    data = obj.read_bytes()
    size, shift, n = struct.unpack_from("<QII", data, len(data) - 40)
    assert data[:8] == b"NANOBLB\x01" and data[-8:] == b"NANOBEND"
    assert (size, shift, n) == ((src / "random-3m").stat().st_size, 12, -(-size // 4096))
    co = workdir / "co"
    nano("store", "checkout", "rich@1", co, home=other)
    assert_same_tree(src, co)
    for bad in (["--chunk-size", "3000"], ["--chunk-size", "2K"], ["--chunk-size", "32M"],
                ["--level", "0"], ["--level", "20"], ["--threads", "0"], ["--frobnicate"]):
        r = nano("store", "add", src, "--name", "x", "--version", "1", *bad, check=False)
        assert r.returncode == 2, f"{bad}: want exit 2\n{r}"
        assert r.stderr.strip(), r
    assert not (nano_home / "store" / "refs" / "x").exists()


# ---- tarballs and .deb ----

TAR_SUFFIXES = ("tar", "tar.gz", "tar.xz", "tar.zst", "tar.bz2")


def whole_second_before_1970(src):
    # libarchive 3.6 reads a pax mtime like "-299999999.999999995" as -299999999 s + 999999995 ns
    # (the fraction is not negated): keep pre-1970 times whole seconds in archives.
    os.utime(src / "one", ns=(-300_000_000 * 10**9,) * 2, follow_symlinks=False)


def test_tarballs_all_compressions(nano, nano_home, workdir):
    src = rich_tree(workdir / "src")
    whole_second_before_1970(src)
    dir_id = add(nano, src, "dir", "1")["id"]
    ids = {}
    for suffix in TAR_SUFFIXES:
        tb = workdir / f"t.{suffix}"
        # POSIX (pax) format keeps nanosecond mtimes, so the tree is exactly the directory's.
        subprocess.run(["tar", "--format=posix", "-C", src, "-caf", tb, "."], check=True,
                       capture_output=True)
        ids[suffix] = add(nano, tb, "tar", suffix.replace(".", "-"))["id"]
    assert set(ids.values()) == {dir_id}, \
        f"one tree must give one id whatever the compression, and the directory's: {ids} vs {dir_id}"
    for suffix in TAR_SUFFIXES:
        co = workdir / f"co-{suffix}"
        nano("store", "checkout", f"tar@{suffix.replace('.', '-')}", co)
        assert_same_tree(src, co)
        assert_same_root(src, co)
    assert tmp_entries(nano_home) == []


def test_tar_default_format_dot_prefixes(nano, workdir):
    """GNU format (whole-second mtimes), members written ./a, ./b/…"""
    src = rich_tree(workdir / "src")
    tb = workdir / "t.tar"
    subprocess.run(["tar", "-C", src, "-cf", tb, "."], check=True, capture_output=True)
    names = subprocess.run(["tar", "-tf", tb], check=True, capture_output=True, text=True).stdout.split("\n")
    assert "./small.txt" in names
    add(nano, tb, "t", "1")
    co = workdir / "co"
    nano("store", "checkout", "t@1", co)
    assert_same_tree(src, co, mtime=False)
    a = {x[0]: x[4] for x in tree_digest(src)}
    b = {x[0]: x[4] for x in tree_digest(co)}
    for k in a:
        assert b[k] == (a[k] // 10**9) * 10**9, f"{k}: mtime {b[k]} is not the source's second {a[k]}"
    # Members listed without the ./ prefix and without a root entry: same files.
    tb2 = workdir / "t2.tar"
    subprocess.run(["tar", "-C", src, "-cf", tb2, *sorted(os.listdir(src))], check=True, capture_output=True)
    add(nano, tb2, "t", "2")
    co2 = workdir / "co2"
    nano("store", "checkout", "t@2", co2)
    assert_same_tree(src, co2, mtime=False)


def test_tar_hard_links(nano, nano_home, workdir):
    content = os.urandom(100 * KiB)
    src = make_tree(workdir / "src", {"a": content, "d": {"b": b"other"}})
    os.link(src / "a", src / "d" / "hard-a")
    os.link(src / "d" / "b", src / "hard-b")
    tb = workdir / "h.tar"
    subprocess.run(["tar", "-C", src, "-cf", tb, "."], check=True, capture_output=True)
    listing = subprocess.run(["tar", "-tvf", tb], check=True, capture_output=True, text=True).stdout
    assert "link to" in listing, f"tar did not store a hard link:\n{listing}"
    j = add(nano, tb, "h", "1")
    assert j["files"] == 4 and j["new_objects"] == 2, j
    show = {e["path"]: e for e in nano("store", "show", "h@1", "--json").json()["entries"]}
    assert show["a"]["blob"] == show["d/hard-a"]["blob"] == "sha256:" + hashlib.sha256(content).hexdigest()
    assert show["hard-b"]["blob"] == show["d/b"]["blob"]
    assert show["d/hard-a"]["size"] == len(content)
    assert nano("store", "cat", "h@1", "d/hard-a", text=False).stdout == content
    co = workdir / "co"
    nano("store", "checkout", "h@1", co)
    assert_same_tree(src, co, mtime=False)


def test_tar_without_directory_entries(nano, workdir):
    tb = workdir / "nodirs.tar"
    files = {"x/y/z.txt": b"deep\n", "x/w": b"w\n", "top": b"top\n", "p/q/r/s/t": b"t\n"}
    with tarfile.open(tb, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o640, 1_600_000_000
            tf.addfile(ti, io.BytesIO(data))
    j = add(nano, tb, "nd", "1")
    assert j["files"] == 4, j
    show = {e["path"]: e for e in nano("store", "show", "nd@1", "--json").json()["entries"]}
    assert sorted(p for p, e in show.items() if e["type"] == "directory") == \
        ["", "p", "p/q", "p/q/r", "p/q/r/s", "x", "x/y"]
    co = workdir / "co"
    nano("store", "checkout", "nd@1", co)
    for name, data in files.items():
        assert (co / name).read_bytes() == data
        assert stat.S_IMODE((co / name).stat().st_mode) == 0o640
        assert (co / name).stat().st_mtime == 1_600_000_000
        assert nano("store", "cat", "nd@1", name, text=False).stdout == data


def test_add_counts_describe_the_release(nano, workdir):
    """add --json's files/directories/symlinks/bytes are those of the release that was stored,
    as ls and show see it: a tar that omits directories, and one that has a member twice
    (the last one wins, as tar extracts it)."""
    tb = workdir / "t.tar"
    with tarfile.open(tb, "w") as tf:
        for name, data in (("x/y/z", b"deep\n"), ("a", b"first version\n"), ("a", b"second\n")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    j = add(nano, tb, "t", "1")
    assert nano("store", "cat", "t@1", "a").stdout == "second\n"
    entries = nano("store", "show", "t@1", "--json").json()["entries"]
    want = {"files": sum(e["type"] == "file" for e in entries),
            "directories": sum(e["type"] == "directory" for e in entries),
            "symlinks": sum(e["type"] == "symlink" for e in entries),
            "bytes": sum(e["size"] for e in entries if e["type"] == "file")}
    assert want == {"files": 2, "directories": 3, "symlinks": 0, "bytes": 12}
    ls = nano("store", "ls", "--json").json()[0]
    assert (ls["files"], ls["size"]) == (want["files"], want["bytes"])
    assert {k: j[k] for k in want} == want, j


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="dpkg-deb not installed (Debian package dpkg)")
@pytest.mark.parametrize("compression", ["xz", "gzip", "none"])
def test_deb(nano, workdir, compression):
    pkg = make_tree(workdir / "pkg", {
        "DEBIAN": {"control": "Package: nano-test-pkg\nVersion: 1.0-1\nArchitecture: all\n"
                              "Maintainer: Nano Tests <nano@example.org>\nDescription: test\n"},
        "usr": {"bin": {"hello": ("mode", 0o755, b"#!/bin/sh\necho hello from a deb\n")},
                "share": {"doc": {"nano-test-pkg": {"README": text_like(3, 40 * KiB)}},
                          "link": ("symlink", "../bin/hello")}},
    })
    deb = workdir / "p.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", pkg, deb],
                   check=True, capture_output=True)
    j = add(nano, deb, "deb", "1")
    assert j["files"] == 2 and j["symlinks"] == 1, j
    assert nano("store", "cat", "deb@1", "usr/bin/hello", text=False).stdout == \
        (pkg / "usr/bin/hello").read_bytes()
    show = {e["path"]: e for e in nano("store", "show", "deb@1", "--json").json()["entries"]}
    assert show["usr/bin/hello"]["mode"] == 0o755
    assert show["usr/share/link"]["target"] == "../bin/hello"
    assert not any("DEBIAN" in p or p.endswith("control") for p in show), \
        f"the control archive leaked into the release: {sorted(show)}"
    data = pkg / "usr" / "share" / "doc" / "nano-test-pkg" / "README"
    assert show["usr/share/doc/nano-test-pkg/README"]["blob"] == "sha256:" + sha256_file(data)


# ---- dedup, ls, show, du, rm, gc ----

def dedup_tree(top, n=40, size=24 * KiB):
    return make_tree(top, {f"f{i:03}.txt": text_like(1000 + i, size + i) for i in range(n)}
                     | {"sub": {f"g{i}.bin": os.urandom(8 * KiB) for i in range(4)}})


def test_dedup_changed_files(nano, nano_home, workdir):
    v1 = dedup_tree(workdir / "v1")
    add(nano, v1, "app", "1")
    before = store_size(nano_home)

    v2 = workdir / "v2"
    shutil.copytree(v1, v2, symlinks=True)
    all_files = sorted(p for p in v2.rglob("*") if p.is_file())
    changed = all_files[::20]  # 5%
    assert len(changed) == 3
    bound = 0
    for i, p in enumerate(changed):
        data = text_like(5000 + i, p.stat().st_size + 17)
        p.write_bytes(data)
        bound += zstd_size(data)
    j = add(nano, v2, "app", "2")
    assert j["new_objects"] == len(changed), j
    assert j["existed"] is False
    growth = store_size(nano_home) - before
    manifest = fanout(nano_home / "store" / "manifests", j["id"]).stat().st_size
    assert growth - manifest < 1.5 * bound + 4 * KiB, \
        f"store grew by {growth} B (manifest {manifest} B) for {len(changed)} changed files " \
        f"whose compressed sizes add up to {bound} B"

    # Identical re-add: nothing new at all.
    snap = store_files(nano_home)
    j = add(nano, v2, "app", "2")
    assert j["new_objects"] == 0 and j["new_bytes"] == 0 and j["existed"] is True, j
    assert store_files(nano_home) == snap
    # The same tree under another version: one more ref, no object, no manifest.
    j3 = add(nano, v2, "app", "3")
    assert j3["new_objects"] == 0 and j3["id"] == j["id"], j3
    after = store_files(nano_home)
    assert set(after) - set(snap) == {"refs/app/3"}
    co = workdir / "co"
    nano("store", "checkout", "app@2", co)
    assert_same_tree(v2, co)


def test_add_existing_release_with_other_content(nano, nano_home, workdir):
    a = make_tree(workdir / "a", {"f": b"first\n"})
    b = make_tree(workdir / "b", {"f": b"second\n"})
    rid = add(nano, a, "x", "1")["id"]
    r = nano("store", "add", b, "--name", "x", "--version", "1", check=False)
    assert r.returncode == 5, f"want exit 5 (exists)\n{r}"
    assert "x@1" in r.stderr, r
    assert (nano_home / "store" / "refs" / "x" / "1").read_text() == rid + "\n"
    assert nano("store", "cat", "x@1", "f").stdout == "first\n"
    assert nano("store", "fsck").returncode == 0
    assert tmp_entries(nano_home) == []


def two_releases(nano, workdir):
    """A and B share most files; A has 3 files of its own, B 2."""
    shared = {f"s{i}": text_like(i, 30 * KiB) for i in range(8)}
    a = make_tree(workdir / "A", shared | {"only-a": {f"a{i}": os.urandom(20 * KiB) for i in range(3)}})
    b = make_tree(workdir / "B", shared | {"only-b": {f"b{i}": os.urandom(20 * KiB) for i in range(2)},
                                           "link": ("symlink", "s0")})
    ja = add(nano, a, "a", "1")
    jb = add(nano, b, "b", "1")
    return a, b, ja, jb


def test_ls_show_du(nano, nano_home, workdir):
    a, b, ja, jb = two_releases(nano, workdir)
    ca, cb = source_counts(a), source_counts(b)
    ls = nano("store", "ls", "--json").json()
    assert isinstance(ls, list) and len(ls) == 2
    by = {(x["name"], x["version"]): x for x in ls}
    assert by[("a", "1")] == {"name": "a", "version": "1", "id": ja["id"], "files": ca["files"], "size": ca["bytes"]}
    assert by[("b", "1")] == {"name": "b", "version": "1", "id": jb["id"], "files": cb["files"], "size": cb["bytes"]}
    table = nano("store", "ls").stdout
    assert re.search(r"^a\s+1\s", table, re.M) and re.search(r"^b\s+1\s", table, re.M), table

    du = nano("store", "du", "--json").json()
    unique = ca["digests"] | cb["digests"]
    files = store_files(nano_home, ("objects", "manifests"))
    stored = sum(files.values())
    n_obj = sum(1 for k in files if k.startswith("objects/"))
    assert du["releases"] == 2
    assert du["logical_bytes"] == ca["bytes"] + cb["bytes"]
    assert du["unique_bytes"] == sum(unique.values())
    assert du["objects"] == n_obj == len(unique)
    assert du["manifests"] == 2
    assert du["stored_bytes"] == stored
    blocks = 0
    top = nano_home / "store"
    for k in files:
        blocks += (top / k).lstat().st_blocks * 512
    assert du["disk_bytes"] == blocks
    assert du["dedup_ratio"] > 1
    assert du["dedup_ratio"] == pytest.approx(du["logical_bytes"] / du["unique_bytes"])
    assert du["compression_ratio"] == pytest.approx(du["unique_bytes"] / du["stored_bytes"])
    assert "releases" in nano("store", "du").stdout


def test_rm_then_gc(nano, nano_home, workdir):
    a, b, ja, jb = two_releases(nano, workdir)
    ca, cb = source_counts(a), source_counts(b)
    # gc on a clean store frees nothing.
    snap = store_files(nano_home)
    g = nano("store", "gc", "--json").json()
    assert g == {"objects": 0, "manifests": 0, "temporaries": 0, "bytes": 0}, g
    assert store_files(nano_home) == snap

    r = nano("store", "rm", "a@1")
    assert "a@1" in r.stdout + r.stderr
    assert [x["name"] for x in nano("store", "ls", "--json").json()] == ["b"]
    r = nano("store", "show", "a@1", check=False)
    assert r.returncode == 3, r
    assert store_files(nano_home, ("objects", "manifests")) == \
        {k: v for k, v in snap.items() if not k.startswith("refs/")}, "rm must not delete content; gc does"

    g = nano("store", "gc", "--json").json()
    only_a = set(ca["digests"]) - set(cb["digests"])
    assert g["objects"] == len(only_a) == 3 and g["manifests"] == 1 and g["temporaries"] == 0, g
    after = store_files(nano_home)
    freed = {k: v for k, v in snap.items() if k not in after and not k.startswith("refs/")}
    assert g["bytes"] == sum(freed.values()), (g, freed)
    assert object_digests(nano_home) == set(cb["digests"])
    assert not fanout(nano_home / "store" / "manifests", ja["id"]).exists()
    co = workdir / "co"
    nano("store", "checkout", "b@1", co)
    assert_same_tree(b, co)
    assert nano("store", "fsck").returncode == 0
    g = nano("store", "gc", "--json").json()
    assert g == {"objects": 0, "manifests": 0, "temporaries": 0, "bytes": 0}, g
    assert nano("store", "gc").returncode == 0

    r = nano("store", "rm", "a@1", check=False)
    assert r.returncode == 3 and "a@1" in r.stderr, r


def test_gc_stops_at_a_root_it_cannot_read(nano, nano_home, workdir):
    """A ref or a pin that cannot be read is not "no root": gc fails and removes nothing, where
    skipping it would take that release's files."""
    if os.geteuid() == 0:
        pytest.skip("root reads files of mode 000")
    a, b, ja, jb = two_releases(nano, workdir)
    nano("store", "rm", "a@1")  # a's own files are garbage now: gc would remove them
    snap = store_files(nano_home, ("objects", "manifests"))
    pin = nano_home / "store" / "pins" / "instance:web"
    pin.parent.mkdir(exist_ok=True)
    pin.write_text(jb["id"] + "\n")
    for path, named in ((nano_home / "store" / "refs" / "b" / "1", "b@1"), (pin, "pins/")):
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(0)
        try:
            r = nano("store", "gc", check=False)
        finally:
            path.chmod(mode)
        assert r.returncode != 0 and named in r.stderr and "Permission denied" in r.stderr, r
        assert store_files(nano_home, ("objects", "manifests")) == snap
    g = nano("store", "gc", "--json").json()
    assert g["objects"] == 3 and g["manifests"] == 1, g


def test_gc_keeps_everything_while_a_root_is_malformed(nano, nano_home, workdir):
    """A malformed ref or pin named a release nobody can know: gc keeps every object and manifest
    (and says why) until fsck --repair removes it."""
    a, b, ja, jb = two_releases(nano, workdir)
    nano("store", "rm", "a@1")
    snap = store_files(nano_home, ("objects", "manifests"))
    bad_ref = nano_home / "store" / "refs" / "c" / "1"
    bad_pin = nano_home / "store" / "pins" / "instance:ghost"
    for bad in (bad_ref, bad_pin):
        bad.parent.mkdir(exist_ok=True)
        bad.write_text("sha256:not-an-id\n")
        r = nano("store", "gc")
        assert "malformed" in r.stderr and "nano store fsck" in r.stderr, r
        assert store_files(nano_home, ("objects", "manifests")) == snap
        f = nano("store", "fsck", "--json", check=False)
        where = str(bad.relative_to(nano_home / "store"))
        assert [(p["kind"], p["file"]) for p in fsck_problems(f)] == [("bad-ref", where)], f.stdout
        f = nano("store", "fsck", "--repair", "--json", check=False)
        assert f.returncode == 0 and f.json()["repaired"] == 1 and not bad.exists(), f
    g = nano("store", "gc", "--json").json()
    assert g["objects"] == 3 and g["manifests"] == 1, g


def test_fsck_checks_the_releases_of_pins(nano, nano_home, workdir):
    """A pin is a root: fsck reports the files its release lacks, once even when a ref names the
    same release."""
    a, b, ja, jb = two_releases(nano, workdir)
    pins = nano_home / "store" / "pins"
    pins.mkdir(exist_ok=True)
    (pins / "instance:web").write_text(ja["id"] + "\n")
    (pins / "instance:api").write_text(jb["id"] + "\n")
    assert nano("store", "fsck", "--json").json()["problems"] == 0
    only_a = sorted(set(source_counts(a)["digests"]) - set(source_counts(b)["digests"]))
    victim = fanout(nano_home / "store" / "objects", "sha256:" + only_a[0])
    victim.unlink()
    f = nano("store", "fsck", "--json", check=False)
    assert [(p["kind"], p["release"]) for p in fsck_problems(f)] == [("missing-object", "a@1")], f.stdout
    nano("store", "rm", "a@1")
    f = nano("store", "fsck", "--json", check=False)
    assert [(p["kind"], p["release"]) for p in fsck_problems(f)] == [("missing-object", ja["id"])], f.stdout


def test_fsck_clean_store(nano, nano_home, workdir):
    a, b, ja, jb = two_releases(nano, workdir)
    f = nano("store", "fsck", "--json").json()
    assert f["problems"] == 0 and f["problem_list"] == [] and f["repaired"] == 0, f
    assert f["objects"] == len(store_files(nano_home, ("objects",)))
    assert f["manifests"] == 2 and f["refs"] == 2
    r = nano("store", "fsck")
    assert r.returncode == 0 and "0 problems" in r.stdout, r


# ---- large file ----

def test_large_mostly_zero_file(nano, nano_home, workdir):
    src = workdir / "big"
    src.mkdir()
    f = src / "disk.img"
    size = 50 * MiB
    islands = 0
    with open(f, "wb") as fh:
        fh.truncate(size)
        rnd = random.Random(5)
        for i in range(8):
            fh.seek(rnd.randrange(0, size - 64 * KiB))
            fh.write(rnd.randbytes(64 * KiB))
            islands += 64 * KiB
        fh.seek(size - 3)
        fh.write(b"end")
    digest = sha256_file(f)
    j = add(nano, src, "big", "1")
    obj = fanout(nano_home / "store" / "objects", digest)
    assert obj.stat().st_size < islands + 256 * KiB, f"50 MiB of mostly zeros stored as {obj.stat().st_size} B"
    r = nano("store", "cat", "big@1", "disk.img", text=False)
    assert len(r.stdout) == size and hashlib.sha256(r.stdout).hexdigest() == digest
    co = workdir / "co"
    nano("store", "checkout", "big@1", co)
    assert sha256_file(co / "disk.img") == digest
    assert j["bytes"] == size


# ---- help ----

HELP = {
    "add": ["--name", "--version", "--json", "--level", "--chunk-size", "--threads", "--no-progress", "--quiet"],
    "ls": ["--json"],
    "show": ["RELEASE", "--json"],
    "cat": ["RELEASE", "PATH"],
    "checkout": ["RELEASE", "DIR"],
    "rm": ["RELEASE"],
    "gc": ["--json"],
    "fsck": ["--repair", "--json"],
    "du": ["--json"],
}


@pytest.mark.parametrize("verb", sorted(HELP))
def test_verb_help(nano, nano_home, verb):
    for flag in ("--help", "-h"):
        r = nano("store", verb, flag)
        assert r.returncode == 0 and r.stderr == "", r
        assert r.stdout.startswith(f"Usage: nano store {verb}"), r
        for word in HELP[verb]:
            assert word in r.stdout, f"`nano store {verb} --help` does not mention {word}\n{r.stdout}"
    assert not (nano_home / "store" / "refs").exists() or not os.listdir(nano_home / "store" / "refs")


def test_store_help_lists_verbs(nano):
    out = nano("store", "--help").stdout
    for verb in HELP:
        assert re.search(rf"^\s+{verb}\b", out, re.M), f"`nano store --help` does not list {verb}\n{out}"
