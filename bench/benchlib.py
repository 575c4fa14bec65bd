"""What the benchmarks share: a description of the machine and of the tools' versions."""

import json
import os
import platform
import subprocess


def machine_info(work):
    """CPU model and count, memory, kernel, distribution, and the filesystem holding `work`."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    fs = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", work], capture_output=True,
                        text=True).stdout.strip() or "?"
    distro = "?"
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as f:
            kv = dict(l.rstrip("\n").split("=", 1) for l in f if "=" in l)
        distro = kv.get("PRETTY_NAME", "?").strip('"')
    return {"cpu": cpu, "cpus": os.cpu_count(), "mem_gb": round(mem_kb / 1e6, 1),
            "kernel": platform.release(), "distro": distro, "fs": fs}


def first_line(argv):
    """The first non-empty line a command prints (its version, for `tool --version`), or "?"."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        lines = [l.strip() for l in (out.stdout + out.stderr).splitlines() if l.strip()]
        return lines[0] if lines else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def nano_buildtype(nano_bin):
    """The meson buildtype of the build dir the binary comes from (…/build/cli/nano), or "?"."""
    info = os.path.join(os.path.dirname(os.path.dirname(nano_bin)), "meson-info",
                        "intro-buildoptions.json")
    try:
        with open(info) as f:
            return next(o["value"] for o in json.load(f) if o["name"] == "buildtype")
    except (OSError, ValueError, StopIteration):
        return "?"
