# SPDX-License-Identifier: LGPL-2.1-or-later
"""Crash safety and concurrency of the store, driven through the real `nano` binary.

- kill -9 of `store add` at random moments (directories and tarballs), then of `gc` and of
  `fsck --repair`: after each kill fsck passes, tmp/ is emptied, every listed release checks out
  exactly as the tree it came from, every blob a ref needs exists, and an import that finished is
  listed while one that did not is either absent or complete;
- concurrent imports sharing content while gc runs in a loop and an older release is removed;
  the same release imported twice at once (same content: both succeed; other content: one wins,
  the other exits 5);
- gc racing an import that reuses the objects of a release just removed;
- rm of a name's last version racing an add of another version of that name.

Random choices print their seed; NANO_TEST_SEED=<n> replays them.
NANO_TEST_CRASH_ITERATIONS changes the number of killed imports (default 25).
"""

import hashlib
import itertools
import os
import random
import shutil
import signal
import statistics
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from nanotest import (DEFAULT_TIMEOUT, describe, keep_tmp, make_tree, remove_workdir, sanitizer_report,
                      tree_digest)

SEED = int(os.environ.get("NANO_TEST_SEED") or random.SystemRandom().randrange(1 << 32))
ITERATIONS = int(os.environ.get("NANO_TEST_CRASH_ITERATIONS") or 25)
BLOB_MIN_SIZE = 48  # the smallest valid blob container (formats.md)

EXIT_EXISTS = 5


def rng_for(what):
    print(f"\n{what}: random seed {SEED} (replay with NANO_TEST_SEED={SEED})")
    return random.Random(f"{SEED}-{what}")


# ---- background processes ----

class NanoProc:
    """One `nano` run in its own session (so the whole group can be killed), output to log files."""

    def __init__(self, nano_bin, home, args, logdir, tag):
        self.cmd = [str(nano_bin)] + [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
        env = dict(os.environ, NANO_HOME=os.fspath(home))
        self.out_path = logdir / f"{tag}.stdout.log"
        self.err_path = logdir / f"{tag}.stderr.log"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        self.started = time.monotonic()
        self.duration = None  # seconds, when it ended by itself under kill_after()

    def kill(self):
        if self.proc.returncode is None:  # not reaped: the group id still belongs to this process
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout=DEFAULT_TIMEOUT):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(10)
            pytest.fail(f"timed out after {timeout} s\n{self}", pytrace=False)
        report = sanitizer_report(self.stderr)
        if report:
            pytest.fail(f"sanitizer report\n$ {' '.join(self.cmd)}\n{report}", pytrace=False)
        return rc

    def kill_after(self, delay):
        """SIGKILL the group `delay` seconds after the start (unless it ended), reap it, return its exit
        status (negative: the signal)."""
        left = self.started + delay - time.monotonic()
        try:
            self.proc.wait(max(left, 0))
            self.duration = time.monotonic() - self.started
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        rc = self.wait(30)
        if rc == 0 and self.duration is None:  # it ended by itself just as the kill came
            self.duration = time.monotonic() - self.started
        return rc

    @property
    def stdout(self):
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def __str__(self):
        return describe(self.cmd, self.proc.returncode, self.stdout, self.stderr)


