#!/usr/bin/python3
"""Mount benchmark: nano's FUSE mount against the native tree, squashfuse_ll and kernel squashfs.

    bench/mount.py [--tools native,nano,squashfuse,kernel] [--cases walk,read,random,start,imports,releases]
                   [--repeat N] [--reads N] [--starts N] [--cache-size SIZE] [--nano-bin PATH]
                   [--mnt DIR] [--json PATH] [--rebuild]

The ingest benchmark's tree (bench/work/tree/v1, made by bench/make-tree.py) is read through:
  native      the directory itself (the file system it sits on)
  nano        `nano mount` of a store holding it as bench@1
  squashfuse  `squashfuse_ll` of `mksquashfs v1 tree.sqfs -comp zstd -Xcompression-level 3 -processors 2`
  kernel      `mount -o loop,ro -t squashfs` of the same image (root only: the bar above both)

Cases, each run COLD (FUSE file systems unmounted and mounted again, and as root
`sync; echo 3 > /proc/sys/vm/drop_caches`) then WARM (the same command again, right after):
  walk      find ROOT -printf '%s %p\\n' > /dev/null
  read      tar cf - -C ROOT . | wc -c
  random    N preads of 4 KiB at random 4 KiB-aligned offsets (fixed seed) of a 1 GiB file
  start     ROOT/usr/bin/python3.11 -B -c pass with PYTHONHOME=ROOT/usr (the tree's stdlib)
  imports   the same, importing asyncio, json, decimal, email, http.client, logging, argparse, ssl
  releases  (nano only) 50 releases of a subset of the tree mounted, every file stat'ed: daemon RSS
The nano daemon's RSS is also taken after the full read. Tools alternate within each case
(A,B,C,D, A,B,C,D… with --repeat N) and medians are reported: this machine's speed drifts, ratios
taken close together do not. Prints a Markdown table on stdout, writes all figures as JSON under
bench/work/results/. Manual use only: this is not, and must not become, a CI job. Python 3 stdlib only.
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import first_line, machine_info, nano_buildtype

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ALL_TOOLS = ["native", "nano", "squashfuse", "kernel"]
LABEL = {
    "native": "native dir",
    "nano": "nano mount",
    "squashfuse": "squashfuse_ll",
    "kernel": "kernel squashfs",
}
ALL_CASES = ["walk", "read", "random", "start", "imports", "releases"]
# program -> Debian package providing it
NEEDS = {
    "native": {"find": "findutils", "tar": "tar", "wc": "coreutils"},
    "nano": {"fusermount3": "fuse3"},
    "squashfuse": {"squashfuse_ll": "squashfuse", "mksquashfs": "squashfs-tools",
                   "fusermount3": "fuse3"},
    "kernel": {"mksquashfs": "squashfs-tools", "mount": "mount", "umount": "mount",
               "losetup": "mount"},
}
MKSQUASHFS_OPTS = ["-comp", "zstd", "-Xcompression-level", "3", "-processors", "2"]
BIG_SIZE = 1 << 30
SUBSET = "usr/include"          # the part of v1 added 50 times as sub@1..50
RELEASES = 50
PYTHON = "usr/bin/python3.11"   # the tree's Debian python3.11 binary, with its stdlib under usr/
IMPORTS = "import asyncio, json, decimal, email.message, http.client, logging, argparse, ssl"

# Run in a child process so that the reads' timing excludes the interpreter's start and the
# benchmark's own process never holds a file open on a mount it is about to unmount.
RANDOM_HELPER = r"""
import hashlib, json, os, random, sys, time
path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
pages = os.fstat(fd).st_size // 4096
rng = random.Random(seed)
offs = [rng.randrange(pages) * 4096 for _ in range(n)]
out = [None] * n
pread = os.pread
t0 = time.perf_counter()
for i, off in enumerate(offs):
    out[i] = pread(fd, 4096, off)
t1 = time.perf_counter()
os.close(fd)
h = hashlib.sha256()
for b in out:
    h.update(b)
print(json.dumps({"elapsed_s": t1 - t0, "n": n, "sha256": h.hexdigest(),
                  "short": sum(1 for b in out if len(b) != 4096)}))
"""


def die(msg):
    print(f"mount-bench: error: {msg}", file=sys.stderr)
    sys.exit(1)


def note(msg):
    print(f"mount-bench: {msg}", file=sys.stderr, flush=True)


def is_root():
    return os.geteuid() == 0


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def mounted(path):
    """Whether path is a mount point (per /proc/self/mountinfo)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            mp = mp.encode().decode("unicode_escape")  # \040 and friends
            if mp == path:
                return True
    return False


