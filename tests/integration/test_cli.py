# SPDX-License-Identifier: LGPL-2.1-or-later
"""The command line itself: --version, --help, unknown verbs, and who runs the tests."""

import os
import re

import pytest

from nanotest import REPO_ROOT, env_flag, must_work


def project_version():
    m = re.search(r"project\([^)]*?version\s*:\s*'([^']+)'", (REPO_ROOT / "meson.build").read_text(), re.S)
    return m.group(1) if m else None


def test_version(nano):
    r = nano("--version")
    first = r.stdout.splitlines()[0] if r.stdout else ""
    m = re.match(r"nano (\d+\.\d+(?:\.\d+)?\S*)", first)
    assert m, f"first line of --version is not `nano <version>`: {first!r}"
    want = project_version()
    if want:
        assert m.group(1).startswith(want), f"--version says {m.group(1)}, meson.build says {want}"
    # The build's features, as +WORD / -WORD.
    features = re.findall(r"(?:^|\s)([+-][A-Z][A-Z0-9_]*)(?=\s|$)", r.stdout)
    assert any(f[1:] == "FUSE" for f in features), f"no +FUSE/-FUSE in --version: {r.stdout!r}"
    if must_work():
        # CI installs libfuse3-dev, so the build there must have FUSE.
        assert "+FUSE" in features, f"CI build without FUSE: {r.stdout!r}"


def test_help(nano):
    r = nano("--help")
    assert r.returncode == 0
    assert re.search(r"\bstore\b", r.stdout), f"--help does not list `store`:\n{r.stdout}"


def test_store_help(nano):
    r = nano("store", "--help")
    assert r.returncode == 0
    assert r.stdout.strip(), "`nano store --help` printed nothing on stdout"


def test_unknown_verb(nano):
    r = nano("frobnicate-xyzzy", check=False)
    assert r.returncode == 2, f"unknown verb: want exit 2 (usage)\n{r}"
    assert "frobnicate-xyzzy" in r.stderr, f"the error does not name the verb\n{r}"
    assert r.stdout == "", f"errors belong on stderr\n{r}"


def test_runs_unprivileged():
    """CI starts as root; the runner must have dropped to an unprivileged user for real."""
    if env_flag("NANO_TEST_ALLOW_ROOT"):
        pytest.skip("NANO_TEST_ALLOW_ROOT=1")
    assert os.geteuid() != 0 and os.getuid() != 0
    if must_work():
        assert os.getegid() != 0 and os.getgid() != 0
        assert 0 not in os.getgroups(), f"supplementary groups include root: {os.getgroups()}"
        with open("/proc/self/status") as f:
            caps = dict(line.split(":", 1) for line in f if line.startswith("Cap"))
        for k in ("CapEff", "CapPrm", "CapAmb"):
            assert int(caps[k], 16) == 0, f"{k} is {caps[k].strip()}: the test user has capabilities"
