#!/usr/bin/python3
"""Ingest benchmark: `nano store add` against mksquashfs, tar | zstd and ostree, side by side.

    bench/ingest.py [--tools squashfs,tar,ostree,nano] [--repeat N] [--cache warm|cold]
                    [--no-sync] [--nano-bin PATH] [--json PATH] [--keep]

Every tool ingests v1 into a fresh output, then v2 (5 % of the files changed): mksquashfs and
tar | zstd write a second, separate image; ostree and nano add v2 to the same repo / store, and
what that adds is their "v2 added bytes". Runs alternate the tools (A,B,C,D,A,B,C,D…) and report
medians. Prints a Markdown table on stdout, writes all figures as JSON under bench/work/results/.
The trees come from bench/make-tree.py (run here if bench/work/tree/ is missing). Manual use only:
this is not, and must not become, a CI job. Only Python 3 stdlib is used.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import sys
import time

from benchlib import first_line, machine_info, nano_buildtype

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ALL_TOOLS = ["squashfs", "tar", "ostree", "nano"]
LABEL = {
    "squashfs": "mksquashfs (zstd -3, 2 procs)",
    "tar": "tar c \\| zstd -3 -T2",
    "ostree": "ostree commit (archive)",
    "nano": "nano store add",
}
# program -> Debian package providing it
NEEDS = {
    "squashfs": {"mksquashfs": "squashfs-tools"},
    "tar": {"tar": "tar", "zstd": "zstd"},
    "ostree": {"ostree": "ostree"},
    "nano": {},
}


def die(msg):
    print(f"ingest: error: {msg}", file=sys.stderr)
    sys.exit(1)


def note(msg):
    print(f"ingest: {msg}", file=sys.stderr, flush=True)


def du(path, apparent):
    """Bytes under path (a file or a directory), as `du -sb --apparent-size` or `du -sB1`."""
    args = ["du", "-s"] + (["-b", "--apparent-size"] if apparent else ["-B1"]) + [path]
    return int(subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()[0])


def sizes(path):
    return {"apparent": du(path, True), "disk": du(path, False)}


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read_all(top):
    """Read every regular file under top once, so that it sits in the page cache."""
    n = 0
    for d, _, files in os.walk(top):
        for name in files:
            p = os.path.join(d, name)
            if os.path.islink(p):
                continue
            with open(p, "rb", buffering=0) as f:
                while chunk := f.read(1 << 20):
                    n += len(chunk)
    return n


class Bench:
    def __init__(self, a, tree):
        self.a = a
        self.tree = tree
        self.v1 = os.path.join(a.work, "tree", "v1")
        self.v2 = os.path.join(a.work, "tree", "v2")
        self.out = os.path.join(a.work, "out")
        self.logs = os.path.join(a.work, "logs")
        os.makedirs(self.logs, exist_ok=True)

    # --- one timed command -------------------------------------------------------------------
    def run(self, tool, step, argv, env=None):
        """Run argv with the cache prepared as asked; return timings and the exit code."""
        if self.a.cache == "cold":
            drop_caches()
        else:
            os.sync()  # earlier runs' dirty pages are not written back during this one
        log = os.path.join(self.logs, f"{tool}-{step}.log")
        load = os.getloadavg()[0]
        with open(log, "wb") as logf:
            t0 = time.monotonic()
            p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                 env=env, stdin=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            t1 = time.monotonic()
            p.returncode = os.waitstatus_to_exitcode(status)
            if self.a.sync:
                os.sync()  # mksquashfs and tar do not sync, nano and ostree do: time all to disk
            t2 = time.monotonic()
        return {"wall_s": t2 - t0, "cmd_s": t1 - t0, "sync_s": t2 - t1,
                "cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_kb": ru.ru_maxrss,
                "rc": p.returncode, "log": log, "loadavg_before": load}

    def check(self, tool, step, r):
        if r["rc"] != 0:
            with open(r["log"], errors="replace") as f:
                tail = "".join(f.readlines()[-15:])
            die(f"{tool} {step} failed with exit code {r['rc']} (log {r['log']}):\n{tail}")

    # --- the four tools: each returns {"v1": {...}, "v2": {...}} or None if skipped ----------
    def squashfs(self, d):
        res = {}
        for step, src in (("v1", self.v1), ("v2", self.v2)):
            img = os.path.join(d, f"{step}.sqfs")
            r = self.run("squashfs", step, ["mksquashfs", src, img, "-comp", "zstd",
                                            "-Xcompression-level", "3", "-processors", "2",
                                            "-noappend", "-no-progress"])
            self.check("squashfs", step, r)
            r["stored"] = sizes(img)
            res[step] = r
        res["v2"]["added"] = dict(res["v2"]["stored"], full_image=True)
        return res

    def tar(self, d):
        res = {}
        for step, src in (("v1", self.v1), ("v2", self.v2)):
            out = os.path.join(d, f"{step}.tar.zst")
            r = self.run("tar", step, ["bash", "-c",
                                       'set -o pipefail; tar c -C "$1" . | zstd -3 -T2 -q > "$2"',
                                       "bash", src, out])
            self.check("tar", step, r)
            r["stored"] = sizes(out)
            res[step] = r
        res["v2"]["added"] = dict(res["v2"]["stored"], full_image=True)
        return res

    def ostree(self, d):
        repo = os.path.join(d, "repo")
        subprocess.run(["ostree", f"--repo={repo}", "init", "--mode=archive"], check=True)
        res = {}
        before = sizes(repo)
        for step, src in (("v1", self.v1), ("v2", self.v2)):
            r = self.run("ostree", step, ["ostree", f"--repo={repo}", "commit", "--branch=b",
                                          f"--tree=dir={src}", f"--subject=bench {step}"])
            self.check("ostree", step, r)
            r["stored"] = sizes(repo)
            r["added"] = {k: r["stored"][k] - before[k] for k in before}
            before = r["stored"]
            res[step] = r
        return res

    def nano(self, d):
        nano = self.a.nano_bin
        if not (os.path.isfile(nano) and os.access(nano, os.X_OK)):
            note(f"nano: SKIPPED: no executable at {nano} (build it, or set NANO_BIN / --nano-bin)")
            return None
        home = os.path.join(d, "home")
        os.makedirs(home)
        env = dict(os.environ, NANO_HOME=home)
        store = os.path.join(home, "store")
        res = {}
        before = None
        for step, src, version in (("v1", self.v1, "1"), ("v2", self.v2, "2")):
            r = self.run("nano", step, [nano, "store", "add", src, "--name", "bench",
                                        "--version", version], env=env)
            ref = os.path.join(store, "refs", "bench", version)
            why = None
            if r["rc"] != 0:
                why = f"exit code {r['rc']}"
            elif not os.path.isfile(ref):
                why = f"exit code 0 but no ref {ref} was written"
            if why:
                with open(r["log"], errors="replace") as f:
                    tail = "".join("    " + l for l in f.readlines()[-8:])
                note(f"nano: SKIPPED: `nano store add {src}` failed ({why}); the importer may "
                     f"not be in yet. Log {r['log']}" + (f":\n{tail}" if tail else ""))
                return res or None
            r["stored"] = sizes(store)
            r["manifest"] = nano_manifest_info(store, ref)
            if before is None:  # growth of v2 is measured against the store after v1
                before = r["stored"]
            else:
                r["added"] = {k: r["stored"][k] - before[k] for k in before}
            res[step] = r
        return res

    def round(self, tool):
        # Every round writes to a new folder, and all are removed at the end of the run (cleanup):
        # removing one tool's tens of thousands of files right before the next tool runs makes
        # ext4 skip the freshly freed inodes (recently_deleted()) when that tool creates files,
        # which measured the previous tool's clean-up instead of the tool.
        self.rounds = getattr(self, "rounds", 0) + 1
        d = os.path.join(self.out, f"{tool}-{self.rounds}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return getattr(self, tool)(d)

    def cleanup(self):
        if not self.a.keep:
            shutil.rmtree(self.out, ignore_errors=True)


def nano_manifest_info(store, ref):
    """How the release's manifest is stored (doc/formats.md): canonical, or packed (zstd, perhaps
    against a base manifest); its canonical size and the bytes its file takes."""
    with open(ref) as f:
        ident = f.read().strip()
    h = ident.split(":", 1)[1]
    path = os.path.join(store, "manifests", h[:2], h[2:])
    with open(path, "rb") as f:
        head = f.read(64)
    info = {"id": ident, "stored": os.path.getsize(path)}
    if head[:8] == b"NANOMPK\x01":
        size, depth = struct.unpack_from("<QI", head, 8)
        info.update(form="packed", canonical=size, depth=depth,
                    base=("sha256:" + head[24:56].hex()) if depth else None)
    else:
        info.update(form="canonical", canonical=info["stored"], depth=0, base=None)
    return info


def median_runs(runs):
    """Median of every numeric figure over repeated runs of one tool step."""
    if not runs:
        return None
    m = {}
    for k in ("wall_s", "cmd_s", "sync_s", "cpu_s", "max_rss_kb"):
        m[k] = statistics.median(r[k] for r in runs)
    m["wall_min_s"] = min(r["wall_s"] for r in runs)
    m["wall_max_s"] = max(r["wall_s"] for r in runs)
    if "manifest" in runs[-1]:
        m["manifest"] = runs[-1]["manifest"]  # the same in every run
    for k in ("stored", "added"):
        if k in runs[-1]:
            m[k] = {kk: (statistics.median(r[k][kk] for r in runs) if kk != "full_image"
                         else runs[-1][k][kk]) for kk in runs[-1][k]}
    return m


def tool_versions(tools, nano_bin):
    v = {}

    if "squashfs" in tools:
        v["mksquashfs"] = first_line(["mksquashfs", "-version"])
    if "tar" in tools:
        v["tar"] = first_line(["tar", "--version"])
        v["zstd"] = first_line(["zstd", "--version"])
    if "ostree" in tools:
        out = subprocess.run(["ostree", "--version"], capture_output=True, text=True).stdout
        v["ostree"] = next((l.split(":", 1)[1].strip().strip("'") for l in out.splitlines()
                            if "Version" in l), "?")
    if "nano" in tools:
        v["nano"] = f"{nano_bin} (buildtype {nano_buildtype(nano_bin)})"
    return v


# --- report ---------------------------------------------------------------------------------
def mb(n):
    return f"{n / 1e6:,.1f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_ratio(r, goal=None):
    if r is None:
        return "n/a"
    s = f"{r:.2f}x"
    if goal is not None:
        s += " ✓" if r <= goal else " ✗"
    return s


def report(meta, tree, med, skipped):
    out = []
    each = tree.get("changed_zst_each_bytes")
    p = out.append
    m = meta["machine"]
    p(f"Ingest benchmark, {meta['date']}: {m['cpu']}, {m['cpus']} CPUs, {m['mem_gb']} GB RAM, "
      f"{m['distro']}, Linux {m['kernel']}, {m['fs']}.")
    p("")
    p(f"Page cache: **{meta['cache']}** "
      f"({'source read once before the runs' if meta['cache'] == 'warm' else 'dropped before every run'}); "
      f"sync: {'every time includes a final sync() of the written data' if meta['sync'] else 'off'}; "
      f"repeats: {meta['repeat']}"
      f"{' (median, v1 time range in brackets)' if meta['repeat'] > 1 else ''}; load average at start {meta['loadavg_at_start']}.")
    p("")
    p(f"Tree v1: {tree['files']:,} regular files, {tree['bytes']:,} bytes "
      f"({tree['bytes'] / 1e9:.2f} GB), {tree['symlinks']:,} symlinks, {tree['dirs']:,} directories. "
      f"v2: {tree['changed_files']:,} files changed ({mb(tree['changed_bytes'])} MB); "
      f"their `tar | zstd -3` size: **{mb(tree['changed_zst_bytes'])} MB**"
      + (f", each compressed on its own with `zstd -3`: **{mb(each)} MB**." if each else "."))
    p("")
    p("| tool | v1 time s | MB/s | files/s | CPU s | max RSS MB | stored MB | disk MB "
      "| v2 time s | v2 added MB | v2 added disk MB | v2 added / changed tar.zst | v2 added / changed each.zst |")
    p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for tool in meta["tools"]:
        r = med.get(tool)
        if not r or not r.get("v1"):
            p(f"| {LABEL[tool]} | {skipped.get(tool, 'skipped')} |" + " |" * 11)
            continue
        v1, v2 = r["v1"], r.get("v2")
        t = v1["wall_s"]
        spread = f" ({v1['wall_min_s']:.1f}–{v1['wall_max_s']:.1f})" if meta["repeat"] > 1 else ""
        row = [LABEL[tool], f"{t:.2f}{spread}", f"{tree['bytes'] / 1e6 / t:,.1f}",
               f"{tree['files'] / t:,.0f}", f"{v1['cpu_s']:.1f}", f"{v1['max_rss_kb'] / 1e3:,.0f}",
               mb(v1["stored"]["apparent"]), mb(v1["stored"]["disk"])]
        if v2:
            full = v2["added"].get("full_image")
            row += [f"{v2['wall_s']:.2f}",
                    mb(v2["added"]["apparent"]) + (" (full image)" if full else ""),
                    mb(v2["added"]["disk"]),
                    fmt_ratio(ratio(v2["added"]["apparent"], tree["changed_zst_bytes"])),
                    fmt_ratio(ratio(v2["added"]["apparent"], each))]
        else:
            row += ["failed", "", "", "", ""]
        p("| " + " | ".join(row) + " |")
    p("")
    p("MB = 10^6 bytes. stored = apparent size (`du -sb --apparent-size`) of the image file, repo "
      "or `$NANO_HOME/store`; disk = `du -sB1`. files/s counts regular files. v2 added = growth of "
      "the repo / store when v2 is added to it; mksquashfs and tar have no cross-version "
      "sharing, so theirs is the full second image. changed tar.zst: the changed files as one "
      "`tar | zstd -3` stream; changed each.zst: each changed file compressed on its own with "
      "`zstd -3`, the least a store that compresses file by file (for random access) can add.")
    p("")
    n = med.get("nano")
    nv1 = n["v1"] if n and n.get("v1") else None
    nv2 = n["v2"] if n and n.get("v2") else None
    mans = [(step, v["manifest"]) for step, v in (("v1", nv1), ("v2", nv2)) if v and v.get("manifest")]
    if mans:
        def describe(step, m):
            v1_id = nv1["manifest"]["id"] if nv1 and nv1.get("manifest") else None
            how = ("canonical" if m["form"] == "canonical" else "packed, no base" if not m["base"] else
                   f"packed against {'v1' if m['base'] == v1_id else 'another'}'s, depth {m['depth']}")
            return (f"{step} {m['canonical']:,} bytes canonical, {m['stored']:,} stored ({how})")
        p("nano's manifests: " + "; ".join(describe(step, m) for step, m in mans) + ".")
        p("")
    p("| nano vs | time ratio (nano / peer) | stored ratio (nano / peer) | v2 added ratio |")
    p("|---|--:|--:|--:|")
    for tool in meta["tools"]:
        r = med.get(tool)
        if tool == "nano" or not r or not r.get("v1"):
            continue
        p(f"| {LABEL[tool]} | "
          f"{fmt_ratio(ratio(nv1 and nv1['wall_s'], r['v1']['wall_s']))} | "
          f"{fmt_ratio(ratio(nv1 and nv1['stored']['apparent'], r['v1']['stored']['apparent']))} | "
          f"{fmt_ratio(ratio(nv2 and nv2['added']['apparent'], r['v2']['added']['apparent']))} |")
    p("")
    sq, tz = med.get("squashfs"), med.get("tar")
    sq = sq if sq and sq.get("v1") else None
    tz = tz if tz and tz.get("v1") else None
    targets = [  # (what, nano figure, peer figure, peer's name if it was not run, goal)
        ("ingest time vs mksquashfs", nv1 and nv1["wall_s"], sq and sq["v1"]["wall_s"],
         "mksquashfs", 1.0),
        ("ingest time vs tar \\| zstd", nv1 and nv1["wall_s"], tz and tz["v1"]["wall_s"], "tar", 1.5),
        ("stored size vs tar \\| zstd", nv1 and nv1["stored"]["apparent"],
         tz and tz["v1"]["stored"]["apparent"], "tar", 1.1),
        ("v2 added vs changed files' tar \\| zstd", nv2 and nv2["added"]["apparent"],
         tree["changed_zst_bytes"], None, 1.1),
        ("v2 added vs changed files each `zstd -3`", nv2 and nv2["added"]["apparent"],
         tree.get("changed_zst_each_bytes"), None, 1.1),
    ]
    p("| target (shown, not asserted) | nano | goal |")
    p("|---|--:|--:|")
    for name, mine, peer, peer_name, goal in targets:
        if not mine:
            val = "n/a (no nano figures)" if not nv1 else "n/a (nano v2 failed)"
        elif not peer:
            val = f"n/a ({peer_name} not run)"
        else:
            val = fmt_ratio(ratio(mine, peer), goal)
        p(f"| {name} | {val} | ≤ {goal}x |")
    if "nano" in skipped:
        p("")
        p(f"nano: {skipped['nano']}.")
    return "\n".join(out)


def changed_zst_each_bytes(tree_dir):
    """The changed files compressed one by one with `zstd -3`: what a store that keeps each file's
    content on its own (nano, ostree) cannot beat, where tar | zstd compresses them as one stream."""
    with open(os.path.join(tree_dir, "changed.list"), "rb") as f:
        changed = [p.decode("utf-8", "surrogateescape") for p in f.read().split(b"\0") if p]
    with tempfile.TemporaryDirectory() as out:
        total = 0
        for i, rel in enumerate(changed):
            dst = os.path.join(out, f"{i}.zst")
            subprocess.run(["zstd", "-3", "-q", "-f", "-o", dst, os.path.join(tree_dir, "v2", rel)], check=True)
            total += os.path.getsize(dst)
            os.unlink(dst)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tools", default=",".join(ALL_TOOLS),
                    help=f"comma-separated, in run order (default {','.join(ALL_TOOLS)})")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of all tools; medians reported")
    ap.add_argument("--cache", choices=("warm", "cold"), default="warm",
                    help="warm (default): source read once before; cold: drop caches before each run (root)")
    ap.add_argument("--no-sync", dest="sync", action="store_false",
                    help="do not include a final sync() in each timing")
    ap.add_argument("--nano-bin", default=os.environ.get("NANO_BIN",
                                                         os.path.join(REPO, "build", "cli", "nano")))
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--json", help="JSON output (default bench/work/results/ingest-<date>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the outputs in bench/work/out/")
    a = ap.parse_args()

    tools = [t for t in a.tools.split(",") if t]
    bad = [t for t in tools if t not in ALL_TOOLS]
    if bad or not tools:
        die(f"unknown tool(s) {','.join(bad)}; choose from {','.join(ALL_TOOLS)}")
    if a.repeat < 1:
        die("--repeat must be >= 1")
    missing = {prog: pkg for t in tools for prog, pkg in NEEDS[t].items() if not shutil.which(prog)}
    for prog in ("du", "findmnt", "bash"):
        if not shutil.which(prog):
            missing[prog] = "coreutils" if prog == "du" else ("util-linux" if prog == "findmnt" else "bash")
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        die(f"missing {', '.join(sorted(missing))}: sudo apt-get install {pkgs}")
    if a.cache == "cold" and os.geteuid() != 0:
        die("--cache cold drops the page cache and needs root; use --cache warm")
    a.nano_bin = os.path.abspath(a.nano_bin)
    a.work = os.path.abspath(a.work)

    tree_json = os.path.join(a.work, "tree", "tree.json")
    if not os.path.exists(tree_json):
        note("no tree yet: running bench/make-tree.py")
        subprocess.run([sys.executable, os.path.join(HERE, "make-tree.py"), "--work", a.work],
                       check=True, stdout=sys.stderr)
    with open(tree_json) as f:
        tree = json.load(f)
    if "changed_zst_each_bytes" not in tree:
        tree["changed_zst_each_bytes"] = changed_zst_each_bytes(os.path.join(a.work, "tree"))
        with open(tree_json, "w") as f:
            json.dump(tree, f, indent=2)
            f.write("\n")

    load = os.getloadavg()[0]
    if load > 0.5:
        note(f"warning: load average is {load:.2f}: something else is running, figures will be noisy")
    b = Bench(a, tree)
    if a.cache == "warm":
        note("warm cache: reading v1 and v2 once")
        read_all(b.v1)
        read_all(b.v2)

    runs = {t: {"v1": [], "v2": []} for t in tools}
    skipped = {}
    t_start = time.monotonic()
    for rep in range(a.repeat):
        for tool in tools:
            if tool in skipped:
                continue
            note(f"round {rep + 1}/{a.repeat}: {tool}")
            res = b.round(tool)
            if res is None or "v2" not in res:
                skipped[tool] = ("`nano store add` failed (see above); figures pending"
                                 if res is None else "v2 failed; figures partial")
            for step in ("v1", "v2"):
                if res and step in res:
                    runs[tool][step].append(res[step])
                    note(f"  {step}: {res[step]['wall_s']:.2f} s, "
                         f"{res[step]['stored']['apparent'] / 1e6:.1f} MB stored")
    elapsed = time.monotonic() - t_start
    b.cleanup()

    med = {t: {s: median_runs(runs[t][s]) for s in ("v1", "v2")} for t in tools}
    meta = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(a.work), "versions": tool_versions(tools, a.nano_bin),
        "tools": tools, "cache": a.cache, "sync": a.sync, "repeat": a.repeat,
        "elapsed_s": round(elapsed, 1), "loadavg_at_start": round(load, 2),
    }
    text = report(meta, tree, med, skipped)
    print(text)

    path = a.json or os.path.join(a.work, "results", datetime.datetime.now().strftime(
        "ingest-%Y%m%d-%H%M%S.json"))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "tree": tree, "skipped": skipped, "median": med, "runs": runs,
                   "markdown": text}, f, indent=2)
        f.write("\n")
    note(f"{elapsed:.0f} s of runs; JSON: {path}")


if __name__ == "__main__":
    main()
