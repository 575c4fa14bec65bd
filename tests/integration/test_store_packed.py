# SPDX-License-Identifier: LGPL-2.1-or-later
"""Packed manifests (doc/formats.md, "Packed manifest"; doc/store.md): a new version of a release
stores its manifest as a zstd delta against the previous version's, and everything that reads
manifests (show, cat, checkout, gc, fsck, du, the mount) still sees the canonical bytes its id
names. Expected values come from the source trees and the store's files, never from nano's output."""

import hashlib
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from nanotest import checkout_equal, fsck_problems as problems, tree_digest
from test_mount import assert_same_tree, mounter  # noqa: F401 (a fixture)

PACK_MAGIC = b"NANOMPK\x01"
CANON_MAGIC = b"NANOMAN\x01"
DEPTH_MAX = 8
N_FILES = 600


# ---- helpers ----

def versioned_tree(top, version):
    """Version `version` of a tree of 600 files in 20 directories: file i is rewritten (content and
    mtime) by every version k with k % 20 == i % 20, so each version changes 5 % of the files of the
    one before it (bench/make-tree.py does the same to a real tree)."""
    top = Path(top)
    for i in range(N_FILES):
        gen = sum(1 for k in range(1, version + 1) if k % 20 == i % 20)
        d = top / f"dir-{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"file-{i:04d}.txt"
        p.write_text(f"file {i}, generation {gen}\n" * (1 + i % 7))
        os.utime(p, ns=(1_700_000_000_000_000_000 + gen * 10**9,) * 2)
    for d in list(top.iterdir()) + [top]:
        os.utime(d, ns=(1_600_000_000_000_000_000,) * 2)
    return top


def add(nano, src, name, version, *opts):
    r = nano("store", "add", src, "--name", name, "--version", version, "--json", "--no-progress", *opts)
    j = r.json()
    assert j["release"] == f"{name}@{version}", r
    return j


def manifest_file(home, ident):
    h = ident.split(":", 1)[1]
    return Path(home) / "store" / "manifests" / h[:2] / h[2:]


def header(path):
    """(canonical size, depth, base id or None) of a packed manifest file; None if canonical."""
    data = Path(path).read_bytes()
    if data[:8] == CANON_MAGIC:
        return None
    assert data[:8] == PACK_MAGIC, f"{path}: neither a canonical nor a packed manifest"
    size, depth, flags = struct.unpack_from("<QII", data, 8)
    base = data[24:56]
    assert flags == 0
    return size, depth, ("sha256:" + base.hex() if depth else None)


def zstd_decode(path, base=None):
    """The canonical bytes of a packed manifest, decoded with the zstd tool as doc/formats.md says."""
    frame = Path(path).read_bytes()[64:]
    cmd = ["zstd", "-d", "-q", "-c", "--memory=256MB"]
    if base is not None:
        cmd += ["--patch-from", os.fspath(base)]
    return subprocess.run(cmd, input=frame, capture_output=True, check=True).stdout


# ---- tests ----

def test_second_version_stores_a_small_delta(nano, nano_home, workdir):
    v1 = versioned_tree(workdir / "v1", 1)
    v2 = versioned_tree(workdir / "v2", 2)
    j1 = add(nano, v1, "app", "1")
    j2 = add(nano, v2, "app", "2")
    m1, m2 = manifest_file(nano_home, j1["id"]), manifest_file(nano_home, j2["id"])

    # v1: no base, plain zstd of its manifest (names compress well).
    size1, depth1, base1 = header(m1)
    assert depth1 == 0 and base1 is None
    assert m1.stat().st_size < size1 / 2, (m1.stat().st_size, size1)
    # v2: packed against v1, and much smaller than v1's (30 entries of 621 changed).
    size2, depth2, base2 = header(m2)
    assert depth2 == 1 and base2 == j1["id"]
    assert size2 == size1
    assert m2.stat().st_size * 5 < m1.stat().st_size, (m2.stat().st_size, m1.stat().st_size)
    assert m2.stat().st_size < 30 * 80, m2.stat().st_size
    # What the import reports as new bytes includes the stored (packed) manifest.
    assert j2["new_objects"] == N_FILES // 20, j2

    # The files are what doc/formats.md says: the zstd tool decodes them, to the bytes of their id.
    if shutil.which("zstd"):
        c1 = zstd_decode(m1)
        assert "sha256:" + hashlib.sha256(c1).hexdigest() == j1["id"]
        (workdir / "c1").write_bytes(c1)
        c2 = zstd_decode(m2, workdir / "c1")
        assert "sha256:" + hashlib.sha256(c2).hexdigest() == j2["id"]
        assert len(c2) == size2

    # Everything that reads manifests reads them.
    for rel, src in (("app@1", v1), ("app@2", v2)):
        checkout_equal(nano, workdir, rel, src)
    assert nano("store", "cat", "app@2", "dir-02/file-0002.txt").stdout == \
        (v2 / "dir-02" / "file-0002.txt").read_text()
    show = nano("store", "show", "app@2", "--json").json()
    assert sum(1 for e in show["entries"] if e["type"] == "file") == N_FILES
    ls = {f"{e['name']}@{e['version']}": e for e in nano("store", "ls", "--json").json()}
    assert ls["app@2"]["files"] == N_FILES and ls["app@2"]["id"] == j2["id"]
    assert nano("store", "fsck").returncode == 0
    # du counts manifests as stored; logical bytes are the trees' own.
    du = nano("store", "du", "--json").json()
    src_bytes = sum(p.stat().st_size for t in (v1, v2) for p in t.rglob("*") if p.is_file())
    assert du["logical_bytes"] == src_bytes, du
    objects = sum(p.stat().st_size for p in (nano_home / "store" / "objects").rglob("*") if p.is_file())
    assert du["stored_bytes"] == objects + m1.stat().st_size + m2.stat().st_size, du