def proc_cpu_s(pid):
    """user + system CPU seconds of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_mem_kb(pid):
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def block_device(path):
    """The /proc/diskstats name of the device holding path (e.g. vda1), or None."""
    src = subprocess.run(["findmnt", "-no", "SOURCE", "-T", path], capture_output=True,
                         text=True).stdout.strip()
    name = os.path.basename(src.split("[", 1)[0]) if src.startswith("/dev/") else None
    return name if name and disk_reads(name) is not None else None


def disk_reads(dev):
    """(read requests completed, bytes read) of a block device, from /proc/diskstats."""
    if not dev:
        return None
    with open("/proc/diskstats") as f:
        for line in f:
            x = line.split()
            if x[2] == dev:
                return int(x[3]), int(x[5]) * 512
    return None


def du_b(path):
    out = subprocess.run(["du", "-sb", "--apparent-size", path], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else None


def parse_size(s):
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper().rstrip("B").rstrip("I")
    num = s.rstrip("KMG")
    return int(float(num) * units[s[len(num):]])


# --- inputs, built once and reused (stamps tell when they are stale) ---------------------------
class Inputs:
    def __init__(self, a, tree_meta):
        self.a = a
        self.tree_meta = tree_meta
        self.v1 = os.path.join(a.work, "tree", "v1")
        self.dir = os.path.join(a.work, "mount")
        self.big = os.path.join(self.dir, "big")           # the 1 GiB file's tree
        self.sub = os.path.join(self.dir, "sub")           # the subset for the 50 releases
        self.tree_img = os.path.join(self.dir, "tree.sqfs")
        self.big_img = os.path.join(self.dir, "big.sqfs")
        self.home = os.path.join(a.work, "mount-home")     # NANO_HOME
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.stamp_path = os.path.join(self.dir, "inputs.json")
        self.digest = tree_meta["selection_sha256"]

    def stamp(self):
        try:
            with open(self.stamp_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def save_stamp(self, st):
        with open(self.stamp_path, "w") as f:
            json.dump(st, f, indent=2)
            f.write("\n")

    def prepare(self, tools, cases):
        st = self.stamp()
        if st.get("tree") != self.digest or self.a.rebuild:
            note("inputs are missing or from another tree: building them")
            st = {"tree": self.digest}
            for p in (self.tree_img, self.big_img, os.path.join(self.dir, "big.tmp")):
                if os.path.exists(p):
                    os.unlink(p)
            shutil.rmtree(self.big, ignore_errors=True)
            shutil.rmtree(self.sub, ignore_errors=True)
            shutil.rmtree(self.home, ignore_errors=True)
            self.save_stamp(st)
        if "big_sha256" not in st or not os.path.exists(os.path.join(self.big, "big.bin")):
            st["big_sha256"] = self.make_big()
            self.save_stamp(st)
        if "squashfuse" in tools or "kernel" in tools:
            for img, src, key in ((self.tree_img, self.v1, "tree_img"),
                                  (self.big_img, self.big, "big_img")):
                if not os.path.exists(img) or key not in st:
                    note(f"mksquashfs {src} {img}")
                    t0 = time.monotonic()
                    subprocess.run(["mksquashfs", src, img] + MKSQUASHFS_OPTS +
                                   ["-noappend", "-no-progress", "-quiet"], check=True,
                                   stdout=subprocess.DEVNULL)
                    st[key] = {"bytes": os.path.getsize(img), "build_s": time.monotonic() - t0}
                    self.save_stamp(st)
        if "nano" in tools:
            self.nano_store(st, cases)
        self.st = st

    def make_big(self):
        """big/big.bin: v1's regular files concatenated in sorted path order, cut at 1 GiB:
        real binaries, libraries, headers and text, compressible like the tree (not zeros)."""
        note(f"making {self.big}/big.bin (1 GiB of v1's files, concatenated)")
        files = []
        for d, dirs, names in os.walk(self.v1):
            dirs.sort()
            for n in names:
                p = os.path.join(d, n)
                if stat.S_ISREG(os.lstat(p).st_mode):
                    files.append(p)
        files.sort(key=os.fsencode)
        os.makedirs(self.big, exist_ok=True)
        tmp = os.path.join(self.dir, "big.tmp")
        h = hashlib.sha256()
        left = BIG_SIZE
        with open(tmp, "wb") as out:
            for p in files:
                with open(p, "rb") as f:
                    while left and (b := f.read(min(left, 1 << 20))):
                        out.write(b)
                        h.update(b)
                        left -= len(b)
                if not left:
                    break
        if left:
            die(f"v1 holds less than 1 GiB of regular files ({BIG_SIZE - left} bytes)")
        os.utime(tmp, (1_700_000_000, 1_700_000_000))
        os.rename(tmp, os.path.join(self.big, "big.bin"))
        os.utime(self.big, (1_700_000_000, 1_700_000_000))
        return h.hexdigest()

    def nano(self, *args, check=True, capture=True):
        env = dict(os.environ, NANO_HOME=self.home)
        r = subprocess.run([self.a.nano_bin] + list(args), env=env, text=True,
                           capture_output=capture, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            die(f"nano {' '.join(args)} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def has_ref(self, name, version):
        return os.path.exists(os.path.join(self.home, "store", "refs", name, str(version)))

    def nano_store(self, st, cases):
        t0 = time.monotonic()
        if not self.has_ref("bench", 1):
            note("nano store add v1 --name bench --version 1")
            self.nano("store", "add", self.v1, "--name", "bench", "--version", "1", "--quiet")
        if not self.has_ref("big", 1):
            self.nano("store", "add", self.big, "--name", "big", "--version", "1", "--quiet")
        if "releases" in cases and not all(self.has_ref("sub", k) for k in range(1, RELEASES + 1)):
            # 50 versions of a subset: each differs from the others by one small file, so each
            # is its own manifest while the objects are shared (which makes adding them fast)
            if not os.path.isdir(self.sub):
                shutil.copytree(os.path.join(self.v1, SUBSET), self.sub, symlinks=True)
            note(f"adding {RELEASES} versions of v1/{SUBSET} as sub@1..{RELEASES}")
            marker = os.path.join(self.sub, "BENCH-VERSION")
            for k in range(1, RELEASES + 1):
                if self.has_ref("sub", k):
                    continue
                with open(marker, "w") as f:
                    f.write(f"{k}\n")
                os.utime(marker, (1_700_000_000, 1_700_000_000))
                self.nano("store", "add", self.sub, "--name", "sub", "--version", str(k), "--quiet")
        st["nano_store_bytes"] = du_b(os.path.join(self.home, "store"))
        if time.monotonic() - t0 > 1:
            note(f"nano store ready ({time.monotonic() - t0:.0f} s)")


# --- mounting and unmounting each tool --------------------------------------------------------
class Mounts:
    def __init__(self, a, inp):
        self.a = a
        self.inp = inp
        # Outside the repository: a tree walk over the checkout (a test's `find /work/main …`)
        # must neither wander into 50 releases nor hold a file open while we unmount.
        self.mnt = a.mnt
        self.procs = {}   # squashfuse_ll processes, by mount point
        self.up_tools = set()
        self.lazy = []     # mount points that had to be detached lazily
        self.kernel_error = None

    def mp(self, name):
        p = os.path.join(self.mnt, name)
        os.makedirs(p, exist_ok=True)
        return p

    def roots(self, tool):
        """tool -> {"tree": v1's root, "big": dir holding big.bin, "sub": dir of the releases}"""
        if tool == "native":
            return {"tree": self.inp.v1, "big": self.inp.big}
        if tool == "nano":
            m = self.mp("nano")
            return {"tree": os.path.join(m, "bench", "1"), "big": os.path.join(m, "big", "1"),
                    "sub": os.path.join(m, "sub")}
        return {"tree": self.mp(f"{tool}-tree"), "big": self.mp(f"{tool}-big")}

    def daemons(self, tool):
        """pids of the processes serving a tool's mounts (FUSE daemons)"""
        if tool == "nano":
            r = self.inp.nano("mount", "--status", self.mp("nano"), "--json", check=False)
            try:
                s = json.loads(r.stdout)
                return [s["pid"]] if s.get("alive") else []
            except (ValueError, KeyError):
                return []
        if tool == "squashfuse":
            return [p.pid for p in self.procs.values()]
        return []

    def wait_mounted(self, path, proc=None, timeout=20):
        t0 = time.monotonic()
        while not mounted(path):
            if proc is not None and proc.poll() is not None:
                return False
            if time.monotonic() - t0 > timeout:
                return False
            time.sleep(0.01)
        os.stat(path)  # answers
        return True

    def up(self, tool):
        if tool == "native" or tool in self.up_tools:
            return
        if tool == "nano":
            self.inp.nano("mount", self.mp("nano"), "--cache-size", self.a.cache_size)
        elif tool == "squashfuse":
            for what, img in (("tree", self.inp.tree_img), ("big", self.inp.big_img)):
                m = self.mp(f"squashfuse-{what}")
                log = open(os.path.join(self.inp.logs, f"squashfuse-{what}.log"), "ab")
                p = subprocess.Popen(["squashfuse_ll", "-f", img, m], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
                log.close()
                self.procs[m] = p
                if not self.wait_mounted(m, p):
                    die(f"squashfuse_ll {img} {m} did not mount (log {self.inp.logs})")
        elif tool == "kernel":
            for what, img in (("tree", self.inp.tree_img), ("big", self.inp.big_img)):
                r = subprocess.run(["mount", "-o", "loop,ro", "-t", "squashfs", img,
                                    self.mp(f"kernel-{what}")], capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"mount -o loop -t squashfs failed: {r.stderr.strip()}")
        self.up_tools.add(tool)

    def down(self, tool):
        if tool == "native":
            return
        if tool == "nano":
            m = self.mp("nano")
            if mounted(m):
                self.umount(m, [self.a.nano_bin, "umount", m], [self.a.nano_bin, "umount", "--lazy", m])
        elif tool == "squashfuse":
            for m, p in list(self.procs.items()):
                if mounted(m):
                    self.umount(m, ["fusermount3", "-u", m], ["fusermount3", "-u", "-z", m])
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.terminate()
                    p.wait()
                del self.procs[m]
        elif tool == "kernel":
            for what in ("tree", "big"):
                m = self.mp(f"kernel-{what}")
                if mounted(m):
                    self.umount(m, ["umount", m], ["umount", "-l", m])
        self.up_tools.discard(tool)

    def umount(self, m, argv, lazy_argv):
        """Unmount m; if something (not us) still uses it, retry for 10 s, then detach it lazily
        and say so: the next cold run must not find a warm mount."""
        env = dict(os.environ, NANO_HOME=self.inp.home)
        for _ in range(100):
            r = subprocess.run(argv, capture_output=True, text=True, env=env)
            if r.returncode == 0 or not mounted(m):
                return
            time.sleep(0.1)
        note(f"warning: {m} stayed busy ({(r.stderr or r.stdout).strip()}); detaching it lazily")
        self.lazy.append(m)
        subprocess.run(lazy_argv, check=True, env=env)

    def clean_stale(self):
        """Mounts left by an interrupted run."""
        if not os.path.isdir(self.mnt):
            return
        for name in sorted(os.listdir(self.mnt)):
            m = os.path.join(self.mnt, name)
            if mounted(m):
                note(f"unmounting {m}, left by an earlier run")
                if name == "nano":
                    r = self.inp.nano("umount", m, check=False)
                    if r.returncode == 0:
                        continue
                    self.inp.nano("umount", "--lazy", m, check=False)
                elif is_root():
                    subprocess.run(["umount", "-l", m])
                else:
                    subprocess.run(["fusermount3", "-u", "-z", m])

    def all_down(self):
        for tool in list(self.up_tools):
            try:
                self.down(tool)
            except Exception as e:  # keep unmounting the others
                note(f"unmounting {tool} failed: {e}")


# --- the cases ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, a, inp, mounts):
        self.a = a
        self.inp = inp
        self.m = mounts
        self.loads = []
        self.dev = block_device(a.work)

    def timed(self, argv, env=None, stdout=subprocess.DEVNULL, daemons=()):
        """Run argv; wall time, CPU of the command (with children) and of the FUSE daemons."""
        self.loads.append(os.getloadavg()[0])
        cpu0 = [proc_cpu_s(p) for p in daemons]
        io0 = disk_reads(self.dev)
        t0 = time.monotonic()
        with tempfile.TemporaryFile() as errf:
            p = subprocess.Popen(argv, stdout=stdout, stderr=errf, env=env,
                                 stdin=subprocess.DEVNULL)
            out = p.stdout.read() if stdout == subprocess.PIPE else None
            _, status, ru = os.wait4(p.pid, 0)
            t1 = time.monotonic()
            if out is not None:
                p.stdout.close()
            p.returncode = rc = os.waitstatus_to_exitcode(status)
            errf.seek(0)
            err = errf.read()
        cpu1 = [proc_cpu_s(p) for p in daemons]
        io1 = disk_reads(self.dev)
        dcpu = sum(b - a for a, b in zip(cpu0, cpu1) if a is not None and b is not None)
        if rc != 0:
            raise RuntimeError(f"{' '.join(argv)} failed (exit {rc}): {err.decode(errors='replace')[-2000:]}")
        return {"wall_s": t1 - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
                "daemon_cpu_s": dcpu if daemons else None,
                "disk_reads": io1[0] - io0[0] if io0 and io1 else None,
                "disk_read_bytes": io1[1] - io0[1] if io0 and io1 else None, "out": out}

    def cold(self, tool):
        """Empty every cache between the tool and the disk: remount (FUSE daemons start empty,
        the kernel forgets the mounts' inodes and pages), then drop the page cache (root)."""
        self.m.down(tool)
        self.m.up(tool)
        if is_root():
            drop_caches()
        else:
            os.sync()

    # each case returns one figure dict for a cold or warm run; "value" is what is compared
    def walk(self, tool, roots, daemons, phase):
        r = self.timed(["find", roots["tree"], "-printf", "%s %p\n"], daemons=daemons)
        r["value"] = r["wall_s"]
        if phase == "warm":  # count the entries and compare the listings (untimed)
            out = subprocess.run(["find", roots["tree"], "-printf", "%y %s %P\n"],
                                 capture_output=True, check=True).stdout
            lines = out.splitlines()
            r["entries"] = len(lines)
            # directories' st_size is file-system specific: compare their names only
            r["listing_sha256"] = hashlib.sha256(b"\n".join(sorted(
                (b"d - " + l.split(b" ", 2)[2]) if l.startswith(b"d ") else l
                for l in lines))).hexdigest()
        del r["out"]
        return r

    def read(self, tool, roots, daemons, phase):
        r = self.timed(["bash", "-c", 'set -o pipefail; tar cf - -C "$1" . | wc -c', "bash",
                        roots["tree"]], stdout=subprocess.PIPE, daemons=daemons)
        r["tar_bytes"] = int(r.pop("out").decode().strip())
        r["value"] = r["wall_s"]
        r["mb_s"] = self.inp.tree_meta["bytes"] / 1e6 / r["wall_s"]
        if tool == "nano" and daemons:
            r["daemon_mem_kb"] = proc_mem_kb(daemons[0])
        if tool == "squashfuse" and daemons:  # the tree's squashfuse_ll process
            r["daemon_mem_kb"] = proc_mem_kb(self.m.procs[roots["tree"]].pid)
        return r

    def random(self, tool, roots, daemons, phase):
        path = os.path.join(roots["big"], "big.bin")
        r = self.timed([sys.executable, "-c", RANDOM_HELPER, path, str(self.a.reads),
                        str(self.a.seed)], stdout=subprocess.PIPE, daemons=daemons)
        res = json.loads(r.pop("out"))
        if res["short"]:
            raise RuntimeError(f"{tool}: {res['short']} short reads of {path}")
        r.update(res)
        r["value"] = res["elapsed_s"] / res["n"] * 1e6  # µs per read
        return r

    def python_argv(self, root, code):
        return ([os.path.join(root, PYTHON), "-B", "-c", code],
                {"PYTHONHOME": os.path.join(root, "usr"), "PATH": "/usr/bin:/bin",
                 "PYTHONDONTWRITEBYTECODE": "1"})

    def start_common(self, code, tool, roots, daemons, phase):
        argv, env = self.python_argv(roots["tree"], code)
        n = 1 if phase == "cold" else self.a.starts
        walls = []
        cpu = dcpu = 0.0
        ios = []
        for _ in range(n):
            r = self.timed(argv, env=env, daemons=daemons)
            walls.append(r["wall_s"])
            cpu += r["cpu_s"]
            dcpu += r["daemon_cpu_s"] or 0.0
            ios.append((r["disk_reads"], r["disk_read_bytes"]))
        med = statistics.median(walls)
        return {"value": med * 1e3, "wall_s": med, "runs": n, "min_ms": min(walls) * 1e3,
                "max_ms": max(walls) * 1e3, "cpu_s": cpu / n,
                "daemon_cpu_s": dcpu / n if daemons else None,
                "disk_reads": sum(i[0] for i in ios) if None not in ios[0] else None,
                "disk_read_bytes": sum(i[1] for i in ios) if None not in ios[0] else None}

    def start(self, tool, roots, daemons, phase):
        return self.start_common("pass", tool, roots, daemons, phase)

    def imports(self, tool, roots, daemons, phase):
        return self.start_common(IMPORTS, tool, roots, daemons, phase)

    def releases(self, tool, roots, daemons, phase):
        """stat every entry of sub@1..50 (find -printf %s stats each), then the daemon's RSS"""
        r = self.timed(["find", roots["sub"], "-printf", "%s\n"], stdout=subprocess.PIPE,
                       daemons=daemons)
        r["entries"] = r.pop("out").count(b"\n")
        r["value"] = r["wall_s"]
        r["daemon_mem_kb"] = proc_mem_kb(daemons[0]) if daemons else {}
        try:
            sv = os.statvfs(os.path.dirname(roots["sub"]))
            r["inodes_in_use"] = sv.f_files - sv.f_ffree
        except OSError:
            pass
        return r

    def one(self, case, tool):
        """A cold run and a warm run of a case with one tool."""
        self.cold(tool)
        roots = self.m.roots(tool)
        daemons = self.m.daemons(tool)
        fn = getattr(self, case)
        res = {"cold": fn(tool, roots, daemons, "cold")}
        res["warm"] = fn(tool, roots, daemons, "warm")
        self.m.down(tool)
        return res


# --- report ------------------------------------------------------------------------------------
CASE_LABEL = {
    "walk": "metadata walk: `find -printf '%s %p\\n'`, s",
    "read": "full read: `tar cf - . \\| wc -c`, s",
    "random": "random 4 KiB preads of a 1 GiB file, µs/read",
    "start": "`python3.11 -c pass` from the mount, ms",
    "imports": "`python3.11 -c 'import asyncio, json, …'`, ms",
    "releases": "stat every file of 50 releases, s",
}


def fmt(v, case):
    if v is None:
        return "—"
    if case in ("random",):
        return f"{v:,.1f}"
    if case in ("start", "imports"):
        return f"{v:,.1f}"
    return f"{v:,.3f}" if v < 10 else f"{v:,.2f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_ratio(r, goal=None, strict=False):
    if r is None:
        return "n/a"
    s = f"{r:.2f}x"
    if goal is not None:
        ok = r < goal if strict else r <= goal
        s += " ✓" if ok else " ✗"
    return s


def mib(kb):
    return f"{kb / 1024:,.1f}" if kb is not None else "—"


def report(meta, med, runs, tools, cases, inp_meta, skipped):
    out = []
    p = out.append
    m = meta["machine"]
    p(f"Mount benchmark, {meta['date']}: {m['cpu']}, {m['cpus']} CPUs, {m['mem_gb']} GB RAM, "
      f"{m['distro']}, Linux {m['kernel']}; native tree on {m['fs']}.")
    p("")
    cold = ("FUSE file systems unmounted and mounted again, and `sync; echo 3 > "
            "/proc/sys/vm/drop_caches`" if meta["root"] else
            "FUSE file systems remounted only (**not root: the page cache was not dropped**)")
    p(f"`{meta['command']}` ({meta['elapsed_s'] / 60:.1f} min of runs).")
    p("")
    p(f"Cold: {cold}, before every cold run; warm: the same command again right after. "
      f"Repeats: {meta['repeat']} (tools alternating, medians). nano: {meta['versions'].get('nano', '?')}, "
      f"`--cache-size {meta['cache_size']}`, {meta['nano_threads']} threads. "
      f"Load average at start {meta['loadavg_at_start']:.2f}, highest seen {meta['loadavg_max']:.2f}.")
    if meta["loadavg_max"] > 1:
        p("")
        p(f"**Warning: the load average reached {meta['loadavg_max']:.2f} during the run (above 1): "
          "something else was running on this machine, the figures are noisy; trust the ratios "
          "more than the absolute times.**")
    t = inp_meta["tree"]
    p("")
    p(f"Tree v1: {t['files']:,} regular files, {t['bytes'] / 1e9:.2f} GB, {t['symlinks']:,} "
      f"symlinks, {t['dirs']:,} directories. squashfs images (`mksquashfs … "
      f"{' '.join(MKSQUASHFS_OPTS)}`): tree {inp_meta.get('tree_img_mb', '?')} MB, 1 GiB file "
      f"{inp_meta.get('big_img_mb', '?')} MB; nano store (v1 + 1 GiB file + 50 releases of "
      f"v1/{SUBSET}): {inp_meta.get('nano_store_mb', '?')} MB.")
    if meta.get("lazy_unmounts"):
        p("")
        p(f"**Some unmounts found the mount busy (another process used it) and were done lazily: "
          f"{', '.join(meta['lazy_unmounts'])}.**")
    for tool, why in skipped.items():
        p("")
        p(f"{LABEL[tool]}: skipped: {why}")
    p("")
    shown = [t for t in tools if t not in skipped]
    peers = [t for t in shown if t != "nano"]
    hdr = "| measurement | cache | " + " | ".join(LABEL[t] for t in shown)
    if "nano" in shown:
        hdr += " | " + " | ".join(f"nano / {LABEL[t]}" for t in peers)
    p(hdr + " |")
    p("|---|---|" + "--:|" * (len(shown) + (len(peers) if "nano" in shown else 0)))
    for case in cases:
        if case == "releases":
            continue
        for phase in ("cold", "warm"):
            row = [CASE_LABEL[case] if phase == "cold" else "", phase]
            for t in shown:
                row.append(fmt(med.get((case, t, phase)), case))
            if "nano" in shown:
                for t in peers:
                    row.append(fmt_ratio(ratio(med.get((case, "nano", phase)),
                                               med.get((case, t, phase)))))
            p("| " + " | ".join(row) + " |")
    p("")
    extra = []
    if "walk" in cases:
        ent = {t: next((r["warm"].get("entries") for r in runs.get(("walk", t), [])), None)
               for t in shown}
        extra.append("entries found by `find`: " + ", ".join(
            f"{LABEL[t]} {ent[t]:,}" for t in shown if ent[t] is not None))
        sh = {next((r["warm"].get("listing_sha256") for r in runs.get(("walk", t), [])), None)
              for t in shown}
        if len(sh) > 1:
            extra.append("**the listings (path and size) differ between tools**")
    if "read" in cases:
        tb = {t: next((r["warm"].get("tar_bytes") for r in runs.get(("read", t), [])), None)
              for t in shown}
        extra.append("tar stream bytes: " + ", ".join(f"{LABEL[t]} {tb[t]:,}" for t in shown
                                                        if tb[t] is not None))
        mbs = [f"{LABEL[t]} {t_mbs:,.0f}/{w_mbs:,.0f}" for t in shown
               if (t_mbs := ratio(inp_meta['tree']['bytes'] / 1e6, med.get(('read', t, 'cold'))))
               and (w_mbs := ratio(inp_meta['tree']['bytes'] / 1e6, med.get(('read', t, 'warm'))))]
        extra.append("full read MB/s cold/warm: " + ", ".join(mbs))
    if "random" in cases:
        sh = {r["cold"].get("sha256") for t in shown for r in runs.get(("random", t), [])}
        extra.append(f"random reads: {meta['reads']:,} preads, seed {meta['seed']}, "
                     f"{'identical data from every tool' if len(sh) == 1 else '**data differs between tools**'}; "
                     "nano chunks are 128 KiB (the default), squashfs blocks 128 KiB")
    if "start" in cases or "imports" in cases:
        extra.append(f"program start: cold = the first start after the remount and cache drop; "
                     f"warm = median of the next {meta['starts']} starts; wall time of "
                     f"fork+exec+exit, `PYTHONHOME=ROOT/usr ROOT/{PYTHON} -B`")
    for e in extra:
        p(f"- {e}")
    # CPU of the FUSE daemons
    fuse = [t for t in ("nano", "squashfuse") if t in shown]
    if fuse:
        p("")
        p("FUSE daemon CPU time (user + sys, s; median per run):")
        p("")
        p("| measurement | cache | " + " | ".join(LABEL[t] for t in fuse) + " |")
        p("|---|---|" + "--:|" * len(fuse))
        for case in cases:
            if case == "releases":
                continue
            for phase in ("cold", "warm"):
                row = [case, phase]
                for t in fuse:
                    v = [r[phase].get("daemon_cpu_s") for r in runs.get((case, t), [])]
                    v = [x for x in v if x is not None]
                    row.append(f"{statistics.median(v):.3f}" if v else "—")
                p("| " + " | ".join(row) + " |")
    # disk reads of the cold runs
    if any(r["cold"].get("disk_reads") is not None for rs in runs.values() for r in rs):
        p("")
        p(f"Disk reads during the cold runs (read requests completed / MB read from "
          f"`{meta.get('device', '?')}`, median per run; the page cache was empty):")
        p("")
        p("| measurement | " + " | ".join(LABEL[t] for t in shown) + " |")
        p("|---|" + "--:|" * len(shown))
        for case in cases:
            if case == "releases":
                continue
            row = [case]
            for t in shown:
                rs = [r["cold"] for r in runs.get((case, t), [])
                      if r["cold"].get("disk_reads") is not None]
                row.append(f"{statistics.median(r['disk_reads'] for r in rs):,.0f} / "
                           f"{statistics.median(r['disk_read_bytes'] for r in rs) / 1e6:,.0f}"
                           if rs else "—")
            p("| " + " | ".join(row) + " |")
    # memory
    if "nano" in shown and ("read" in cases or "releases" in cases):
        cache = parse_size(meta["cache_size"])
        goal_kb = (64 << 10) + cache // 1024
        p("")
        p(f"Memory of the FUSE daemons (VmRSS / peak VmHWM, MiB; last round). "
          f"Target for nano: under 64 MiB + chunk cache ({meta['cache_size']}) = "
          f"{goal_kb / 1024:.0f} MiB.")
        p("")
        p("| when | nano RSS | nano peak | squashfuse_ll RSS (tree mount) | nano under target |")
        p("|---|--:|--:|--:|:-:|")
        rows = []
        if "read" in cases:
            for phase in ("cold", "warm"):
                nr = (runs.get(("read", "nano")) or [{}])[-1].get(phase, {}).get("daemon_mem_kb", {})
                sr = (runs.get(("read", "squashfuse")) or [{}])[-1].get(phase, {}).get("daemon_mem_kb", {})
                rows.append((f"after the {phase} full read", nr, sr))
        if "releases" in cases:
            rr = (runs.get(("releases", "nano")) or [{}])[-1]
            for phase in ("cold", "warm"):
                r = rr.get(phase, {})
                nr = r.get("daemon_mem_kb", {})
                rows.append((f"{RELEASES} releases, every entry stat'ed ({phase}: "
                             f"{r.get('entries', 0):,} entries, "
                             f"{r.get('wall_s', 0):.2f} s, {r.get('inodes_in_use', 0):,} inodes)", nr, {}))
        for label, nr, sr in rows:
            ok = "✓" if nr.get("VmRSS") and nr["VmRSS"] < goal_kb else ("✗" if nr.get("VmRSS") else "—")
            p(f"| {label} | {mib(nr.get('VmRSS'))} | {mib(nr.get('VmHWM'))} | "
              f"{mib(sr.get('VmRSS'))} | {ok} |")
    # targets
    if "nano" in shown:
        p("")
        p("| target (shown, not asserted) | nano | goal |")
        p("|---|--:|--:|")

        def target(label, case, phase, peer, goal, strict=False):
            r = ratio(med.get((case, "nano", phase)), med.get((case, peer, phase)))
            p(f"| {label} | {fmt_ratio(r, goal, strict)} | {'<' if strict else '≤'} {goal:.2f}x |")
        timed_cases = [c for c in cases if c != "releases"]
        if "native" in shown:
            for case in timed_cases:
                target(f"{case} warm vs native", case, "warm", "native", 1.25)
        if "squashfuse" in shown:
            for case in timed_cases:
                target(f"{case} cold vs squashfuse_ll", case, "cold", "squashfuse", 1.0)
            if "walk" in cases:
                for phase in ("cold", "warm"):
                    target(f"walk {phase} faster than squashfuse_ll", "walk", phase, "squashfuse",
                           1.0, strict=True)
    return "\n".join(out)


def tool_versions(tools, nano_bin):
    v = {}

    if "squashfuse" in tools or "kernel" in tools:
        v["mksquashfs"] = first_line(["mksquashfs", "-version"])
    if "squashfuse" in tools:
        v["squashfuse_ll"] = first_line(["squashfuse_ll", "--version"])
    v["find"] = first_line(["find", "--version"])
    v["tar"] = first_line(["tar", "--version"])
    if "nano" in tools:
        shown = os.path.relpath(nano_bin, REPO) if nano_bin.startswith(REPO) else nano_bin
        v["nano"] = f"{shown} (buildtype {nano_buildtype(nano_bin)})"
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tools", default=",".join(ALL_TOOLS),
                    help=f"comma-separated, in run order (default {','.join(ALL_TOOLS)})")
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help=f"comma-separated (default {','.join(ALL_CASES)})")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of all tools; medians reported")
    ap.add_argument("--reads", type=int, default=20000, help="random preads per run (default 20000)")
    ap.add_argument("--seed", type=int, default=42, help="seed of the random offsets")
    ap.add_argument("--starts", type=int, default=50, help="warm program starts (default 50)")
    ap.add_argument("--cache-size", default="64M", help="nano mount --cache-size (default 64M)")
    ap.add_argument("--nano-bin", default=os.environ.get("NANO_BIN",
                                                         os.path.join(REPO, "build-release", "cli", "nano")))
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--mnt", default=os.path.join(tempfile.gettempdir(), f"nano-mount-bench-{os.geteuid()}"),
                    help="where the file systems are mounted (default $TMPDIR/nano-mount-bench-UID, "
                         "outside the checkout)")
    ap.add_argument("--json", help="JSON output (default bench/work/results/mount-<date>.json)")
    ap.add_argument("--rebuild", action="store_true",
                    help="rebuild the 1 GiB file, the squashfs images and the nano store")
    a = ap.parse_args()

    tools = [t for t in a.tools.split(",") if t]
    cases = [c for c in a.cases.split(",") if c]
    bad = [t for t in tools if t not in ALL_TOOLS] + [c for c in cases if c not in ALL_CASES]
    if bad or not tools or not cases:
        die(f"unknown tool(s)/case(s) {','.join(bad)}; tools: {','.join(ALL_TOOLS)}; "
            f"cases: {','.join(ALL_CASES)}")
    if a.repeat < 1 or a.reads < 1 or a.starts < 1:
        die("--repeat, --reads and --starts must be >= 1")
    a.nano_bin = os.path.abspath(a.nano_bin)
    a.work = os.path.abspath(a.work)
    a.mnt = os.path.abspath(a.mnt)
    parse_size(a.cache_size)

    skipped = {}
    if "kernel" in tools and not is_root():
        skipped["kernel"] = "needs root (mount -o loop); run as root to get the kernel's bar"
        tools.remove("kernel")
    missing = {prog: pkg for t in tools for prog, pkg in NEEDS[t].items() if not shutil.which(prog)}
    for prog, pkg in (("du", "coreutils"), ("findmnt", "util-linux"), ("bash", "bash")):
        if not shutil.which(prog):
            missing[prog] = pkg
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        die(f"missing {', '.join(sorted(missing))}: sudo apt-get install {pkgs} "
            "(or leave the tool out with --tools)")
    if "nano" in tools and not os.access(a.nano_bin, os.X_OK):
        die(f"no nano binary at {a.nano_bin}: meson setup build-release --buildtype=release && "
            "ninja -C build-release, or set NANO_BIN / --nano-bin")
    if ("nano" in tools or "squashfuse" in tools) and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        die("/dev/fuse is missing or not usable by this user (FUSE: apt-get install fuse3)")
    if "kernel" in tools:
        with open("/proc/filesystems") as f:
            if "squashfs" not in f.read():
                note("squashfs is not in /proc/filesystems; trying mount anyway (module autoload)")
    if not is_root():
        note("not root: cold runs only remount the FUSE file systems, the page cache is not dropped")
    if "releases" in cases and "nano" not in tools:
        cases.remove("releases")

    tree_json = os.path.join(a.work, "tree", "tree.json")
    if not os.path.exists(tree_json):
        note("no tree yet: running bench/make-tree.py")
        subprocess.run([sys.executable, os.path.join(HERE, "make-tree.py"), "--work", a.work],
                       check=True, stdout=sys.stderr)
    with open(tree_json) as f:
        tree = json.load(f)

    load0 = os.getloadavg()[0]
    if load0 > 1:
        note(f"warning: load average is {load0:.2f}: something else is running, figures will be noisy")
    inp = Inputs(a, tree)
    mounts = Mounts(a, inp)
    mounts.clean_stale()
    inp.prepare(tools, cases)
    b = Bench(a, inp, mounts)

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    runs = {}
    t_start = time.monotonic()
    nano_threads = "?"
    try:
        if "kernel" in tools:  # can the kernel mount it at all?
            try:
                mounts.up("kernel")
                mounts.down("kernel")
            except (RuntimeError, subprocess.CalledProcessError) as e:
                skipped["kernel"] = str(e)
                tools.remove("kernel")
                mounts.all_down()
        if "nano" in tools:
            mounts.up("nano")
            r = inp.nano("mount", "--status", mounts.mp("nano"), "--json", check=False)
            try:
                nano_threads = json.loads(r.stdout).get("threads", "?")
            except ValueError:
                pass
            mounts.down("nano")
        for case in cases:
            case_tools = ["nano"] if case == "releases" else tools
            for rep in range(a.repeat):
                for tool in case_tools:
                    res = b.one(case, tool)
                    runs.setdefault((case, tool), []).append(res)
                    note(f"{case} round {rep + 1}/{a.repeat} {tool}: cold {fmt(res['cold']['value'], case)}"
                         f", warm {fmt(res['warm']['value'], case)}")
    except KeyboardInterrupt:
        note("interrupted: unmounting")
        mounts.all_down()
        sys.exit(130)
    finally:
        mounts.all_down()
    elapsed = time.monotonic() - t_start

    med = {}
    for (case, tool), rs in runs.items():
        for phase in ("cold", "warm"):
            med[(case, tool, phase)] = statistics.median(r[phase]["value"] for r in rs)
    st = inp.st
    inp_meta = {"tree": tree, "stamp": st,
                "tree_img_mb": f"{st['tree_img']['bytes'] / 1e6:,.1f}" if "tree_img" in st else "?",
                "big_img_mb": f"{st['big_img']['bytes'] / 1e6:,.1f}" if "big_img" in st else "?",
                "nano_store_mb": f"{st['nano_store_bytes'] / 1e6:,.1f}" if st.get("nano_store_bytes") else "?"}
    meta = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(a.work), "versions": tool_versions(tools, a.nano_bin),
        "tools": tools, "cases": cases, "repeat": a.repeat, "reads": a.reads, "seed": a.seed,
        "starts": a.starts, "cache_size": a.cache_size, "nano_threads": nano_threads,
        "root": is_root(), "device": b.dev, "elapsed_s": round(elapsed, 1), "loadavg_at_start": load0,
        "loadavg_max": max([load0] + b.loads),
        "command": " ".join(["bench/mount.py"] + sys.argv[1:]),
    }
    meta["lazy_unmounts"] = mounts.lazy
    text = report(meta, med, runs, tools, cases, inp_meta, skipped)
    print(text)

    path = a.json or os.path.join(a.work, "results", datetime.datetime.now().strftime(
        "mount-%Y%m%d-%H%M%S.json"))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "inputs": inp_meta, "skipped": skipped,
                   "median": [{"case": c, "tool": t, "cache": ph, "value": v}
                              for (c, t, ph), v in med.items()],
                   "runs": [{"case": c, "tool": t, "round": i + 1, **r}
                            for (c, t), rs in runs.items() for i, r in enumerate(rs)],
                   "markdown": text}, f, indent=2)
        f.write("\n")
    note(f"{elapsed:.0f} s of runs; JSON: {path}")


if __name__ == "__main__":
    main()
