#!/usr/bin/python3
"""Build the ingest benchmark's input trees from software installed on this machine.

    bench/make-tree.py [--work DIR] [--min-files N] [--min-bytes N] [--margin F] [--force] [--dry-run]

Writes, under DIR/tree/ (default bench/work/tree/):
  v1/            a copy of parts of /usr and of the toolchains under /root (see SOURCES)
  v2/            a full copy of v1 (cp -a --reflink=auto) where every 20th regular file, in sorted
                 path order, has 64 bytes appended or overwritten in its middle (alternately)
  changed.list   the changed files, paths relative to v2/, NUL-separated (for tar -T)
  changed.txt    the same, one a line (for people)
  tree.json      counts, bytes, and "changed_zst_bytes": size of tar c <changed> | zstd -3 -T2

The selection is deterministic on a given machine: each source is walked depth-first with the
entries of every directory sorted by name (bytes); a source stops at its byte budget and the whole
walk stops as soon as both --min-files and --min-bytes, plus --margin, are reached. Regular files,
directories and symlinks (kept as links, targets untouched) are copied; devices, fifos, sockets and
unreadable files are skipped. Copies keep mode, mtime, owner and xattrs like `cp -a`, except that
setuid/setgid bits are dropped (no setuid binaries lying around in a scratch dir) and hard links
are not preserved (every name is its own file). Only Python 3 stdlib is used.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import stat
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# (source directory, byte budget or None for "until the global targets are met"). A file that
# would take its source past its budget is skipped and the walk goes on with the next entry; a
# source stops once it is within 1 % of its budget.
# Sources missing on this machine are skipped. A directory that is itself a source is never
# entered while walking another source, so no file is taken twice.
SOURCES = [
    ("/usr/bin", 150_000_000),
    ("/usr/include", 100_000_000),
    ("/usr/lib/gcc", 120_000_000),
    ("/usr/lib/python3.11", 60_000_000),
    ("/usr/share", 150_000_000),
    ("/usr/lib/x86_64-linux-gnu", 150_000_000),
    ("/usr/lib/jvm", 100_000_000),
    ("/root/.pyenv/versions/3.12.1", 150_000_000),
    ("/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu", 250_000_000),
    ("/root/.pyenv/versions/3.11.7", None),
    # fallbacks, for machines without the above
    ("/usr/lib", None),
    ("/usr/share", None),
]

CHANGE_EVERY = 20  # every 20th regular file -> 5 %
CHANGE_LEN = 64


def die(msg):
    print(f"make-tree: error: {msg}", file=sys.stderr)
    sys.exit(1)


def sorted_entries(path):
    try:
        with os.scandir(path) as it:
            ents = list(it)
    except OSError as e:
        print(f"make-tree: skip unreadable directory {path}: {e.strerror}", file=sys.stderr)
        return []
    ents.sort(key=lambda e: os.fsencode(e.name))
    return ents


def readable(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


class Selector:
    def __init__(self, dest, min_files, min_bytes, dry_run):
        self.dest = dest
        self.min_files = min_files
        self.min_bytes = min_bytes
        self.dry_run = dry_run
        self.files = self.bytes = self.symlinks = self.dirs = self.skipped = 0
        self.dir_stats = []  # (dest dir, stat) to fix up modes and mtimes at the end
        self.roots = {os.path.realpath(s) for s, _ in SOURCES if os.path.isdir(s)}
        self.digest = hashlib.sha256()
        self.done_roots = set()

    def done(self):
        return self.files >= self.min_files and self.bytes >= self.min_bytes

    def target(self, src):
        return os.path.join(self.dest, src.lstrip("/"))

    def record(self, kind, src, st, extra=""):
        self.digest.update(
            f"{kind}\0{src}\0{st.st_size if kind == 'f' else 0}\0{st.st_mtime_ns}\0"
            f"{stat.S_IMODE(st.st_mode)}\0{extra}\n".encode("utf-8", "surrogateescape"))

    def make_dir(self, src, st):
        dst = self.target(src)
        if not self.dry_run:
            os.makedirs(dst, mode=0o755, exist_ok=True)
        self.dir_stats.append((dst, st))
        self.dirs += 1
        self.record("d", src, st)

    def copy_file(self, src, st):
        dst = self.target(src)
        if not self.dry_run:
            try:
                shutil.copy2(src, dst, follow_symlinks=False)
                if os.geteuid() == 0:
                    os.lchown(dst, st.st_uid, st.st_gid)
                os.chmod(dst, stat.S_IMODE(st.st_mode) & ~0o6000)
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            except OSError as e:
                print(f"make-tree: skip {src}: {e.strerror}", file=sys.stderr)
                try:
                    os.unlink(dst)
                except OSError:
                    pass
                self.skipped += 1
                return 0
        self.files += 1
        self.bytes += st.st_size
        self.record("f", src, st)
        return st.st_size

    def copy_symlink(self, src, st):
        dst = self.target(src)
        target = os.readlink(src)
        if not self.dry_run:
            os.symlink(target, dst)
            if os.geteuid() == 0:
                os.lchown(dst, st.st_uid, st.st_gid)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        self.symlinks += 1
        self.record("l", src, st, target)

    def walk_source(self, root, budget):
        """Depth-first sorted walk of one source; returns bytes taken from it."""
        taken = 0
        # parents of the source root (e.g. usr/, usr/lib/) are created as plain directories
        parts = root.strip("/").split("/")
        for i in range(1, len(parts)):
            p = "/" + "/".join(parts[:i])
            if not os.path.isdir(self.target(p)) and not self.dry_run:
                os.makedirs(self.target(p), mode=0o755, exist_ok=True)
                self.dir_stats.append((self.target(p), os.stat(p)))
        stack = [root]
        self.make_dir(root, os.lstat(root))
        # explicit stack of iterators: recursion depth stays bounded whatever the tree
        iters = [iter(sorted_entries(root))]
        while iters:
            if self.done() or (budget is not None and taken >= budget * 0.99):
                return taken
            ent = next(iters[-1], None)
            if ent is None:
                iters.pop()
                stack.pop()
                continue
            path = ent.path
            try:
                st = os.lstat(path)
            except OSError:
                self.skipped += 1
                continue
            if stat.S_ISDIR(st.st_mode):
                if os.path.realpath(path) in self.roots:
                    continue  # another source: taken on its own turn
                self.make_dir(path, st)
                stack.append(path)
                iters.append(iter(sorted_entries(path)))
            elif stat.S_ISLNK(st.st_mode):
                self.copy_symlink(path, st)
            elif stat.S_ISREG(st.st_mode) and readable(path):
                if budget is None or taken + st.st_size <= budget:
                    taken += self.copy_file(path, st)
            else:
                self.skipped += 1  # device, fifo, socket, or unreadable
        return taken

    def finish_dirs(self):
        if self.dry_run:
            return
        # deepest first, so setting a parent's mtime is the last write to it
        for dst, st in sorted(self.dir_stats, key=lambda d: d[0].count("/"), reverse=True):
            if os.geteuid() == 0:
                os.lchown(dst, st.st_uid, st.st_gid)
            os.chmod(dst, stat.S_IMODE(st.st_mode) & ~0o6000 | 0o700)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def regular_files(top):
    """Regular files under top, relative paths, sorted by bytes of the path."""
    out = []
    for d, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            if stat.S_ISREG(os.lstat(p).st_mode):
                out.append(os.path.relpath(p, top))
    out.sort(key=os.fsencode)
    return out


def make_v2(v1, v2):
    subprocess.run(["cp", "-a", "--reflink=auto", v1, v2], check=True)
    changed = []
    for i, rel in enumerate(regular_files(v2)):
        if i % CHANGE_EVERY != CHANGE_EVERY - 1:
            continue
        k = len(changed)
        p = os.path.join(v2, rel)
        st = os.lstat(p)
        blob = hashlib.sha256(f"nano-bench {k} {rel}".encode("utf-8", "surrogateescape")).digest() * 2
        mode = stat.S_IMODE(st.st_mode)
        os.chmod(p, mode | 0o200)
        with open(p, "r+b") as f:
            if k % 2 == 0 or st.st_size < 2 * CHANGE_LEN:
                f.seek(0, os.SEEK_END)  # append
            else:
                f.seek(st.st_size // 2)  # overwrite in the middle
            f.write(blob[:CHANGE_LEN])
        os.chmod(p, mode)
        # a new version has a new mtime; +1 s keeps it deterministic
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        changed.append(rel)
    return changed


def changed_zst_bytes(v2, listfile):
    tar = subprocess.Popen(["tar", "c", "-C", v2, "--no-recursion", "--null",
                            "--verbatim-files-from", "-T", listfile], stdout=subprocess.PIPE)
    zst = subprocess.run(["zstd", "-3", "-T2", "-q", "-c"], stdin=tar.stdout,
                         stdout=subprocess.PIPE, check=True)
    tar.stdout.close()
    if tar.wait() != 0:
        die("tar of the changed files failed")
    return len(zst.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=os.path.join(HERE, "work"), help="scratch dir (default bench/work)")
    ap.add_argument("--min-files", type=int, default=30_000)
    ap.add_argument("--min-bytes", type=int, default=1 << 30, help="default 1 GiB")
    ap.add_argument("--margin", type=float, default=0.05, help="stop at targets * (1 + margin)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the tree exists")
    ap.add_argument("--dry-run", action="store_true", help="only print what would be selected")
    a = ap.parse_args()

    for tool in ("cp", "tar", "zstd"):
        if shutil.which(tool) is None:
            die(f"{tool} not found (apt-get install {'zstd' if tool == 'zstd' else 'coreutils tar'})")

    top = os.path.join(a.work, "tree")
    meta_path = os.path.join(top, "tree.json")
    if os.path.exists(meta_path) and not a.force and not a.dry_run:
        with open(meta_path) as f:
            meta = json.load(f)
        print(f"make-tree: {top} already built (--force to rebuild)")
        print_summary(meta)
        return

    tmp = os.path.join(a.work, "tree.tmp")
    if not a.dry_run:
        os.makedirs(a.work, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    v1 = os.path.join(tmp, "v1")
    min_files = math.ceil(a.min_files * (1 + a.margin))
    min_bytes = math.ceil(a.min_bytes * (1 + a.margin))
    sel = Selector(v1, min_files, min_bytes, a.dry_run)
    sources = []
    for src, budget in SOURCES:
        if sel.done():
            break
        real = os.path.realpath(src)
        if not os.path.isdir(src) or real in sel.done_roots:
            continue
        sel.done_roots.add(real)
        f0, b0 = sel.files, sel.bytes
        sel.walk_source(src, budget)
        sources.append({"path": src, "files": sel.files - f0, "bytes": sel.bytes - b0})
        print(f"make-tree: {src:<60} {sel.files - f0:>7} files {(sel.bytes - b0) / 1e6:>9.1f} MB",
              file=sys.stderr)
    sel.finish_dirs()
    if not sel.done():
        die(f"only {sel.files} files / {sel.bytes} bytes found, need {min_files} / {min_bytes}")

    meta = {
        "files": sel.files, "bytes": sel.bytes, "symlinks": sel.symlinks, "dirs": sel.dirs,
        "skipped": sel.skipped, "sources": sources, "selection_sha256": sel.digest.hexdigest(),
        "min_files": a.min_files, "min_bytes": a.min_bytes, "margin": a.margin,
    }
    if a.dry_run:
        print_summary(meta)
        return

    print("make-tree: making v2 (copy of v1, every 20th file changed)", file=sys.stderr)
    changed = make_v2(v1, os.path.join(tmp, "v2"))
    listfile = os.path.join(tmp, "changed.list")
    with open(listfile, "wb") as f:
        f.write(b"".join(os.fsencode(p) + b"\0" for p in changed))
    with open(os.path.join(tmp, "changed.txt"), "w", errors="surrogateescape") as f:
        f.write("".join(p + "\n" for p in changed))
    meta["changed_files"] = len(changed)
    meta["changed_bytes"] = sum(os.lstat(os.path.join(tmp, "v2", p)).st_size for p in changed)
    meta["changed_zst_bytes"] = changed_zst_bytes(os.path.join(tmp, "v2"), listfile)
    with open(os.path.join(tmp, "tree.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    shutil.rmtree(top, ignore_errors=True)
    os.rename(tmp, top)
    print(f"make-tree: done: {top}")
    print_summary(meta)


def print_summary(m):
    print(f"tree: {m['files']} regular files, {m['bytes']} bytes ({m['bytes'] / 1e9:.2f} GB), "
          f"{m['symlinks']} symlinks, {m['dirs']} directories; selection {m['selection_sha256'][:16]}")
    if "changed_files" in m:
        print(f"v2: {m['changed_files']} files changed ({m['changed_bytes']} bytes); "
              f"tar c <changed> | zstd -3 -T2 = {m['changed_zst_bytes']} bytes")


if __name__ == "__main__":
    main()
