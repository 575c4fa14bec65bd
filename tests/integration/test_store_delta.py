# SPDX-License-Identifier: LGPL-2.1-or-later
"""Delta objects (doc/formats.md, "Blob container"; doc/store.md, "Delta objects"): a file that
changed since the previous version of a release is stored as a delta of that version's file, and
everything that reads objects (cat, checkout, the mount, fsck, gc) still gets the content its id
names. Expected values come from the source trees and the store's files, never from nano's output."""

import errno
import hashlib
import os
import random
import shutil
import tarfile
from pathlib import Path

import pytest

from nanotest import checkout_equal, fsck_problems as problems, run_nano, tree_digest
from test_mount import is_mounted, mounter  # noqa: F401 (a fixture)

PLAIN = b"NANOBLB\x01"
DELTA = b"NANOBLB\x02"
TRAILER = 40
CHANGE = 64


# ---- helpers ----

def make_v1(top):
    """Incompressible files (only a base can shrink them): small ones, one of 3 chunks and a half,
    one of 1 MiB; and text files that compress well on their own."""
    rnd = random.Random(7)
    top = Path(top)
    (top / "bin").mkdir(parents=True)
    (top / "share").mkdir()
    for i in range(12):
        (top / "bin" / f"tool-{i:02d}").write_bytes(rnd.randbytes(3000 + 977 * i))
    (top / "bin" / "big").write_bytes(rnd.randbytes(3 * 131072 + 65536))
    (top / "bin" / "huge").write_bytes(rnd.randbytes(1 << 20))
    for i in range(8):
        (top / "share" / f"doc-{i}.txt").write_text(f"documentation {i}\n" * (50 + 40 * i))
    return top


def make_next(src, dst, seed, names):
    """A copy of src in which each file of `names` gets 64 bytes appended (even positions) or
    overwritten in its middle (odd ones), as bench/make-tree.py changes its v2."""
    shutil.copytree(src, dst)
    rnd = random.Random(seed)
    for k, rel in enumerate(names):
        p = Path(dst) / rel
        data = bytearray(p.read_bytes())
        blob = rnd.randbytes(CHANGE)
        if k % 2 == 0:
            data += blob
        else:
            mid = len(data) // 2
            data[mid:mid + CHANGE] = blob
        p.write_bytes(bytes(data))
    return Path(dst)


CHANGED = ["bin/tool-03", "bin/tool-08", "bin/big", "bin/huge", "share/doc-2.txt"]


def add(nano, src, name, version, *opts):
    r = nano("store", "add", src, "--name", name, "--version", version, "--json", "--no-progress", *opts)
    return r.json()


def two_versions(nano, workdir):
    """v1 and v2 (CHANGED changed) made in workdir and added as app@1 and app@2."""
    v1 = make_v1(workdir / "v1")
    v2 = make_next(v1, workdir / "v2", 1, CHANGED)
    add(nano, v1, "app", "1")
    add(nano, v2, "app", "2")
    return v1, v2


def object_path(home, digest_hex):
    return Path(home) / "store" / "objects" / digest_hex[:2] / digest_hex[2:]


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def base_of(path):
    """The base id named by a delta container (32 bytes before its trailer), or None if plain."""
    data = Path(path).read_bytes()
    if data[:8] == PLAIN:
        return None
    assert data[:8] == DELTA, f"{path}: not a blob container"
    return data[-TRAILER - 32:-TRAILER].hex()


def objects(home):
    top = Path(home) / "store" / "objects"
    return {p.parent.name + p.name: p for p in top.glob("*/*")}


def stored_bytes(home):
    return sum(p.stat().st_size for p in objects(home).values())


def flip(path, offset):
    os.chmod(path, 0o644)
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x5A
    Path(path).write_bytes(bytes(data))


# ---- tests ----

