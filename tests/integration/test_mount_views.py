# SPDX-License-Identifier: LGPL-2.1-or-later
"""`nano mount`: the views (/<name>/<version>, /by-id/sha256:<id>), releases added and removed
while mounted, and identical files as one inode sharing one page-cache copy (doc/mount.md)."""

import errno
import os
import random
import re
import shutil
import stat

import pytest

from nanotest import make_tree
from test_mount import CHUNK, MiB, assert_same_tree, copy_tree, errno_of, fincore_pages, \
    mounter, wait_for  # noqa: F401 (mounter is a fixture)

LIVE_TIMEOUT = 5.0  # doc/mount.md: root and name entries live 1 s


def small_tree(top, seed, extra=None):
    rng = random.Random(seed)
    spec = {
        "README": f"release {seed}\n",
        "bin": {"tool": ("mode", 0o755, b"#!/bin/sh\necho tool\n")},
        "lib": {"data.bin": rng.randbytes(CHUNK + 100), "sub": {"x.txt": b"x\n"}},
        "link": ("symlink", "lib/sub/x.txt"),
    }
    spec.update(extra or {})
    make_tree(top, spec, mtime_ns=1_600_000_000_123_456_789)
    return top


def test_views_and_by_id(nano, nano_home, workdir, mounter, require_fuse):
    a1 = small_tree(workdir / "a1", 1)
    a2 = workdir / "a2"
    copy_tree(a1, a2)
    (a2 / "README").write_bytes(b"release 2\n")
    ids = {}
    for src, name, ver in ((a1, "a", "1"), (a2, "a", "2"), (a1, "b", "1")):
        ids[f"{name}@{ver}"] = nano("store", "add", src, "--name", name, "--version", ver,
                                    "--json").json()["id"]
    assert ids["a@1"] == ids["b@1"] != ids["a@2"]
    mp = mounter(nano_home)

    assert sorted(os.listdir(mp)) == ["a", "b", "by-id"]
    assert sorted(os.listdir(mp / "a")) == ["1", "2"]
    assert os.listdir(mp / "b") == ["1"]
    assert sorted(os.listdir(mp / "by-id")) == sorted({ids["a@1"], ids["a@2"]})
    st = os.lstat(mp)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555
    assert st.st_nlink == 2 + 2 + 1  # names, plus by-id
    assert st.st_ino == 1
    for d, n in ((mp / "a", 2), (mp / "b", 1), (mp / "by-id", None)):
        s = os.lstat(d)
        assert stat.S_ISDIR(s.st_mode) and stat.S_IMODE(s.st_mode) == 0o555, d
        if n is not None:
            assert s.st_nlink == 2 + n, d
        assert (s.st_uid, s.st_gid) == (os.getuid(), os.getgid())

    # every view shows the tree
    assert_same_tree(a1, mp / "a" / "1")
    assert_same_tree(a2, mp / "a" / "2")
    assert_same_tree(a1, mp / "b" / "1")
    assert_same_tree(a1, mp / "by-id" / ids["a@1"])
    assert_same_tree(a2, mp / "by-id" / ids["a@2"])

    # a file is one inode in every view; a directory is one per tree (name@version or by-id)
    views = [mp / "a" / "1", mp / "b" / "1", mp / "by-id" / ids["a@1"]]
    inos = {os.lstat(v / "lib" / "data.bin").st_ino for v in views}
    inos.add(os.lstat(mp / "a" / "2" / "lib" / "data.bin").st_ino)
    assert len(inos) == 1
    dirs = [os.lstat(v / "lib").st_ino for v in views]
    assert len(set(dirs)) == 3
    # .. of a directory is its own parent in each view
    for v in views:
        assert os.path.samefile(v / "lib" / "sub" / "..", v / "lib")
        assert os.path.samefile(v / "lib" / "..", v)

    # names that are not there
    for p in (mp / "nosuch", mp / "a" / "9", mp / "a" / "1" / "nosuch", mp / "by-id" / "garbage",
              mp / "by-id" / ("sha256:" + "0" * 64), mp / "by-id" / ("sha256:" + "0" * 63),
              mp / "a" / "1" / "README" / "x"):
        assert errno_of(os.lstat, p) in (errno.ENOENT, errno.ENOTDIR), p
    assert errno_of(os.lstat, mp / "a" / "1" / "README" / "x") == errno.ENOTDIR
    assert errno_of(os.listdir, mp / "a" / "1" / "README") == errno.ENOTDIR


