# SPDX-License-Identifier: LGPL-2.1-or-later
"""`nano mount`: corruption (EIO on the bad chunk only, one log line naming the object), the
daemon's life cycle (kill -9 and a stale mount, busy and lazy unmounts, SIGTERM, foreground,
idempotent and concurrent mounts, --status), user namespaces, and the daemon's memory with many
releases (doc/mount.md)."""

import errno
import hashlib
import os
import random
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from nanotest import make_tree, processes_using, sanitizer_report
from test_mount import CHUNK, KiB, MiB, assert_same_tree, errno_of, is_mounted, mount_count, \
    mounter, pid_alive, status, wait_for  # noqa: F401 (mounter is a fixture)


def hello_tree(top):
    rng = random.Random(9)
    return make_tree(top, {
        "hello.txt": b"hello from the store\n",
        "data.bin": rng.randbytes(3 * CHUNK + 17),
        "sub": {"x": b"x\n"},
    }, mtime_ns=1_600_000_000_000_000_001)


def daemon_pid(nano_bin, home, mp=None):
    st = status(nano_bin, home, mp)
    assert st["state"] == "mounted" and st["alive"] and st["pid"], st
    return st["pid"]


# ---- 8. corruption ----

def frame_ranges(obj):
    """[(start, end)] of each zstd frame in a blob container (doc/formats.md)."""
    data = obj.read_bytes()
    size, shift, n = struct.unpack_from("<QII", data, len(data) - 40)
    assert data[-8:] == b"NANOBEND" and (1 << shift) == CHUNK and n == -(-size // CHUNK), (size, shift, n)
    table = len(data) - 40 - 16 * n
    ends = [struct.unpack_from("<Q", data, table + 16 * i)[0] for i in range(n)]
    return list(zip([8] + ends[:-1], ends))


def flip_in_frame(obj, k, mask):
    """XORs mask into the byte in the middle of frame k of the blob container obj."""
    start, end = frame_ranges(obj)[k]
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:
        f.seek((start + end) // 2)
        b = f.read(1)
        f.seek((start + end) // 2)
        f.write(bytes([b[0] ^ mask]))
    os.chmod(obj, 0o444)


def test_corrupt_chunk_gives_eio_there_only(nano, nano_home, workdir, mounter, require_fuse):
    rng = random.Random(8)
    src = make_tree(workdir / "src", {
        "big.bin": rng.randbytes(8 * CHUNK + 1000),
        "other.bin": rng.randbytes(2 * CHUNK + 5),
        "small.txt": b"small\n",
    })
    nano("store", "add", src, "--name", "c", "--version", "1")
    entries = {e["path"]: e for e in nano("store", "show", "c@1", "--json").json()["entries"]}
    blob = entries["big.bin"]["blob"]
    h = blob.split(":", 1)[1]
    obj = nano_home / "store" / "objects" / h[:2] / h[2:]
    assert len(frame_ranges(obj)) == 9
    flip_in_frame(obj, 5, 0x40)  # before the first read through the mount: nothing is cached

    mp = mounter(nano_home)
    data = (src / "big.bin").read_bytes()
    fd = os.open(mp / "c" / "1" / "big.bin", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead into the bad chunk
        for k in range(9):
            off = k * CHUNK
            if k == 5:
                for o in (off, off + 1000, off + CHUNK - 4096):
                    assert errno_of(os.pread, fd, 4096, o) == errno.EIO, f"chunk 5 at {o}"
            else:
                assert os.pread(fd, CHUNK, off) == data[off:off + CHUNK], f"chunk {k}"
        # again: the error is not cached as data
        assert errno_of(os.pread, fd, 100, 5 * CHUNK + 7) == errno.EIO
        # a read running into the bad chunk: an error, or the good bytes before it, never others
        try:
            got = os.pread(fd, 2 * CHUNK, 4 * CHUNK + 10)
        except OSError as e:
            assert e.errno == errno.EIO
        else:
            assert len(got) < CHUNK and got == data[4 * CHUNK + 10:4 * CHUNK + 10 + len(got)]
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        (mp / "c" / "1" / "big.bin").read_bytes()
    assert e.value.errno == errno.EIO
    assert (mp / "c" / "1" / "other.bin").read_bytes() == (src / "other.bin").read_bytes()
    assert (mp / "c" / "1" / "small.txt").read_bytes() == b"small\n"

    log = (nano_home / "mount.log").read_text()
    lines = [line for line in log.splitlines() if h in line]
    assert len(lines) == 1, f"expected one line naming {blob} in mount.log:\n{log}"
    assert "big.bin" in lines[0] and "chunk 5" in lines[0] and "corrupt" in lines[0], lines[0]


def test_corrupt_chunk_read_out_of_order(nano, nano_home, workdir, mounter, require_fuse):
    """A file read out of order has its chunks decompressed ahead in the background (doc/mount.md,
    "Decompression ahead"): a corrupt chunk met there is left to the reads, which get EIO, and is
    logged once; the other chunks read right."""
    rng = random.Random(12)
    src = make_tree(workdir / "src", {"lib.so": rng.randbytes(12 * CHUNK + 300)})
    nano("store", "add", src, "--name", "o", "--version", "1")
    blob = nano("store", "show", "o@1", "--json").json()["entries"]
    blob = next(e["blob"] for e in blob if e["path"] == "lib.so")
    h = blob.split(":", 1)[1]
    obj = nano_home / "store" / "objects" / h[:2] / h[2:]
    flip_in_frame(obj, 7, 0x01)

    mp = mounter(nano_home)
    data = (src / "lib.so").read_bytes()
    fd = os.open(mp / "o" / "1" / "lib.so", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        # the start, then a jump: the whole file is queued for decompression ahead
        assert os.pread(fd, 4096, 0) == data[:4096]
        assert os.pread(fd, 4096, 11 * CHUNK) == data[11 * CHUNK:11 * CHUNK + 4096]
        for _ in range(3):
            for k in (10, 3, 8, 1, 12, 6, 2, 9, 4, 0, 5):
                off = k * CHUNK + 123
                assert os.pread(fd, 1000, off) == data[off:off + 1000], f"chunk {k}"
            for off in (7 * CHUNK, 7 * CHUNK + 5000, 8 * CHUNK - 1):
                assert errno_of(os.pread, fd, 100, off) == errno.EIO, f"chunk 7 at {off}"
            time.sleep(0.05)  # let the background work meet the bad chunk too
    finally:
        os.close(fd)

    log = (nano_home / "mount.log").read_text()
    lines = [line for line in log.splitlines() if h in line]
    assert len(lines) == 1, f"expected one line naming {blob} in mount.log:\n{log}"
    assert "chunk 7" in lines[0] and "corrupt" in lines[0], lines[0]


# ---- 9. life cycle ----

def test_kill9_leaves_a_stale_mount_that_mount_cleans(nano, nano_bin, nano_home, workdir, mounter,
                                                      require_fuse):
    src = hello_tree(workdir / "src")
    nano("store", "add", src, "--name", "a", "--version", "1")
    mp = mounter(nano_home)
    pid = daemon_pid(nano_bin, nano_home)
    assert int((nano_home / "mount.pid").read_text().split()[0]) == pid
    assert (mp / "a" / "1" / "hello.txt").read_bytes() == b"hello from the store\n"

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, f"daemon {pid} gone after SIGKILL")
    assert errno_of(os.listdir, mp) == errno.ENOTCONN
    assert errno_of(os.statvfs, mp) == errno.ENOTCONN
    assert errno_of(open, mp / "a" / "1" / "data.bin", "rb") == errno.ENOTCONN
    st = status(nano_bin, nano_home)
    assert st["state"] == "stale" and st["alive"] is False, st

    r = nano("mount")
    assert Path(r.stdout.strip()) == mp
    assert "stale" in r.stderr.lower(), r  # the notice
    assert mount_count(mp) == 1, "the stale mount is still under the new one"
    pid2 = daemon_pid(nano_bin, nano_home)
    assert pid2 != pid and pid_alive(pid2)
    assert_same_tree(src, mp / "a" / "1")


def test_umount_busy_then_lazy(nano, nano_bin, nano_home, workdir, mounter, require_fuse):
    src = hello_tree(workdir / "src")
    nano("store", "add", src, "--name", "a", "--version", "1")
    mp = mounter(nano_home)
    pid = daemon_pid(nano_bin, nano_home)
    data = (src / "data.bin").read_bytes()

    # a working directory under the mount
    sleeper = subprocess.Popen(["sleep", "60"], cwd=mp / "a" / "1" / "sub")
    try:
        r = nano("umount", check=False)
        assert r.returncode == 1 and "busy" in r.stderr and "--lazy" in r.stderr, r
        assert is_mounted(mp) and pid_alive(pid)
    finally:
        sleeper.kill()
        sleeper.wait()

    # an open file
    fd = os.open(mp / "a" / "1" / "data.bin", os.O_RDONLY)
    try:
        r = nano("umount", check=False)
        assert r.returncode == 1 and "busy" in r.stderr, r
        assert is_mounted(mp) and pid_alive(pid)
        assert status(nano_bin, nano_home)["state"] == "mounted"
        assert os.pread(fd, 100, CHUNK - 50) == data[CHUNK - 50:CHUNK + 50]

        r = nano("umount", "--lazy")
        assert not is_mounted(mp)
        assert not os.path.exists(mp / "a")
        # the open file keeps working, served by the daemon still there
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, len(data) + 10, 0) == data
        assert pid_alive(pid)
    finally:
        os.close(fd)
    wait_for(lambda: not pid_alive(pid), 10, "daemon exits once the last file is closed")
    st = status(nano_bin, nano_home)
    assert st["state"] == "not-mounted" and not st["mounted"] and st["pid"] is None, st
    assert not (nano_home / "mount.pid").exists() and not (nano_home / "mount.state").exists()


def test_umount_waits_for_the_daemon_and_sigterm_unmounts(nano, nano_bin, nano_home, workdir,
                                                          mounter, require_fuse):
    src = hello_tree(workdir / "src")
    nano("store", "add", src, "--name", "a", "--version", "1")
    mp = mounter(nano_home)
    pid = daemon_pid(nano_bin, nano_home)
    nano("umount")
    assert not pid_alive(pid), "`nano umount` returned before its daemon exited"
    assert not is_mounted(mp)
    assert os.path.isdir(mp) and os.listdir(mp) == []

    mp = mounter(nano_home, None, "--debug")
    pid = daemon_pid(nano_bin, nano_home)
    assert (mp / "a" / "1" / "sub" / "x").read_bytes() == b"x\n"
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid), 10, "daemon exits on SIGTERM")
    assert not is_mounted(mp)
    assert not (nano_home / "mount.pid").exists()
    assert status(nano_bin, nano_home)["state"] == "not-mounted"
    log = (nano_home / "mount.log").read_text()
    assert log.count("starting") == 2, log
    assert "LOOKUP" in log.split("starting")[2], "--debug logs every request"


def test_foreground_mount(nano_bin, nano_home, workdir, require_fuse):
    src = hello_tree(workdir / "src")
    subprocess.run([nano_bin, "store", "add", src, "--name", "a", "--version", "1"], check=True,
                   env=dict(os.environ, NANO_HOME=os.fspath(nano_home)), capture_output=True)
    mp = workdir / "fg mnt"
    mp.mkdir()
    p = subprocess.Popen([nano_bin, "mount", "-f", mp], env=dict(os.environ, NANO_HOME=os.fspath(nano_home)),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline().decode().strip()
        assert Path(line) == mp, line
        assert is_mounted(mp)
        assert (mp / "a" / "1" / "hello.txt").read_bytes() == b"hello from the store\n"
        st = status(nano_bin, nano_home, mp)
        assert st["pid"] == p.pid and st["state"] == "mounted", st
    finally:
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail("nano mount -f did not exit on SIGINT")
    assert p.returncode == 0, err
    assert sanitizer_report(err) is None, err.decode("utf-8", "replace")
    assert not is_mounted(mp)


def test_mount_idempotent_status_truthful(nano, nano_bin, nano_home, workdir, mounter,
                                          require_fuse):
    src = hello_tree(workdir / "src")
    nano("store", "add", src, "--name", "a", "--version", "1")
    default_mp = nano_home / "mnt"
    st = status(nano_bin, nano_home)
    assert st["state"] == "not-mounted" and st["mounted"] is False and st["pid"] is None, st
    assert st["alive"] is False and Path(st["mountpoint"]) == default_mp
    assert Path(st["log"]) == nano_home / "mount.log"

    mp = mounter(nano_home)
    assert mp == default_mp
    st = status(nano_bin, nano_home)
    assert st["state"] == "mounted" and st["mounted"] is True and st["alive"] is True, st
    assert Path(st["daemon_mountpoint"]) == mp
    assert st["cache_size"] == 64 * MiB and st["threads"] == 16, st
    assert pid_alive(st["pid"])
    assert "mounted" in nano("mount", "--status").stdout

    # again: nothing new, same daemon, one mount
    again = mounter(nano_home)
    assert again == mp
    assert status(nano_bin, nano_home)["pid"] == st["pid"]
    assert mount_count(mp) == 1
    nano("umount")
    st = status(nano_bin, nano_home)
    assert st["state"] == "not-mounted" and st["pid"] is None and not st["alive"], st

    # a mount point of our own, with a space in it, and options
    mine = workdir / "my mnt"
    r = nano("mount", mine, check=False)  # only the default mount point is created
    assert r.returncode != 0 and str(mine) in r.stderr and not mine.exists(), r
    mine.mkdir()
    got = mounter(nano_home, mine, "--cache-size", "16M", "--threads", "4")
    assert got == mine
    st = status(nano_bin, nano_home, mine)
    assert st["state"] == "mounted" and Path(st["daemon_mountpoint"]) == mine, st
    assert st["cache_size"] == 16 * MiB and st["threads"] == 4, st
    assert (mine / "a" / "1" / "hello.txt").read_bytes() == b"hello from the store\n"
    # one daemon per store: the default mount point is not mounted, and mounting there is refused
    assert status(nano_bin, nano_home)["state"] == "not-mounted"
    r = nano("mount", check=False)
    assert r.returncode != 0 and str(mine) in r.stderr, r
    # another store cannot mount over this one
    home2 = workdir / "home2"
    home2.mkdir()
    r = nano("mount", mine, home=home2, check=False)
    assert r.returncode != 0 and r.stderr.strip(), r
    assert mount_count(mine) == 1
    assert status(nano_bin, nano_home, mine)["state"] == "mounted"
    nano("umount", mine)
    assert not is_mounted(mine)


def test_concurrent_mounts_start_one_daemon(nano_bin, nano_home, workdir, mounter, require_fuse):
    src = hello_tree(workdir / "src")
    env = dict(os.environ, NANO_HOME=os.fspath(nano_home))
    subprocess.run([nano_bin, "store", "add", src, "--name", "a", "--version", "1"], check=True,
                   env=env, capture_output=True)
    # The race is narrow: rounds of 8 at once, until one round shows a failure.
    failures = []
    rounds = 15
    for rnd in range(rounds):
        procs = [subprocess.Popen([nano_bin, "mount"], env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]
        outs = [p.communicate(timeout=60) for p in procs]
        mp = mounter(nano_home)  # registers the mount for the teardown unmount; a no-op itself
        assert mount_count(mp) == 1
        for p, (out, err) in zip(procs, outs):
            assert sanitizer_report(err) is None, err
            if p.returncode != 0 or Path(out.strip()) != mp:
                failures.append(f"round {rnd}: exit {p.returncode}: {out.strip()} {err.strip()}")
        if failures:
            break
        if rnd + 1 < rounds:  # the last round's mount stays, to be checked below
            subprocess.run([nano_bin, "umount"], env=env, check=True, capture_output=True)
    assert not failures, "\n".join(failures)
    pid = daemon_pid(nano_bin, nano_home)
    assert processes_using(nano_home) == [pid]
    assert (mp / "a" / "1" / "hello.txt").read_bytes() == b"hello from the store\n"


def test_mount_in_user_namespace(nano_bin, nano_home, workdir, require_fuse, require_userns):
    src = hello_tree(workdir / "src")
    env = dict(os.environ, NANO_HOME=os.fspath(nano_home), NANO=os.fspath(nano_bin))
    subprocess.run([nano_bin, "store", "add", src, "--name", "a", "--version", "1"], check=True,
                   env=env, capture_output=True)
    mp = workdir / "ns-mnt"
    mp.mkdir()
    env["MP"] = os.fspath(mp)
    script = ('set -e; "$NANO" mount "$MP"; cat "$MP/a/1/hello.txt"; stat -c "uid=%u" "$MP/a/1/hello.txt"; '
              'sha256sum "$MP/a/1/data.bin"; grep -c " $MP .* - fuse.nano " /proc/self/mountinfo; '
              '"$NANO" mount --status --json "$MP"; "$NANO" umount "$MP"; echo unmounted')
    r = subprocess.run(["unshare", "-Urm", "sh", "-c", script], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    assert sanitizer_report(r.stderr) is None, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == str(mp)
    assert lines[1] == "hello from the store"
    assert lines[2] == "uid=0"  # the mounting user, root of the namespace
    assert lines[3].split()[0] == hashlib.sha256((src / "data.bin").read_bytes()).hexdigest()
    assert lines[4] == "1"
    assert '"state":"mounted"' in lines[5]
    assert lines[-1] == "unmounted"
    assert not is_mounted(mp)  # never visible outside the namespace
    wait_for(lambda: processes_using(nano_home) == [], 10, "daemon in the namespace exits")
    log = (nano_home / "mount.log").read_text()
    assert "unmounted, exiting" in log, log


# ---- 10. memory ----

def test_daemon_memory_with_many_releases(nano, nano_bin, nano_home, workdir, mounter,
                                          require_fuse):
    rng = random.Random(10)
    src = workdir / "src"
    files = []
    for i in range(200):
        p = src / f"d{i % 10}" / f"f{i:03d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randrange(100, 20 * KiB)))
        files.append(p)
    versions = 50
    t0 = time.monotonic()
    for v in range(1, versions + 1):
        if v > 1:
            for p in rng.sample(files, 3):
                p.write_bytes(rng.randbytes(rng.randrange(100, 20 * KiB)))
        nano("store", "add", src, "--name", "m", "--version", str(v), "-q")
    added = time.monotonic() - t0
    cache = 16 * MiB
    mp = mounter(nano_home, None, "--cache-size", "16M")
    pid = daemon_pid(nano_bin, nano_home)
    n = nbytes = 0
    for v in range(1, versions + 1):
        top = mp / "m" / str(v)
        for dirpath, dirnames, names in os.walk(top):
            for name in names:
                p = os.path.join(dirpath, name)
                os.lstat(p)
                with open(p, "rb") as f:
                    nbytes += len(f.read())
                n += 1
    assert n == versions * 200
    assert_same_tree(src, mp / "m" / str(versions))
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    rss = int(fields["VmRSS"].split()[0]) * KiB
    hwm = int(fields["VmHWM"].split()[0]) * KiB
    asan = "libasan" in open(f"/proc/{pid}/maps").read() or b"__asan_init" in Path(nano_bin).read_bytes()
    limit = 64 * MiB + cache
    print(f"\n{versions} releases added in {added:.1f} s; {n} files ({nbytes / MiB:.1f} MiB) read; "
          f"daemon VmRSS {rss / MiB:.1f} MiB, VmHWM {hwm / MiB:.1f} MiB "
          f"(limit {limit / MiB:.0f} MiB{', ASan build: not enforced' if asan else ''})")
    if asan:
        pytest.skip(f"ASan build: shadow memory and quarantine make RSS meaningless "
                    f"(measured {rss / MiB:.1f} MiB; the limit is checked on the normal build)")
    assert rss < limit, f"daemon RSS {rss / MiB:.1f} MiB >= {limit / MiB:.0f} MiB"


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return {k: int(fields[k].split()[0]) * KiB for k in ("VmRSS", "VmHWM")}


def test_daemon_memory_with_large_chunks(nano, nano_bin, nano_home, workdir, mounter, require_fuse):
    """doc/mount.md, the chunk cache: with 16 MiB chunks, twice as large as a shard's share of a 32M
    cache, the daemon keeps the cache's budget and one chunk more, plus what its reads hold while
    they are answered (16 shards kept one chunk each, and the buffer pool 32 whole chunks: 529 MB
    measured with the default 64M cache)."""
    rng = random.Random(11)
    src = workdir / "src"
    src.mkdir()
    size = 64 * MiB + 12345
    for i in range(4):  # 4 chunks each, 16 in all: one per shard, as many as the old cache kept
        (src / f"f{i}.bin").write_bytes(rng.randbytes(size))  # incompressible: frames are 16 MiB too
    nano("store", "add", src, "--name", "big", "--version", "1", "--chunk-size", "16M", "-q")
    cache, chunk, readers = 32 * MiB, 16 * MiB, 4
    mp = mounter(nano_home, None, "--cache-size", "32M")
    pid = daemon_pid(nano_bin, nano_home)
    base = proc_status(pid)["VmRSS"]

    errors = []

    def read(seed):
        r = random.Random(seed)
        try:
            fds = [(os.open(mp / "big" / "1" / f"f{i}.bin", os.O_RDONLY), open(src / f"f{i}.bin", "rb"))
                   for i in range(4)]
            for fd, _ in fds:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # one request per read: no readahead
            for _ in range(12):
                fd, f = r.choice(fds)
                off = r.randrange(0, size - 4096)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the daemon answers every read
                f.seek(off)
                assert os.pread(fd, 4096, off) == f.read(4096), off
            for fd, f in fds:
                os.close(fd)
                f.close()
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            errors.append(e)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    st = proc_status(pid)
    # Kept: the budget, the newest chunk larger than a share, the buffer pool (here one chunk's
    # buffer), the one spare frame buffer (a frame of random bytes is a chunk's size), and the daemon
    # itself. While reads are answered, each holds its chunk and its compressed frame.
    overhead = 3 * chunk + 32 * MiB
    limit = cache + overhead
    peak_limit = limit + readers * 2 * chunk
    asan = "libasan" in open(f"/proc/{pid}/maps").read() or b"__asan_init" in Path(nano_bin).read_bytes()
    print(f"\ndaemon VmRSS {base / MiB:.1f} MiB at start, {st['VmRSS'] / MiB:.1f} MiB after the reads "
          f"(limit {limit / MiB:.0f} MiB), VmHWM {st['VmHWM'] / MiB:.1f} MiB (limit {peak_limit / MiB:.0f} MiB)"
          f"{'; ASan build: not enforced' if asan else ''}")
    if asan:
        pytest.skip("ASan build: shadow memory and quarantine make RSS meaningless (the limits are "
                    "checked on the normal build)")
    assert st["VmRSS"] < limit, f"daemon RSS {st['VmRSS'] / MiB:.1f} MiB >= {limit / MiB:.0f} MiB"
    assert st["VmHWM"] < peak_limit, f"daemon VmHWM {st['VmHWM'] / MiB:.1f} MiB >= {peak_limit / MiB:.0f} MiB"