class Ctx:
    def __init__(self, nano, nano_bin, home, workdir, data):
        self.data = Path(data)
        self.nano = nano
        self.nano_bin = nano_bin
        self.home = Path(home)
        self.store = self.home / "store"
        self.workdir = Path(workdir)
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir(exist_ok=True)
        self.procs = []
        self.counter = itertools.count()
        self.lock = threading.Lock()

    def spawn(self, *args, tag="nano"):
        with self.lock:
            n = next(self.counter)
        p = NanoProc(self.nano_bin, self.home, args, self.logdir, f"{n:04d}-{tag}")
        with self.lock:
            self.procs.append(p)
        return p

    def scratch(self, name):
        with self.lock:
            n = next(self.counter)
        return self.data / f"{name}-{n}"

    def reap_all(self):
        for p in self.procs:
            p.kill()
            try:
                p.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def data_dir(workdir):
    """Where source trees and checkouts go: tmpfs when there is room, so that the store's syncfs
    does not have to flush hundreds of MB of test data with each import (the store stays in workdir)."""
    shm = Path("/dev/shm")
    try:
        usable = shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) and shutil.disk_usage(shm).free > (4 << 30)
    except OSError:
        usable = False
    if not usable:
        d = workdir / "data"
        d.mkdir()
        yield d
        return
    d = Path(tempfile.mkdtemp(prefix="nano-crash-data-", dir=shm))
    try:
        yield d
    finally:
        if keep_tmp():
            print(f"\nNANO_TEST_KEEP: kept {d}")
        else:
            remove_workdir(d)


@pytest.fixture
def ctx(nano, nano_bin, nano_home, workdir, data_dir):
    c = Ctx(nano, nano_bin, nano_home, workdir, data_dir)
    try:
        yield c
    finally:
        c.reap_all()


# ---- trees ----