def test_releases_come_and_go(nano, nano_home, workdir, mounter, require_fuse):
    a1 = small_tree(workdir / "a1", 1)
    nano("store", "add", a1, "--name", "a", "--version", "1")
    mp = mounter(nano_home)
    assert sorted(os.listdir(mp)) == ["a", "by-id"]
    assert errno_of(os.lstat, mp / "c") == errno.ENOENT  # a negative lookup first
    assert sorted(os.listdir(mp / "a")) == ["1"]

    # added while mounted: visible without remounting
    c1 = small_tree(workdir / "c1", 3, {"only-in-c": b"c\n"})
    cid = nano("store", "add", c1, "--name", "c", "--version", "1", "--json").json()["id"]
    took = wait_for(lambda: (mp / "c" / "1" / "only-in-c").exists(), LIVE_TIMEOUT, "c@1 added")
    print(f"\nc@1 visible after {took:.2f} s")
    assert (mp / "c" / "1" / "only-in-c").read_bytes() == b"c\n"
    assert sorted(os.listdir(mp)) == ["a", "by-id", "c"]
    assert cid in os.listdir(mp / "by-id")
    a2 = small_tree(workdir / "a2", 2)
    nano("store", "add", a2, "--name", "a", "--version", "2")
    wait_for(lambda: sorted(os.listdir(mp / "a")) == ["1", "2"], LIVE_TIMEOUT, "a@2 listed")
    assert_same_tree(a2, mp / "a" / "2")
    # the name directory's attributes live 1 s: its st_nlink follows
    wait_for(lambda: os.lstat(mp / "a").st_nlink == 4, LIVE_TIMEOUT, "st_nlink of a = 2 + 2 versions")

    # removed while mounted: gone from listings and lookups
    nano("store", "rm", "a@1")
    wait_for(lambda: os.listdir(mp / "a") == ["2"] and not os.path.lexists(mp / "a" / "1"),
             LIVE_TIMEOUT, "a@1 removed")
    nano("store", "rm", "c@1")
    wait_for(lambda: "c" not in os.listdir(mp) and not os.path.lexists(mp / "c"), LIVE_TIMEOUT,
             "c removed")
    assert errno_of(os.lstat, mp / "c" / "1") == errno.ENOENT
    assert cid not in os.listdir(mp / "by-id")  # lists current releases only
    # but the manifest is still in the store: by-id still finds it (until gc)
    assert (mp / "by-id" / cid / "only-in-c").read_bytes() == b"c\n"

    # removed, then added again with other content: the new content shows
    c1b = small_tree(workdir / "c1b", 4, {"only-in-c": b"other c\n"})
    nano("store", "add", c1b, "--name", "c", "--version", "1")
    wait_for(lambda: (mp / "c" / "1" / "only-in-c").exists(), LIVE_TIMEOUT, "c@1 added again")
    wait_for(lambda: (mp / "c" / "1" / "only-in-c").read_bytes() == b"other c\n", LIVE_TIMEOUT,
             "c@1 shows its new content")
    assert_same_tree(c1b, mp / "c" / "1")
    # the last release of a name gone: the name goes too, even while its directory was open
    fd = os.open(mp / "a", os.O_RDONLY | os.O_DIRECTORY)
    try:
        nano("store", "rm", "a@2")
        wait_for(lambda: "a" not in os.listdir(mp), LIVE_TIMEOUT, "a removed")
    finally:
        os.close(fd)
    assert sorted(os.listdir(mp)) == ["by-id", "c"]


def test_by_id_gone_after_gc(nano, nano_home, workdir, mounter, require_fuse):
    """doc/mount.md: by-id/<id> entries live 1 s because gc may remove a manifest. A directory
    kept open there (a process's working directory, say) keeps working; its name goes."""
    c1 = small_tree(workdir / "c1", 3)
    cid = nano("store", "add", c1, "--name", "c", "--version", "1", "--json").json()["id"]
    mp = mounter(nano_home)
    assert_same_tree(c1, mp / "by-id" / cid)
    fd = os.open(mp / "by-id" / cid, os.O_RDONLY | os.O_DIRECTORY)
    try:
        nano("store", "rm", "c@1")
        nano("store", "gc")
        h = cid.split(":", 1)[1]
        assert not (nano_home / "store" / "manifests" / h[:2] / h[2:]).exists()
        assert sorted(os.listdir(fd)) == sorted(os.listdir(c1))
        wait_for(lambda: not os.path.lexists(mp / "by-id" / cid), 3.0,
                 "by-id/<id> gone after rm + gc")
    finally:
        os.close(fd)


