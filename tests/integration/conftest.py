# SPDX-License-Identifier: LGPL-2.1-or-later
"""Fixtures for the integration tests. They drive the built `nano` as a user would.

Fixtures:
    nano_bin        Path of the binary: $NANO_BIN, else build/cli/nano (skips if missing; fails
                    when NANO_TEST_MUST_WORK=1)
    workdir         a fresh private directory per test; at teardown FUSE mounts under it are
                    unmounted, processes whose NANO_HOME (or cwd) is under it are killed, its log
                    files are checked for sanitizer reports, and it is removed (NANO_TEST_KEEP=1
                    keeps it)
    nano_home       workdir/home, created empty: the test's NANO_HOME
    nano            nano(*args, home=nano_home, input=None, check=True, timeout=60, env=None,
                    cwd=None, text=True) -> NanoResult (returncode, stdout, stderr, .json())
    require_fuse    skip unless this user can mount FUSE (/dev/fuse read/write, fusermount3)
    require_userns  skip unless `unshare -Ur true` works
                    (both fail instead of skipping when NANO_TEST_MUST_WORK=1)
Helpers (import them: `from nanotest import make_tree, tree_digest`): make_tree(path, spec,
mtime_ns=None), tree_digest(path, mtime=True), run_nano(nano_bin, *args, home=..., ...).

The tests must run unprivileged: as root every test fails, unless NANO_TEST_ALLOW_ROOT=1.
"""

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from nanotest import (  # noqa: F401 (re-exported for tests that prefer conftest's names)
    REPO_ROOT, cleanup_workdir, env_flag, find_nano_bin, gate, keep_tmp, make_tree, must_work,
    probe_fuse, probe_userns, remove_workdir, run_nano, tree_digest)


def pytest_report_header(config):
    b = find_nano_bin()
    lines = [f"nano: NANO_BIN={b} ({'present' if b.is_file() else 'MISSING'}), euid={os.geteuid()}, "
             f"NANO_TEST_MUST_WORK={os.environ.get('NANO_TEST_MUST_WORK', '')}"]
    if b.is_file():
        try:
            r = subprocess.run([b, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=10)
            v = r.stdout.decode("utf-8", "replace").strip().replace("\n", " ")
            lines.append(f"nano: --version: {v or '(nothing)'} [exit {r.returncode}]")
        except (OSError, subprocess.TimeoutExpired) as e:
            lines.append(f"nano: --version: {e}")
    lines.append(f"nano: fuse: {probe_fuse() or 'usable'}; userns: {probe_userns() or 'usable'}")
    return lines


@pytest.fixture(scope="session", autouse=True)
def unprivileged():
    """The point of nano is to need no privilege: running the suite as root would hide that."""
    if os.geteuid() == 0 and not env_flag("NANO_TEST_ALLOW_ROOT"):
        pytest.fail("the integration tests are running as root (euid 0). They must run as an "
                    "unprivileged user: scripts/test.sh does that when started as root. "
                    "Set NANO_TEST_ALLOW_ROOT=1 only for root-only tests.", pytrace=False)


@pytest.fixture(scope="session")
def nano_bin():
    b = find_nano_bin()
    if not b.is_file() or not os.access(b, os.X_OK):
        gate(f"nano binary not found or not executable at {b} "
             f"(build it with `meson setup build && ninja -C build`, or set NANO_BIN)")
    return b


@pytest.fixture
def workdir(request):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:48]
    d = Path(tempfile.mkdtemp(prefix=f"nano-{name}-"))
    yield d
    problems = cleanup_workdir(d)
    if keep_tmp():
        print(f"\nNANO_TEST_KEEP: kept {d}")
    else:
        remove_workdir(d)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def nano_home(workdir):
    h = workdir / "home"
    h.mkdir()
    return h


@pytest.fixture
def nano(nano_bin, nano_home):
    def nano(*args, home=None, **kwargs):
        return run_nano(nano_bin, *args, home=nano_home if home is None else home, **kwargs)
    return nano


@pytest.fixture
def require_fuse():
    gate(probe_fuse())


@pytest.fixture
def require_userns():
    gate(probe_userns())
