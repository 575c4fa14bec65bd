# SPDX-License-Identifier: LGPL-2.1-or-later
"""Memory stays bounded whatever the file or tree size, and the examples import as documented."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from nanotest import REPO_ROOT, tree_digest

# Peak RSS allowed for an import, whatever the input: 64 chunks of 256 KiB in flight, one zstd
# context per thread, the manifest being built. Sanitizer builds carry shadow memory on top.
RSS_LIMIT_KB = 64 * 1024
RSS_LIMIT_ASAN_KB = 320 * 1024


def is_sanitized(nano_bin):
    with open(nano_bin, "rb") as f:
        return b"__asan_init" in f.read()


def peak_rss_kb(nano_bin, home, *args):
    """Runs nano in a fresh Python process whose only child it is, and returns that child's peak RSS."""
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True)\n"
             "sys.stderr.buffer.write(r.stderr)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    env = dict(os.environ, NANO_HOME=str(home))
    # ASan keeps freed memory in a quarantine (256 MiB by default): measure nano, not the quarantine.
    if "ASAN_OPTIONS" in env or is_sanitized(nano_bin):
        env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "quarantine_size_mb=16"]))
    out = subprocess.run([sys.executable, "-c", probe, str(nano_bin), *args], env=env,
                         capture_output=True, text=True, timeout=300)
    assert "AddressSanitizer" not in out.stderr and "runtime error:" not in out.stderr, out.stderr
    code, rss = out.stdout.split()
    assert code == "0", out.stderr
    print(f"peak RSS of `nano {' '.join(args[:2])}`: {int(rss)} KiB")
    return int(rss)


def write_big_file(path, size):
    """Mostly zeros (fast to compress) with random islands every 8 MiB, so every chunk is real work."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 8 << 20):
            f.seek(off)
            f.write(os.urandom(4096))


@pytest.fixture
def limit(nano_bin):
    return RSS_LIMIT_ASAN_KB if is_sanitized(nano_bin) else RSS_LIMIT_KB


def test_big_file_from_directory_bounded(nano, nano_bin, nano_home, workdir, limit):
    src = workdir / "src"
    src.mkdir()
    write_big_file(src / "big", 768 << 20)
    rss = peak_rss_kb(nano_bin, nano_home, "store", "add", str(src), "--name", "big", "--version", "1", "-q")
    assert rss < limit, f"peak RSS {rss} KiB for a 768 MiB file"
    out = workdir / "out"
    nano("store", "checkout", "big@1", str(out))
    assert tree_digest(out) == tree_digest(src)


def test_big_member_from_tar_bounded(nano, nano_bin, nano_home, workdir, limit):
    big = workdir / "big"
    write_big_file(big, 512 << 20)
    tar = workdir / "big.tar"
    with tarfile.open(tar, "w") as t:
        t.add(big, arcname="big")
    rss = peak_rss_kb(nano_bin, nano_home, "store", "add", str(tar), "--name", "bigtar", "--version", "1", "-q")
    assert rss < limit, f"peak RSS {rss} KiB for a 512 MiB archive member"
    r = nano("store", "show", "bigtar@1", "--json").json()
    sizes = {e["path"]: e["size"] for e in r["entries"]}
    assert sizes["big"] == 512 << 20


def test_many_files_bounded(nano_bin, nano_home, workdir, limit):
    src = workdir / "many"
    for d in range(10):
        sub = src / f"d{d:02}"
        sub.mkdir(parents=True)
        for i in range(500):
            (sub / f"f{i:04}").write_bytes(b"%d/%d\n" % (d, i))
    rss = peak_rss_kb(nano_bin, nano_home, "store", "add", str(src), "--name", "many", "--version", "1", "-q")
    assert rss < limit, f"peak RSS {rss} KiB for 5,000 files"


def test_examples_import_and_share_content(nano, workdir):
    releases = REPO_ROOT / "examples" / "releases"
    ids = {}
    for v in ("1.0", "2.0"):
        out = nano("store", "add", str(releases / f"hello-{v}"), "--name", "hello", "--version", v,
                   "--json").json()
        ids[v] = out["id"]
        assert out["release"] == f"hello@{v}"
    assert ids["1.0"] != ids["2.0"]
    du = nano("store", "du", "--json").json()
    assert du["releases"] == 2
    assert du["dedup_ratio"] > 1.0, "serve.py is shared by both versions and must be stored once"
    for v in ("1.0", "2.0"):
        dest = workdir / f"hello-{v}"
        nano("store", "checkout", f"hello@{v}", str(dest))
        assert tree_digest(dest) == tree_digest(releases / f"hello-{v}")
        run = subprocess.run([str(dest / "bin" / "hello")], env=dict(os.environ, NANO_INSTANCE_NAME="t"),
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 0
        assert run.stdout.startswith(f"hello {v} from t: ")