def test_rm_base_release_then_gc_keeps_the_base(nano, nano_home, workdir):
    v1 = versioned_tree(workdir / "v1", 1)
    v2 = versioned_tree(workdir / "v2", 2)
    j1 = add(nano, v1, "app", "1")
    # Without delta objects, whose bases gc keeps too (test_store_delta.py).
    j2 = add(nano, v2, "app", "2", "--no-delta")
    assert header(manifest_file(nano_home, j2["id"]))[2] == j1["id"]

    nano("store", "rm", "app@1")
    g = nano("store", "gc", "--json").json()
    # v1's manifest file stays (v2 is packed against it); the objects only v1 used go.
    assert manifest_file(nano_home, j1["id"]).is_file()
    assert g["manifests"] == 0 and g["objects"] == N_FILES // 20, g
    checkout_equal(nano, workdir, "app@2", v2)
    assert nano("store", "fsck").returncode == 0
    assert [e["version"] for e in nano("store", "ls", "--json").json()] == ["2"]

    # Once nothing needs it, it goes too.
    nano("store", "rm", "app@2")
    g = nano("store", "gc", "--json").json()
    assert g["manifests"] == 2, g
    assert not any(p.is_file() for p in (nano_home / "store" / "manifests").rglob("*"))


def test_a_release_kept_only_as_a_base_cannot_be_run(nano, nano_home, workdir, require_fuse):
    """gc keeps the manifest of a removed release that another is packed against, not its files:
    `nano run` of it by id (or by a name resolved before the rm and gc) is refused, where pinning
    it would start an instance whose files read EIO."""
    v1 = versioned_tree(workdir / "v1", 1)
    j1 = add(nano, v1, "app", "1")
    add(nano, versioned_tree(workdir / "v2", 2), "app", "2", "--no-delta")
    run = ("run", "--rm", "--isolate", "bare", j1["id"], "--",
           "sh", "-c", "cat $NANO_RELEASE/dir-01/file-0001.txt")
    try:
        nano("store", "rm", "app@1")
        # Removed but not collected: every file is there, it runs.
        assert nano(*run).stdout == (v1 / "dir-01" / "file-0001.txt").read_text()
        nano("store", "gc")
        assert manifest_file(nano_home, j1["id"]).is_file()
        r = nano(*run, check=False)
        assert r.returncode != 0 and "no longer whole" in r.stderr and "add it again" in r.stderr, r
        assert nano("ps", "--json").json() == []
        pins = nano_home / "store" / "pins"
        assert not pins.exists() or not any(pins.iterdir())
        # Added again, it is whole and named by a ref.
        add(nano, v1, "app", "1")
        assert nano(*run).stdout == (v1 / "dir-01" / "file-0001.txt").read_text()
    finally:
        for _ in range(100):
            r = nano("umount", check=False)
            if r.returncode == 0 or "busy" not in r.stderr:
                break
            time.sleep(0.1)


def test_fsck_names_the_releases_a_missing_base_breaks(nano, nano_home, workdir):
    trees = [versioned_tree(workdir / f"v{k}", k) for k in (1, 2, 3)]
    ids = [add(nano, t, "app", str(k))["id"] for k, t in enumerate(trees, 1)]
    assert header(manifest_file(nano_home, ids[2]))[1:] == (2, ids[1])
    base = manifest_file(nano_home, ids[0])
    base_rel = f"manifests/{ids[0][7:9]}/{ids[0][9:]}"
    os.unlink(base)

    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4, f
    probs = problems(f)
    for release in ("app@2", "app@3"):
        assert any(p["release"] == release and p["kind"] == "missing-manifest" and p["file"] == base_rel
                   for p in probs), f"no problem names {release} and {base_rel}:\n{f}"
    assert any(p["release"] == "app@1" and p["file"] == "refs/app/1" for p in probs), f
    assert any(p["release"] is None and p["file"] == base_rel for p in probs), f"{base_rel} not reported once\n{f}"
    r = nano("store", "show", "app@3", check=False)
    assert r.returncode == 4 and "corrupt" in r.stderr, r

    # --repair cannot fix it, and must not remove the manifests that need the base.
    f = nano("store", "fsck", "--repair", "--json", check=False)
    assert f.returncode == 4, f
    assert manifest_file(nano_home, ids[1]).is_file() and manifest_file(nano_home, ids[2]).is_file()
    # gc keeps them too, and every object while it cannot know what they need.
    objects = sorted(p for p in (nano_home / "store" / "objects").rglob("*") if p.is_file())
    g = nano("store", "gc", "--json")
    assert "cannot be read" in g.stderr, g
    assert g.json()["objects"] == 0, g
    assert manifest_file(nano_home, ids[1]).is_file() and manifest_file(nano_home, ids[2]).is_file()
    assert sorted(p for p in (nano_home / "store" / "objects").rglob("*") if p.is_file()) == objects

    # Adding v1 again restores the base (its newer versions cannot be its base now: they do not
    # decode), and with it the whole chain.
    j = add(nano, trees[0], "app", "1")
    assert j["id"] == ids[0]
    assert header(base)[1] == 0
    assert nano("store", "fsck").returncode == 0
    for k, t in enumerate(trees, 1):
        checkout_equal(nano, workdir, f"app@{k}", t)