def test_changed_files_are_stored_as_deltas(nano, nano_home, workdir):
    v1 = make_v1(workdir / "v1")
    v2 = make_next(v1, workdir / "v2", 1, CHANGED)
    add(nano, v1, "app", "1")
    before = stored_bytes(nano_home)
    j2 = add(nano, v2, "app", "2")
    added = stored_bytes(nano_home) - before
    changed_bytes = sum((v2 / rel).stat().st_size for rel in CHANGED)

    # Each changed file is a delta of the same path in v1, and nothing else was stored.
    assert j2["new_objects"] == len(CHANGED), j2
    for rel in CHANGED:
        assert base_of(object_path(nano_home, sha(v2 / rel))) == sha(v1 / rel), rel
    # The changed files are incompressible but for their base: what they add is their changes and
    # the containers' fixed costs, not their 1.6 MB.
    assert added < len(CHANGED) * 1024, (added, changed_bytes)
    assert added * 100 < changed_bytes, (added, changed_bytes)

    for rel, src in (("app@1", v1), ("app@2", v2)):
        checkout_equal(nano, workdir, rel, src)
    for rel in CHANGED:
        r = nano("store", "cat", "app@2", rel, text=False)
        assert r.stdout == (v2 / rel).read_bytes(), rel
    assert nano("store", "fsck").returncode == 0


def test_a_base_is_never_a_delta(nano, nano_home, workdir):
    v1 = make_v1(workdir / "v1")
    v2 = make_next(v1, workdir / "v2", 1, CHANGED)
    v3 = make_next(v2, workdir / "v3", 2, CHANGED)
    add(nano, v1, "app", "1")
    add(nano, v2, "app", "2")
    add(nano, v3, "app", "3")
    # v3's files are deltas of v1's (v2's are deltas themselves): reading one decompresses two
    # frames, never a chain.
    for rel in CHANGED:
        assert base_of(object_path(nano_home, sha(v3 / rel))) == sha(v1 / rel), rel
        assert base_of(object_path(nano_home, sha(v1 / rel))) is None
    checkout_equal(nano, workdir, "app@3", v3)


def test_no_delta_option_and_other_names(nano, nano_home, workdir):
    v1 = make_v1(workdir / "v1")
    v2 = make_next(v1, workdir / "v2", 1, CHANGED)
    add(nano, v1, "app", "1")
    # --no-delta: every new object is plain.
    add(nano, v2, "app", "2", "--no-delta")
    for rel in CHANGED:
        assert base_of(object_path(nano_home, sha(v2 / rel))) is None, rel
    # Another name has no previous version: plain too.
    v3 = make_next(v1, workdir / "v3", 3, CHANGED)
    add(nano, v3, "other", "1")
    for rel in CHANGED:
        assert base_of(object_path(nano_home, sha(v3 / rel))) is None, rel
    assert nano("store", "fsck").returncode == 0


def test_archive_import_makes_deltas(nano, nano_home, workdir):
    v1 = make_v1(workdir / "v1")
    v2 = make_next(v1, workdir / "v2", 1, CHANGED)
    add(nano, v1, "app", "1")
    tgz = workdir / "v2.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(v2, arcname=".")
    add(nano, tgz, "app", "2")
    for rel in CHANGED:
        assert base_of(object_path(nano_home, sha(v2 / rel))) == sha(v1 / rel), rel
        assert nano("store", "cat", "app@2", rel, text=False).stdout == (v2 / rel).read_bytes()
    assert nano("store", "fsck").returncode == 0


def test_gc_keeps_the_bases_of_deltas_in_use(nano, nano_home, workdir):
    v1, v2 = two_versions(nano, workdir)
    bases = {sha(v1 / rel) for rel in CHANGED}

    nano("store", "rm", "app@1")
    g = nano("store", "gc", "--json").json()
    # v1's files are all either in v2 or bases of v2's: nothing goes.
    assert g["objects"] == 0, g
    assert bases <= set(objects(nano_home)), "gc removed a base"
    checkout_equal(nano, workdir, "app@2", v2)
    assert nano("store", "fsck").returncode == 0

    nano("store", "rm", "app@2")
    g = nano("store", "gc", "--json").json()
    assert objects(nano_home) == {}, "gc left objects no release needs"
    n_files = sum(1 for p in v1.rglob("*") if p.is_file())
    assert g["objects"] == n_files + len(CHANGED), g