def test_identical_files_share_inode_and_page_cache(nano, nano_home, workdir, mounter,
                                                   require_fuse):
    rng = random.Random(6)
    t = 1_650_000_000_000_000_007
    v1 = make_tree(workdir / "v1", {
        "same.bin": rng.randbytes(2 * MiB + 5),
        "changed.bin": rng.randbytes(MiB),
        "mode.bin": rng.randbytes(300_000),
        "mtime.bin": rng.randbytes(300_000),
        "dir": {"nested.bin": rng.randbytes(70_000)},
        "dup1": b"duplicate\n", "dup2": b"duplicate\n",
    }, mtime_ns=t)
    v2 = workdir / "v2"
    copy_tree(v1, v2)
    with open(v2 / "changed.bin", "r+b") as f:
        f.seek(MiB // 2)
        f.write(b"changed")
    os.utime(v2 / "changed.bin", ns=(t, t))
    os.chmod(v2 / "mode.bin", 0o755)
    os.utime(v2 / "mtime.bin", ns=(t + 1, t + 1))
    shutil.copy2(v2 / "same.bin", v2 / "renamed-same.bin")
    nano("store", "add", v1, "--name", "r", "--version", "1")
    nano("store", "add", v2, "--name", "r", "--version", "2")
    mp = mounter(nano_home, env={"NANO_LOG_LEVEL": "info"})  # chunk cache counts at exit
    a, b = mp / "r" / "1", mp / "r" / "2"
    ino = lambda p: os.lstat(p).st_ino  # noqa: E731
    assert ino(a / "same.bin") == ino(b / "same.bin") == ino(b / "renamed-same.bin")
    assert ino(a / "dir" / "nested.bin") == ino(b / "dir" / "nested.bin")
    assert ino(a / "dup1") == ino(a / "dup2") == ino(b / "dup2")
    assert os.lstat(a / "dup1").st_nlink == 1
    for name in ("changed.bin", "mode.bin", "mtime.bin"):
        assert ino(a / name) != ino(b / name), name
    assert ino(a / "dir") != ino(b / "dir")
    assert_same_tree(v1, a)
    assert_same_tree(v2, b)

    # one inode is one page-cache copy: what is read through r@1 is cached for r@2
    if not shutil.which("fincore"):
        pytest.skip("fincore (util-linux) missing: the page cache cannot be inspected unprivileged")
    for p in (mp / "r" / "1", mp / "r" / "2"):
        for name in ("same.bin", "mtime.bin", "changed.bin"):
            os.posix_fadvise(fd := os.open(p / name, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    size = os.lstat(v1 / "same.bin").st_size
    pages = -(-size // 4096)
    assert fincore_pages(b / "same.bin") == 0
    assert (a / "same.bin").read_bytes() == (v1 / "same.bin").read_bytes()
    assert (a / "mtime.bin").read_bytes() == (v1 / "mtime.bin").read_bytes()
    assert (a / "changed.bin").read_bytes() == (v1 / "changed.bin").read_bytes()
    assert fincore_pages(b / "same.bin") == pages
    assert fincore_pages(b / "renamed-same.bin") == pages
    assert fincore_pages(b / "mtime.bin") == 0  # another inode, another copy
    assert fincore_pages(b / "changed.bin") == 0
    assert (b / "same.bin").read_bytes() == (v2 / "same.bin").read_bytes()
    assert (b / "changed.bin").read_bytes() == (v2 / "changed.bin").read_bytes()

    # each chunk of each distinct content was decompressed once, whatever the views and re-reads:
    # same.bin, changed.bin twice (v1, v2), mode.bin, mtime.bin, nested.bin, dup (one content for
    # mode.bin and mtime.bin in both releases: chunks are keyed by content)
    sizes = [2 * MiB + 5, MiB, MiB, 300_000, 300_000, 70_000, len(b"duplicate\n")]
    want = sum(-(-n // CHUNK) for n in sizes)
    nano("umount", mp)
    log = (nano_home / "mount.log").read_text()
    m = re.search(r"chunk cache: (\d+) hits .*?, (\d+) misses, (\d+) errors", log)
    assert m, log
    hits, misses, errs = map(int, m.groups())
    print(f"\nchunk cache: {hits} hits, {misses} misses")
    assert (misses, errs) == (want, 0), log


def test_release_named_by_id_is_hidden(nano, nano_home, workdir, mounter, require_fuse):
    """`store add --name by-id` is refused (the name is reserved), but a store written by an older
    nano or by hand may have refs/by-id/: the root shows `by-id` once, the view, and the daemon
    says once that the release is hidden."""
    a1 = small_tree(workdir / "a1", 1)
    aid = nano("store", "add", a1, "--name", "a", "--version", "1", "--json").json()["id"]
    refs = nano_home / "store" / "refs"
    (refs / "by-id").mkdir()
    (refs / "by-id" / "1").write_text(aid + "\n")
    mp = mounter(nano_home)

    for _ in range(2):
        assert sorted(os.listdir(mp)) == ["a", "by-id"]
    assert os.lstat(mp).st_nlink == 2 + 1 + 1  # a, and the view
    assert os.listdir(mp / "by-id") == [aid]
    assert errno_of(os.lstat, mp / "by-id" / "1") == errno.ENOENT
    assert_same_tree(a1, mp / "by-id" / aid)
    # a walk sees the view once
    tops = [os.path.relpath(d, mp) for d, _, _ in os.walk(mp)]
    assert tops.count("by-id") == 1 and tops.count(f"by-id/{aid}") == 1 and "by-id/1" not in tops

    log = (nano_home / "mount.log").read_text()
    assert log.count("release name 'by-id' is hidden by the by-id view") == 1, log
    # the store still reads and removes it
    assert "by-id" in nano("store", "ls").stdout
    nano("store", "rm", "by-id@1")
    wait_for(lambda: sorted(os.listdir(mp)) == ["a", "by-id"] and os.lstat(mp).st_nlink == 4,
             LIVE_TIMEOUT, "root unchanged after rm by-id@1")