def test_corrupt_base_is_repaired_and_its_dependents_kept(nano, nano_home, workdir):
    v1 = versioned_tree(workdir / "v1", 1)
    v2 = versioned_tree(workdir / "v2", 2)
    j1 = add(nano, v1, "app", "1")
    j2 = add(nano, v2, "app", "2")
    m1, m2 = manifest_file(nano_home, j1["id"]), manifest_file(nano_home, j2["id"])
    data = bytearray(m1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(m1, 0o644)
    m1.write_bytes(bytes(data))

    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4, f
    rel1 = f"manifests/{j1['id'][7:9]}/{j1['id'][9:]}"
    probs = problems(f)
    assert any(p["kind"] == "corrupt-manifest" and p["file"] == rel1 and p["release"] is None for p in probs), f
    assert any(p["release"] == "app@2" and p["file"] == rel1 for p in probs), f"app@2 not named\n{f}"
    r = nano("store", "cat", "app@2", "dir-02/file-0002.txt", check=False)
    assert r.returncode == 4 and r.stdout == "", r

    # --repair removes the corrupt base, never the sound manifest packed against it.
    nano("store", "fsck", "--repair", check=False)
    assert not m1.exists() and m2.is_file()
    add(nano, v1, "app", "1")
    assert nano("store", "fsck").returncode == 0
    checkout_equal(nano, workdir, "app@2", v2)


def test_damaged_manifest_is_written_again_without_base(nano, nano_home, workdir):
    v1 = versioned_tree(workdir / "v1", 1)
    v2 = versioned_tree(workdir / "v2", 2)
    add(nano, v1, "app", "1")
    j2 = add(nano, v2, "app", "2")
    m2 = manifest_file(nano_home, j2["id"])
    # What a power cut can leave of an unsynced rename: an empty file.
    os.chmod(m2, 0o644)
    m2.write_bytes(b"")
    r = nano("store", "show", "app@2", check=False)
    assert r.returncode == 4, r

    j = add(nano, v2, "app", "2")
    assert j["id"] == j2["id"] and j["existed"] is True
    assert header(m2)[1] == 0
    assert nano("store", "fsck").returncode == 0
    checkout_equal(nano, workdir, "app@2", v2)


def test_chain_restarts_at_the_depth_limit(nano, nano_home, workdir):
    depths, ids = [], []
    for k in range(1, DEPTH_MAX + 4):
        t = versioned_tree(workdir / "tree", k)
        j = add(nano, t, "app", str(k))
        ids.append(j["id"])
        h = header(manifest_file(nano_home, j["id"]))
        depths.append(h[1])
        if h[1]:
            assert h[2] == ids[-2], f"app@{k} is not packed against app@{k - 1}"
    assert depths == list(range(DEPTH_MAX + 1)) + [0, 1], depths
    assert nano("store", "fsck").returncode == 0
    checkout_equal(nano, workdir, f"app@{DEPTH_MAX + 1}", versioned_tree(workdir / "check", DEPTH_MAX + 1))
    checkout_equal(nano, workdir, f"app@{DEPTH_MAX + 3}", workdir / "tree")


def test_small_release_stays_canonical(nano, nano_home, workdir):
    src = workdir / "small"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("hello\n")
    j = add(nano, src, "small", "1")
    assert manifest_file(nano_home, j["id"]).read_bytes()[:8] == CANON_MAGIC


def test_mount_reads_packed_releases(nano, nano_bin, nano_home, workdir, mounter):
    trees = [versioned_tree(workdir / f"v{k}", k) for k in (1, 2, 3)]
    ids = [add(nano, t, "app", str(k))["id"] for k, t in enumerate(trees, 1)]
    assert header(manifest_file(nano_home, ids[2]))[1] == 2
    (workdir / "mnt").mkdir()
    mp = mounter(nano_home, workdir / "mnt")
    for k, t in enumerate(trees, 1):
        assert_same_tree(t, mp / "app" / str(k))
    assert_same_tree(trees[2], mp / "by-id" / ids[2])