def blob(rng, n):
    """n bytes: random (incompressible), or slices of a page of words (compressible)."""
    if n == 0:
        return b""
    if rng.random() < 0.5:
        return rng.randbytes(n)
    words = [rng.randbytes(rng.randrange(2, 9)).hex().encode() for _ in range(64)]
    page = b" ".join(rng.choices(words, k=4096))
    out, total = [], 0
    while total < n:
        off = rng.randrange(len(page) // 2)
        piece = page[off:off + rng.randrange(256, len(page) // 2)] + rng.randbytes(8)
        out.append(piece)
        total += len(piece)
    return b"".join(out)[:n]


def small_size(rng):
    return rng.choice([0, 1, rng.randrange(2, 4096), rng.randrange(4096, 64 << 10), rng.randrange(4096, 64 << 10),
                       rng.randrange(64 << 10, 600 << 10)])


def gen_spec(rng, n_small, n_big, big_max, prefix=""):
    """A tree spec for make_tree: nested directories, small files of all sizes (some executable, some
    spanning several 256 KiB chunks), a few multi-MB files (some above the 4 MiB read-whole limit),
    symlinks and an empty directory."""
    spec = {"bin": {}, "lib": {"sub": {"deeper": {}}}, "share": {"doc": {}, "data": {}}, "etc": {},
            "var": {"empty": {}}}
    dirs = [spec, spec["bin"], spec["lib"], spec["lib"]["sub"], spec["lib"]["sub"]["deeper"], spec["share"]["doc"],
            spec["share"]["data"], spec["etc"]]
    for i in range(n_small):
        data = blob(rng, small_size(rng))
        rng.choice(dirs)[f"{prefix}f{i:04d}"] = ("mode", 0o755, data) if i % 13 == 0 else data
    for i in range(n_big):
        spec["share"]["data"][f"{prefix}big{i}"] = blob(rng, rng.randrange(big_max // 3, big_max))
    spec["bin"][f"{prefix}link"] = ("symlink", "../etc/some-config")
    spec["lib"][f"{prefix}link-dir"] = ("symlink", "sub/deeper")
    return spec


def regular_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    return sorted(out)


def link_farm(src, dst):
    """dst: the tree src with every regular file hard-linked (same inode, mtime, mode, content)."""
    src, dst = os.fspath(src), os.fspath(dst)
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        d = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(d, exist_ok=True)
        for name in list(dirnames) + filenames:
            s, t = os.path.join(dirpath, name), os.path.join(d, name)
            if os.path.islink(s):
                os.symlink(os.readlink(s), t)
            elif not os.path.isdir(s):
                os.link(s, t)
        dirnames[:] = [n for n in dirnames if not os.path.islink(os.path.join(dirpath, n))]
    return Path(dst)


def replace_file(path, data):
    """New content at path in a new inode (a hard-linked original stays untouched)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_bytes(data)


def mutate(rng, root, n_big=2, n_small=20, tag="m", n_new=0):
    files = regular_files(root)
    bigs = [f for f in files if os.path.getsize(os.path.join(root, f)) >= (1 << 20)]
    smalls = [f for f in files if f not in bigs]
    for f in rng.sample(bigs, min(n_big, len(bigs))):
        replace_file(Path(root, f), blob(rng, rng.randrange(1 << 20, 5 << 20)))
    for f in rng.sample(smalls, min(n_small, len(smalls))):
        replace_file(Path(root, f), blob(rng, small_size(rng)))
    replace_file(Path(root, f"{tag}-new"), blob(rng, rng.randrange(1, 200000)))
    if n_new:
        Path(root, f"{tag}-dir").mkdir()
        for i in range(n_new):
            Path(root, f"{tag}-dir", f"n{i}").write_bytes(rng.randbytes(rng.randrange(1, 2000)))
    if rng.random() < 0.3:
        Path(root, rng.choice(smalls)).unlink(missing_ok=True)


def remove_source(path, src):
    if path != src:
        os.unlink(path)
    shutil.rmtree(src)


def count_files(top):
    return sum(len(files) for _, _, files in os.walk(top))


def make_tar(src, dst):
    with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as t:
        t.add(src, arcname=".")
    return dst


# ---- checks ----

def fsck_ok(ctx, when):
    r = ctx.nano("store", "fsck", "--json", check=False, timeout=120)
    assert r.returncode == 0, f"fsck fails {when}\n{r}"
    j = r.json()
    assert j["problems"] == 0 and j["problem_list"] == [], f"fsck reports problems {when}\n{r}"
    left = os.listdir(ctx.store / "tmp")
    assert left == [], f"store/tmp is not empty after fsck {when}: {left[:10]}"
    return j


def listing(ctx):
    return {f"{e['name']}@{e['version']}": e for e in ctx.nano("store", "ls", "--json").json()}


def fanout(store, kind, ident):
    assert ident.startswith("sha256:") and len(ident) == 71, ident
    h = ident[7:]
    return store / kind / h[:2] / h[2:]


def check_ref_complete(ctx, rel, entry):
    """Every blob the release's manifest names exists as a plausible object (test 4)."""
    man = fanout(ctx.store, "manifests", entry["id"])
    assert man.is_file(), f"{rel}: the ref names manifest {entry['id']}, which is not in the store"
    show = ctx.nano("store", "show", rel, "--json").json()
    assert show["id"] == entry["id"]
    files = [e for e in show["entries"] if e["type"] == "file"]
    assert len(files) == entry["files"], f"{rel}: show lists {len(files)} files, ls says {entry['files']}"
    for e in files:
        obj = fanout(ctx.store, "objects", e["blob"])
        try:
            size = obj.stat().st_size
        except FileNotFoundError:
            pytest.fail(f"{rel}: '{e['path']}' needs object {e['blob']}, which is missing", pytrace=False)
        assert size >= BLOB_MIN_SIZE, f"{rel}: object {obj} of '{e['path']}' is {size} bytes"


def check_checkout(ctx, rel, want, mtime=True):
    co = ctx.scratch("checkout")
    ctx.nano("store", "checkout", rel, co, timeout=120)
    got = tree_digest(co, mtime=mtime)
    remove_workdir(co)
    if got != want:
        diff = sorted(set(got) ^ set(want))[:6]
        pytest.fail(f"{rel} does not check out as the tree it was made from; differences: {diff}", pytrace=False)


def verify_store(ctx, known, committed, when):
    """fsck passes and empties tmp/; every listed release is known and checks out as its tree;
    every release in committed (release -> id) is listed with that id. known: release ->
    (tree_digest, mtime compared)."""
    ctx.last_fsck = fsck_ok(ctx, when)
    ls = listing(ctx)
    for rel in ls:
        assert rel in known, f"{when}: unexpected release {rel} is listed: {sorted(ls)}"
    for rel, ident in committed.items():
        assert rel in ls, f"{when}: {rel} was imported successfully (exit 0) but is not listed"
        assert ls[rel]["id"] == ident, f"{when}: {rel} is {ls[rel]['id']}, the import printed {ident}"
    for rel, e in ls.items():
        check_ref_complete(ctx, rel, e)
        digest, mtime = known[rel]
        check_checkout(ctx, rel, digest, mtime)
    return ls


def parse_add(out, rel):
    line = out.strip().splitlines()[-1] if out.strip() else ""
    name, _, ident = line.partition(" ")
    assert name == rel and ident.startswith("sha256:"), f"unexpected output of add: {out!r}"
    return ident


def add(ctx, src, rel, *extra):
    name, version = rel.split("@")
    r = ctx.nano("store", "add", src, "--name", name, "--version", version, "--no-progress", *extra, timeout=120)
    return parse_add(r.stdout, rel)


def spawn_add(ctx, src, rel, *extra):
    name, version = rel.split("@")
    return ctx.spawn("store", "add", src, "--name", name, "--version", version, "--no-progress", *extra,
                     tag=f"add-{name}-{version}")


# ---- 1 and 4: kill -9 at random moments ----

def test_kill9_add_gc_fsck(ctx):
    rng = rng_for("kill9")
    t_start = time.monotonic()
    base = make_tree(ctx.data / "base", gen_spec(rng, n_small=320, n_big=8, big_max=7 << 20))
    known = {"base@1": (tree_digest(base), True)}
    committed = {}
    t0 = time.monotonic()
    committed["base@1"] = add(ctx, base, "base@1")
    print(f"base@1: {len(regular_files(base))} files, imported in {time.monotonic() - t0:.2f} s")
    verify_store(ctx, known, committed, "after importing base@1")

    def victim_tree(k):
        d = link_farm(base, ctx.data / f"victim-{k}")
        mutate(random.Random(f"{SEED}-victim-{k}"), d, n_big=4, n_small=60, tag=f"v{k}")
        return d

    # Calibration: how long an import of a mutated tree takes, from a directory and from a tarball
    # (which compresses every large file again before finding it is already stored). Imports that
    # end before their kill refine it.
    durations = {}
    live = []
    for kind in ("dir", "tar"):
        rel = f"victim@0{kind}"
        src = victim_tree(f"0{kind}")
        known[rel] = (tree_digest(src, mtime=kind == "dir"), kind == "dir")
        path = src if kind == "dir" else make_tar(src, ctx.data / "victim-0.tar")
        p = spawn_add(ctx, path, rel)
        assert p.wait(120) == 0, str(p)
        durations[kind] = [max(time.monotonic() - p.started, 0.01)]
        committed[rel] = parse_add(p.stdout, rel)
        live.append(rel)
        remove_source(path, src)
    print(f"a mutated import takes {durations['dir'][0]:.3f} s (directory), {durations['tar'][0]:.3f} s (tar)")

    stats = {"finished": 0, "killed, committed": 0, "killed, not committed": 0, "temporaries removed": 0,
             "killed after writing objects": 0}
    killed_dirs = {}
    for k in range(1, ITERATIONS + 1):
        rel = f"victim@{k}"
        src = victim_tree(k)
        kind = "tar" if k % 4 == 0 else "dir"
        known[rel] = (tree_digest(src, mtime=kind == "dir"), kind == "dir")
        path = src if kind == "dir" else make_tar(src, ctx.data / f"victim-{k}.tar")
        extra = rng.choice([(), ("--threads", "1"), ("--threads", "2"), ("--threads", "4")])
        delay = rng.uniform(0, 1.3 * statistics.median(durations[kind]))
        objects_before = count_files(ctx.store / "objects")
        p = spawn_add(ctx, path, rel, *extra)
        rc = p.kill_after(delay)
        when = f"after SIGKILL of `add {rel}` at {delay:.3f} s (exit status {rc})"
        if rc == 0:
            committed[rel] = parse_add(p.stdout, rel)
            durations[kind].append(p.duration)
        else:
            assert rc == -signal.SIGKILL, f"add {rel} failed before it was killed\n{p}"
        ls = verify_store(ctx, known, committed, when)
        stats["temporaries removed"] += ctx.last_fsck["temporaries"]
        if rel in ls:
            stats["killed, committed" if rc else "finished"] += 1
            live.append(rel)
            remove_source(path, src)
        else:
            stats["killed, not committed"] += 1
            # Objects are written to anonymous files (O_TMPFILE) where the filesystem allows, which a
            # kill leaves nothing of; objects that landed without a ref show the kill came mid-import.
            if count_files(ctx.store / "objects") > objects_before:
                stats["killed after writing objects"] += 1
            killed_dirs[rel] = (path, src)
            while len(killed_dirs) > 3:  # a few are kept for the re-add at the end
                remove_source(*killed_dirs.pop(next(iter(killed_dirs))))
        # Keep the number of releases to verify small; rm and gc are part of the story too.
        while len(live) > 2:
            old = live.pop(0)
            ctx.nano("store", "rm", old)
            committed.pop(old, None)
            known.pop(old)
        if k % 6 == 0:
            ctx.nano("store", "gc")
    print(f"kill -9 during add: {stats}")
    assert stats["killed, not committed"] >= max(1, ITERATIONS // 4), \
        f"too few imports were interrupted for the test to mean much: {stats}"
    assert stats["killed after writing objects"] > 0, f"no kill interrupted an import while it wrote objects: {stats}"

    # A killed version imports cleanly afterwards.
    rel, (path, src) = next(reversed(killed_dirs.items()))
    assert rel not in listing(ctx)
    ident = add(ctx, path, rel)
    committed[rel] = ident
    live.append(rel)
    verify_store(ctx, known, committed, f"after re-adding the killed {rel}")

    # kill -9 during gc: each time there is garbage to remove (a removed release, temporaries).
    ctx.nano("store", "gc")  # so that each round below has about the same garbage to remove
    gc_times = []
    gc_stats = {"finished": 0, "killed before deleting": 0, "killed while deleting": 0}
    for i in range(6):
        rel = f"garbage@{i}"
        src = link_farm(base, ctx.data / f"garbage-{i}")
        mutate(random.Random(f"{SEED}-garbage-{i}"), src, n_big=3, n_small=60, tag=f"g{i}", n_new=1500)
        known[rel] = (tree_digest(src), True)
        add(ctx, src, rel)
        ctx.nano("store", "rm", rel)
        known.pop(rel)
        if len(live) > 1:
            old = live.pop(0)
            ctx.nano("store", "rm", old)
            committed.pop(old, None)
            known.pop(old)
        # An interrupted import's leftovers, for gc to clean up too.
        again = link_farm(src, ctx.data / f"garbage-{i}-again")
        mutate(random.Random(f"{SEED}-again-{i}"), again, n_big=1, n_small=10, tag=f"a{i}")
        known[f"garbage@{i}x"] = (tree_digest(again), True)
        p = spawn_add(ctx, again, f"garbage@{i}x")
        p.kill_after(rng.uniform(0, statistics.median(durations['dir'])))
        if not gc_times:
            p = ctx.spawn("store", "gc", "--json", tag="gc")
            assert p.wait() == 0, str(p)
            gc_times.append(max(time.monotonic() - p.started, 0.005))
            print(f"gc takes {gc_times[0]:.3f} s")
            verify_store(ctx, known, committed, "after a complete gc")
            continue
        delay = rng.uniform(0, 1.3 * statistics.median(gc_times))
        before = count_files(ctx.store / "objects")
        p = ctx.spawn("store", "gc", "--json", tag="gc")
        rc = p.kill_after(delay)
        assert rc in (0, -signal.SIGKILL), str(p)
        after = count_files(ctx.store / "objects")
        if rc == 0:
            gc_times.append(p.duration)
        gc_stats["finished" if rc == 0 else "killed before deleting" if after == before else
                 "killed while deleting"] += 1
        verify_store(ctx, known, committed, f"after SIGKILL of gc at {delay:.3f} s (exit status {rc})")
        shutil.rmtree(src)

    print(f"kill -9 during gc: {gc_stats}")

    # kill -9 during fsck --repair: with corrupt unreferenced objects for it to remove, and leftovers.
    fsck_time = None
    for i in range(6):
        planted = []
        prng = random.Random(f"{SEED}-plant-{i}")
        for _ in range(3):
            h = hashlib.sha256(prng.randbytes(16)).hexdigest()
            obj = ctx.store / "objects" / h[:2] / h[2:]
            obj.parent.mkdir(exist_ok=True)
            obj.write_bytes(prng.randbytes(prng.randrange(0, 5000)))
            planted.append(f"objects/{h[:2]}/{h[2:]}")
        (ctx.store / "tmp" / f"t999{i}.0.abc").write_bytes(prng.randbytes(1000))
        t0 = time.monotonic()
        p = ctx.spawn("store", "fsck", "--repair", "--json", tag="fsck-repair")
        if fsck_time is None:
            assert p.wait(120) == 0, f"fsck --repair does not repair unreferenced corrupt objects\n{p}"
            fsck_time = max(time.monotonic() - t0, 0.01)
            print(f"fsck --repair takes {fsck_time:.3f} s; killing in [0, {1.3 * fsck_time:.3f}] s")
            rc = 0
        else:
            delay = rng.uniform(0, 1.3 * fsck_time)
            rc = p.kill_after(delay)
            assert rc in (0, -signal.SIGKILL), str(p)
        when = f"after SIGKILL of fsck --repair (exit status {rc})"
        # Only the planted objects may be left as problems; a second --repair removes them.
        r = ctx.nano("store", "fsck", "--json", check=False, timeout=120)
        assert r.returncode in (0, 4), f"{when}\n{r}"
        for prob in r.json()["problem_list"]:
            assert prob["kind"] and prob["file"] in planted, f"{when}: unexpected problem {prob}\n{r}"
        assert (r.returncode == 4) == bool(r.json()["problem_list"]), str(r)
        r = ctx.nano("store", "fsck", "--repair", "--json", check=False, timeout=120)
        assert r.returncode == 0, f"{when}: fsck --repair does not leave a sound store\n{r}"
        for f in planted:
            assert not (ctx.store / f).exists(), f"{when}: fsck --repair left the corrupt {f}"
        verify_store(ctx, known, committed, when)

    ctx.nano("store", "gc")
    verify_store(ctx, known, committed, "at the end")
    print(f"test_kill9_add_gc_fsck: {time.monotonic() - t_start:.1f} s")


# ---- 2: concurrent imports, gc in a loop, rm in the middle ----

class GcLoop:
    """`nano store gc` back to back in a thread until stopped; every run must succeed."""

    def __init__(self, ctx, pause=0.0):
        self.ctx, self.pause = ctx, pause
        self.runs, self.failures = 0, []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop_event.is_set():
            p = self.ctx.spawn("store", "gc", "--json", tag="gc-loop")
            try:
                rc = p.proc.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.proc.wait(10)
                rc = "timeout"
            self.runs += 1
            if rc != 0 or sanitizer_report(p.stderr):
                self.failures.append(str(p))
            if self.pause:
                self.stop_event.wait(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(90)
        assert not self.thread.is_alive(), "the gc loop does not stop"

    def check(self, at_least=1):
        assert not self.failures, "gc failed while imports ran:\n" + "\n".join(self.failures[:3])
        assert self.runs >= at_least, f"gc ran only {self.runs} times"


def shared_trees(ctx, rng, tag, names, shared_fraction=0.5, n_files=140):
    """Trees that share a fraction of their files (same path, content, mode and mtime: hard links to
    one pool), the rest unique. Returns {name: path}."""
    pool = make_tree(ctx.data / f"{tag}-pool", gen_spec(rng, n_small=int(n_files * shared_fraction), n_big=1,
                                                             big_max=5 << 20, prefix="s"))
    trees = {}
    for name in names:
        d = link_farm(pool, ctx.data / f"{tag}-{name}")
        make_tree(d, {"own": gen_spec(rng, n_small=int(n_files * (1 - shared_fraction)), n_big=1, big_max=5 << 20,
                                      prefix=name)})
        trees[name] = d
    return trees


def test_concurrent_imports_with_gc_and_rm(ctx):
    rng = rng_for("concurrent")
    t_start = time.monotonic()
    known, committed = {}, {}
    for rnd in range(2):
        trees = shared_trees(ctx, rng, f"r{rnd}", ["a", "b", "c", "d", "old"])
        old_rel = f"old@{rnd}"
        known[old_rel] = (tree_digest(trees["old"]), True)
        committed[old_rel] = add(ctx, trees["old"], old_rel)
        rels = {name: f"{name}@{rnd}" for name in "abcd"}
        for name, rel in rels.items():
            known[rel] = (tree_digest(trees[name]), True)

        with GcLoop(ctx) as gc:
            # Staggered starts, so that gc also gets the lock between imports; the two imports of
            # the same release start together.
            starts = [(rels["a"], "a", "1", 0.0), (rels["a"], "a", "2", 0.0)]
            starts += [(rel, name, "2", rng.uniform(0, 0.4)) for name, rel in rels.items() if name != "a"]
            starts.append((old_rel, None, None, rng.uniform(0.05, 0.3)))
            procs = []
            t0 = time.monotonic()
            for rel, name, threads, at in sorted(starts, key=lambda x: x[3]):
                time.sleep(max(0, t0 + at - time.monotonic()))
                if name is None:  # rm of the older release in the middle of it all
                    ctx.nano("store", "rm", old_rel)
                else:
                    procs.append((rel, spawn_add(ctx, trees[name], rel, "--threads", threads)))
            committed.pop(old_rel)
            known.pop(old_rel)
            results = {}
            for rel, p in procs:
                assert p.wait(120) == 0, f"concurrent import of {rel} failed\n{p}"
                results.setdefault(rel, []).append(parse_add(p.stdout, rel))
        gc.check()
        print(f"round {rnd}: gc ran {gc.runs} times during the imports")
        ids = results[rels["a"]]
        assert len(ids) == 2 and ids[0] == ids[1], f"the same tree imported twice at once gave {ids}"
        for rel, got in results.items():
            committed[rel] = got[0]
        ls = verify_store(ctx, known, committed, f"after concurrent imports, round {rnd}")
        assert old_rel not in ls

    ctx.nano("store", "gc")
    verify_store(ctx, known, committed, "after a final gc")
    print(f"test_concurrent_imports_with_gc_and_rm: {time.monotonic() - t_start:.1f} s")


def test_same_release_other_content_one_wins(ctx):
    rng = rng_for("conflict")
    known, committed = {}, {}
    for i in range(6):
        trees = shared_trees(ctx, rng, f"c{i}", ["p", "q"], n_files=60)
        rel = f"x@{i}"
        digests = {name: tree_digest(d) for name, d in trees.items()}
        procs = {}
        order = ["p", "q"] if i % 2 == 0 else ["q", "p"]
        for name in order:
            procs[name] = spawn_add(ctx, trees[name], rel, "--threads", rng.choice(["1", "2"]))
            time.sleep(rng.uniform(0, 0.02))
        rcs = {name: p.wait(120) for name, p in procs.items()}
        assert sorted(rcs.values()) == [0, EXIT_EXISTS], \
            f"two imports of {rel} with different content: want one success and one exit 5, got {rcs}\n" + \
            "\n".join(str(p) for p in procs.values())
        winner = next(n for n, rc in rcs.items() if rc == 0)
        loser = next(n for n, rc in rcs.items() if rc != 0)
        assert rel in procs[loser].stderr, f"the refusal does not name {rel}\n{procs[loser]}"
        assert procs[loser].stdout == "", str(procs[loser])
        committed[rel] = parse_add(procs[winner].stdout, rel)
        known[rel] = (digests[winner], True)
        ref = (ctx.store / "refs" / "x" / str(i)).read_text()
        assert ref == committed[rel] + "\n", f"refs/x/{i} holds {ref!r}, the winner printed {committed[rel]}"
    verify_store(ctx, known, committed, "after conflicting imports")


# ---- 3: gc never deletes what a concurrent add is about to reference ----

def test_gc_racing_add_that_reuses_removed_objects(ctx):
    rng = rng_for("gc-vs-add")
    known, committed = {}, {}
    add_time = None
    for i in range(5):
        old = make_tree(ctx.data / f"old-{i}", gen_spec(rng, n_small=200, n_big=3, big_max=5 << 20, prefix=f"o{i}"))
        new = link_farm(old, ctx.data / f"new-{i}")
        mutate(rng, new, n_big=0, n_small=5, tag=f"n{i}")
        add(ctx, old, f"old@{i}")
        ctx.nano("store", "rm", f"old@{i}")  # every object of old@i is garbage now, and new@i needs most
        rel = f"new@{i}"
        known[rel] = (tree_digest(new), True)
        if add_time is None:
            t0 = time.monotonic()
        gc_first = i % 2 == 1
        gcs = []
        if gc_first:
            gcs.append(ctx.spawn("store", "gc", tag="gc"))
            time.sleep(rng.uniform(0, 0.01))
        p = spawn_add(ctx, new, rel, "--threads", rng.choice(["1", "2"]))
        with GcLoop(ctx, pause=rng.uniform(0, 0.01)) as loop:
            for g in range(2):
                time.sleep(rng.uniform(0, (add_time or 0.2) / 2))
                gcs.append(ctx.spawn("store", "gc", tag="gc"))
            rc = p.wait(120)
        if add_time is None:
            add_time = time.monotonic() - t0
        loop.check(at_least=0)
        for g in gcs:
            assert g.wait() == 0, str(g)
        assert rc == 0, f"import of {rel} failed while gc ran\n{p}"
        committed[rel] = parse_add(p.stdout, rel)
        verify_store(ctx, known, committed, f"after gc raced the import of {rel}")
    ctx.nano("store", "gc")
    verify_store(ctx, known, committed, "after a final gc")


# ---- rm of a name's last version racing an add of another version of the same name ----

def test_rm_last_version_racing_add_of_same_name(ctx):
    rng = rng_for("rm-vs-add")
    src = make_tree(ctx.data / "tiny", {"a": "hello\n", "d": {"b": "world\n"}})
    # How long an add takes, so that the rm lands near its end (where the ref is written).
    t0 = time.monotonic()
    add(ctx, src, "n@cal")
    add_time = time.monotonic() - t0
    ctx.nano("store", "rm", "n@cal")
    failures = []
    deadline = time.monotonic() + 15
    i = 0
    while time.monotonic() < deadline and i < 600 and not failures:
        i += 1
        add(ctx, src, "n@old")
        p = spawn_add(ctx, src, f"n@v{i}")
        time.sleep(rng.uniform(0, add_time))
        r = ctx.nano("store", "rm", "n@old", check=False)
        assert r.returncode == 0, str(r)
        if p.wait(60) != 0:
            failures.append(str(p))
        else:
            ctx.nano("store", "rm", f"n@v{i}")
    print(f"{i} attempts")
    assert not failures, f"add of another version of the name failed while rm removed the last one:\n" \
                         f"{failures[0]}"
    verify_store(ctx, {}, {}, "after rm/add races")