def test_missing_base(nano, nano_home, workdir):
    v1, v2 = two_versions(nano, workdir)
    rel = "bin/big"
    base, delta = (object_path(nano_home, sha(v / rel)) for v in (v1, v2))
    base.unlink()

    r = nano("store", "cat", "app@2", rel, check=False)
    assert r.returncode == 4 and r.stdout == "", r
    assert "the object it is a delta of is missing" in r.stderr, r

    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4, f
    dfile = f"objects/{delta.parent.name}/{delta.name}"
    probs = problems(f)
    assert any(p["file"] == dfile and p["release"] is None and "missing" in p["detail"] for p in probs), f
    assert any(p["release"] == "app@2" and p["path"] == rel for p in probs), f"app@2's {rel} not named\n{f}"
    assert any(p["release"] == "app@1" and p["path"] == rel for p in probs), f"app@1's {rel} not named\n{f}"
    # --repair keeps the sound delta: adding v1 again brings its base back, and all is whole.
    nano("store", "fsck", "--repair", check=False)
    assert delta.is_file()
    add(nano, v1, "app", "1b")
    assert nano("store", "fsck").returncode == 0
    checkout_equal(nano, workdir, "app@2", v2)


def test_corrupt_base(nano, nano_home, workdir, mounter):
    v1, v2 = two_versions(nano, workdir)
    rel = "bin/tool-03"
    base, delta = (object_path(nano_home, sha(v / rel)) for v in (v1, v2))
    flip(base, 8 + 100)  # inside its only frame

    # Through the mount: EIO for the delta's bytes, never other bytes; other files read.
    (workdir / "mnt").mkdir()
    mp = mounter(nano_home, workdir / "mnt")
    with pytest.raises(OSError) as e:
        (mp / "app" / "2" / rel).read_bytes()
    assert e.value.errno == errno.EIO
    for other in ("bin/tool-08", "bin/big", "share/doc-1.txt"):
        assert (mp / "app" / "2" / other).read_bytes() == (v2 / other).read_bytes(), other
    nano("umount", mp)

    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4, f
    probs = problems(f)
    bfile = f"objects/{base.parent.name}/{base.name}"
    dfile = f"objects/{delta.parent.name}/{delta.name}"
    assert any(p["kind"] == "corrupt-object" and p["file"] == bfile and p["release"] is None for p in probs), f
    assert any(p["file"] == dfile and "corrupt" in p["detail"] for p in probs), f
    assert any(p["release"] == "app@2" and p["path"] == rel for p in probs), f

    # --repair removes the corrupt base only; adding v1 again makes v2 whole.
    nano("store", "fsck", "--repair", check=False)
    assert not base.exists() and delta.is_file()
    add(nano, v1, "app", "1b")
    assert nano("store", "fsck").returncode == 0
    checkout_equal(nano, workdir, "app@2", v2)


def test_mount_reads_deltas(nano, nano_home, workdir, mounter):
    v1, v2 = two_versions(nano, workdir)
    (workdir / "mnt").mkdir()
    mp = mounter(nano_home, workdir / "mnt")
    assert tree_digest(mp / "app" / "2") == tree_digest(v2)
    # Random reads inside the delta chunks and across their boundaries.
    rnd = random.Random(3)
    for rel in ("bin/big", "bin/huge"):
        want = (v2 / rel).read_bytes()
        with open(mp / "app" / "2" / rel, "rb") as f:
            for _ in range(50):
                off = rnd.randrange(len(want))
                n = rnd.choice((1, 4096, 131072 + 5))
                assert os.pread(f.fileno(), n, off) == want[off:off + n], (rel, off, n)


def test_base_stored_again_as_a_delta(nano, nano_home, workdir):
    """A damaged base is removed by --repair and its deltas kept; an import of another release then
    stores the base's content again, as a delta of its own previous version. fsck says so (the base
    is sound) and --repair stores the base whole, which makes all its deltas readable again."""
    rel = "bin/big"
    v1, v2 = two_versions(nano, workdir)
    v3 = make_next(v2, workdir / "v3", 2, [rel])
    add(nano, v3, "app", "3")
    base = object_path(nano_home, sha(v1 / rel))
    deltas = [object_path(nano_home, sha(v / rel)) for v in (v2, v3)]
    assert all(base_of(d) == sha(v1 / rel) for d in deltas)

    os.chmod(base, 0o644)
    os.truncate(base, 100)
    nano("store", "fsck", "--repair", check=False)
    assert not base.exists() and all(d.is_file() for d in deltas)

    # other@2's file has the base's content, and other@1's is similar: it is stored as a delta.
    other1 = make_next(v1, workdir / "other1", 3, [rel])
    add(nano, other1, "other", "1")
    add(nano, v1, "other", "2")
    assert base_of(base) == sha(other1 / rel)
    assert nano("store", "cat", "app@2", rel, check=False).returncode == 4

    f = nano("store", "fsck", "--json", check=False)
    assert f.returncode == 4, f
    detail = f"it is a delta of object sha256:{sha(v1 / rel)}, which is itself stored as a delta"
    for d in deltas:
        dfile = f"objects/{d.parent.name}/{d.name}"
        assert any(p["file"] == dfile and p["release"] is None and p["detail"] == detail and not p["repaired"]
                   for p in problems(f)), f
    assert Path(base).read_bytes()[:8] == DELTA, "fsck without --repair wrote"

    # --repair stores the base whole, once, and both deltas are sound again.
    f = nano("store", "fsck", "--repair", "--json", check=False)
    assert f.returncode == 0, f
    assert [p["detail"] for p in problems(f)] == [detail] and f.json()["repaired"] == 1, f
    assert Path(base).read_bytes()[:8] == PLAIN
    for release, src in (("app@2", v2), ("app@3", v3), ("other@2", v1), ("other@1", other1)):
        r = nano("store", "cat", release, rel, text=False)
        assert r.stdout == (src / rel).read_bytes(), release
    f = nano("store", "fsck", "--json")
    assert f.json()["problems"] == 0, f


def test_mount_reads_more_deltas_than_descriptors_allow(nano, nano_bin, nano_home, workdir, require_fuse):
    """An open delta blob holds two descriptors (its base's too). The daemon keeps its open blobs
    under half its descriptor limit counting both, so reading more delta files than that, again
    and again, never runs it out of descriptors (a read got EMFILE before)."""
    rnd = random.Random(11)
    v1 = workdir / "v1"
    v1.mkdir()
    names = [f"f{i:03d}" for i in range(150)]
    for name in names:
        (v1 / name).write_bytes(rnd.randbytes(8000))
    v2 = make_next(v1, workdir / "v2", 2, names)
    add(nano, v1, "app", "1")
    add(nano, v2, "app", "2")
    assert all(base_of(object_path(nano_home, sha(v2 / n))) == sha(v1 / n) for n in names)
    mp = workdir / "mnt"
    mp.mkdir()
    # 128 descriptors: 64 for blobs, where 150 deltas counted as one each would take 128 and more.
    run_nano("prlimit", "--nofile=128:128", nano_bin, "mount", mp, home=nano_home)
    try:
        assert is_mounted(mp)
        for _ in range(3):
            for name in names:
                assert (mp / "app" / "2" / name).read_bytes() == (v2 / name).read_bytes(), name
        log = (nano_home / "mount.log").read_text()
        assert "Too many open files" not in log and "cannot open" not in log, log
    finally:
        nano("umount", mp, check=False)
