#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# THE test command: installs what is missing, builds, runs every suite, prints one summary line.
#
#   scripts/test.sh [--quick | --asan-only] [--no-deps] [-k EXPR] [-- PYTEST_ARGS...]
#
#   1. scripts/install-deps.sh (Debian packages; skipped with --no-deps)
#   2. configure + build `build` (normal) and `build-asan` (-Db_sanitize=address,undefined)
#   3. meson test --suite unit --suite fuzz, in both builds
#   4. pytest tests/integration against build/cli/nano, then build-asan/cli/nano (NANO_BIN).
#      As root, pytest runs as the unprivileged user nanotest (created if missing; /dev/fuse is
#      made 0666 for it), with a clean environment.
#   5. a last line "N passed, N failed, N skipped"; the exit code is non-zero if anything failed.
#
#   --quick       skip the ASan/UBSan build and its runs
#   --asan-only   only the ASan/UBSan build
#   --no-deps     do not run install-deps.sh
#   -k EXPR       passed to pytest (select integration tests)
#
# Environment: CI=true sets NANO_TEST_MUST_WORK=1 (capability skips become failures).
# NANO_BUILD_DIR, NANO_ASAN_BUILD_DIR (build, build-asan), NANO_TEST_USER (nanotest),
# NANO_TEST_* (KEEP, TIMEOUT, ...) are passed to pytest, CC picks the compiler.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD=${NANO_BUILD_DIR:-build}
ASAN_BUILD=${NANO_ASAN_BUILD_DIR:-build-asan}
MIN_BUILD=${NANO_MIN_BUILD_DIR:-build-min}
TEST_USER=${NANO_TEST_USER:-nanotest}
PYTHON=/usr/bin/python3
PYTEST_TIMEOUT=${NANO_TEST_SUITE_TIMEOUT:-1800} # seconds, per pytest run: a hang must not eat CI
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

do_normal=1 do_asan=1 do_deps=1
pytest_args=()
usage() { sed -n '3,24p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
        case $1 in
                --quick) do_asan=0 ;;
                --asan-only) do_normal=0 ;;
                --no-deps) do_deps=0 ;;
                -k) [[ $# -ge 2 ]] || { echo "test.sh: -k needs an expression" >&2; exit 2; }
                    pytest_args+=(-k "$2"); shift ;;
                -k*) pytest_args+=("$1") ;;
                --) shift; pytest_args+=("$@"); break ;;
                -h|--help) usage; exit 0 ;;
                *) echo "test.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
        esac
        shift
done
if ((!do_normal && !do_asan)); then
        echo "test.sh: --quick and --asan-only together leave nothing to run" >&2
        exit 2
fi

if [[ -n ${NANO_TEST_MUST_WORK:-} ]]; then
        MUST_WORK=$NANO_TEST_MUST_WORK
elif [[ ${CI:-} == true ]]; then
        MUST_WORK=1
else
        MUST_WORK=0
fi

# ---- bookkeeping: every stage runs; the summary comes out whatever happens ----

total_pass=0 total_fail=0 total_skip=0
report=()       # one line per stage, for the summary
notes=()
START=$SECONDS
RUNDIR=$(mktemp -d /tmp/nano-test-run.XXXXXX)
chmod 0755 "$RUNDIR"

say() { printf '%s\n' "$*"; }
abspath() { [[ $1 == /* ]] && printf '%s' "$1" || printf '%s/%s' "$ROOT" "$1"; }
header() { printf '\n==> %s  [%s, +%ds]\n' "$*" "$(date +%H:%M:%S)" $((SECONDS - START)); }
add_counts() { # label pass fail skip
        set -- "$1" "${2:-0}" "${3:-0}" "${4:-0}"
        total_pass=$((total_pass + $2)) total_fail=$((total_fail + $3)) total_skip=$((total_skip + $4))
        report+=("$(printf '%-34s %s passed, %s failed, %s skipped' "$1:" "$2" "$3" "$4")")
}
stage_failed() { # label reason: counts as one failure
        total_fail=$((total_fail + 1))
        report+=("$(printf '%-34s FAILED (%s)' "$1:" "$2")")
}

# shellcheck disable=SC2317 # called from the EXIT trap
finish() {
        local rc=$1
        trap - EXIT INT TERM
        if ((rc != 0)); then
                stage_failed "test.sh" "stopped early with exit code $rc"
        fi
        header "Summary (${SECONDS}s in all)"
        local l
        for l in "${report[@]}"; do say "  $l"; done
        for l in "${notes[@]}"; do say "  note: $l"; done
        if [[ ${NANO_TEST_KEEP:-} == 1 ]]; then
                say "  note: NANO_TEST_KEEP=1: run files kept in $RUNDIR"
        else
                rm -rf "$RUNDIR"
        fi
        say ""
        say "$total_pass passed, $total_fail failed, $total_skip skipped"
        ((total_fail == 0)) && exit 0
        exit 1
}
trap 'finish $?' EXIT
trap 'echo "test.sh: interrupted" >&2; exit 130' INT TERM

# ---- stages ----

stage_deps() {
        header "Dependencies (scripts/install-deps.sh)"
        if ! "$ROOT/scripts/install-deps.sh"; then
                stage_failed "install-deps" "see above"
        fi
}

# configure DIR MESON_ARGS...: set up once; reconfigure after that (applies option changes, sees
# newly installed libraries); wipe only when reconfiguring fails.
configure() {
        local dir=$1
        shift
        if [[ -f $dir/meson-private/coredata.dat ]]; then
                local log=$RUNDIR/setup-${dir//[^A-Za-z0-9]/_}.log
                meson setup --reconfigure "$@" "$dir" >"$log" 2>&1 && return 0
                cat "$log"
                say "test.sh: reconfiguring $dir failed; wiping it (meson setup --wipe)"
                meson setup --wipe "$@" "$dir"
        else
                meson setup "$@" "$dir"
        fi
}

stage_build() { # DIR MESON_ARGS...
        local dir=$1
        header "Configure and build $dir${2:+ (${*:2})}"
        if ! configure "$@"; then
                stage_failed "build $dir" "meson setup failed"
                return 1
        fi
        # -k 0: build all that builds, so that one broken file does not hide every other test.
        if ! ninja -C "$dir" -k 0; then
                stage_failed "build $dir" "compilation failed, see above"
                return 1
        fi
        return 0
}

# meson_counts DIR -> "pass fail skip" from DIR/meson-logs/testlog.json (one JSON object a line)
meson_counts() {
        "$PYTHON" - "$1/meson-logs/testlog.json" <<'EOF'
import json, sys
p = f = s = 0
try:
    lines = open(sys.argv[1]).read().splitlines()
except OSError:
    lines = []
for line in lines:
    if not line.strip():
        continue
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r == "SKIP":
        s += 1
    else:
        f += 1
print(p, f, s)
EOF
}

# meson_failures DIR: what failed tests said (TAP "not ok" lines and their diagnostics, stderr),
# which meson's own error log leaves out for TAP tests.
meson_failures() {
        "$PYTHON" - "$1/meson-logs/testlog.json" <<'EOF'
import json, sys
try:
    lines = open(sys.argv[1]).read().splitlines()
except OSError:
    lines = []
for line in lines:
    if not line.strip():
        continue
    t = json.loads(line)
    if t.get("result") in ("OK", "EXPECTEDFAIL", "SKIP"):
        continue
    print(f"--- {t.get('name')}: {t.get('result')} (exit {t.get('returncode')})")
    out, keep = [], False
    for l in (t.get("stdout") or "").splitlines():
        if l.startswith("not ok") and "# SKIP" not in l:
            keep = True
            out.append(l)
        elif l.startswith("#") and keep:
            out.append(l)
        else:
            keep = False
    err = (t.get("stderr") or "").strip().splitlines()
    for l in out[:60] + err[-30:]:
        print("    " + l)
EOF
}

stage_meson_test() { # DIR LABEL [MESON TEST ARGS...]
        local dir=$1 label=$2 rc=0 p f s
        shift 2
        header "Unit and fuzz-corpus tests: $dir"
        if [[ ! -f $dir/build.ninja ]]; then
                stage_failed "$label" "no configured build"
                return
        fi
        rm -f "$dir/meson-logs/testlog.json"
        meson test -C "$dir" --no-rebuild --print-errorlogs --suite unit --suite fuzz "$@" </dev/null || rc=$?
        p=0 f=0 s=0
        read -r p f s < <(meson_counts "$dir") || true
        add_counts "$label" "$p" "$f" "$s"
        if ((f > 0)); then
                say "Failed tests in $dir:"
                meson_failures "$dir" || true
        fi
        if ((rc != 0 && f == 0)); then
                stage_failed "$label" "meson test exited $rc with no failed test to show for it"
        elif ((p + f + s == 0)); then
                notes+=("$label: meson found no tests")
        fi
}

# junit_counts FILE -> "pass fail skip"
junit_counts() {
        "$PYTHON" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
p = f = s = 0
try:
    root = ET.parse(sys.argv[1]).getroot()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for ts in suites:
        n = int(ts.get("tests", 0))
        bad = int(ts.get("failures", 0)) + int(ts.get("errors", 0))
        sk = int(ts.get("skipped", 0))
        f += bad
        s += sk
        p += max(0, n - bad - sk)
except (OSError, ET.ParseError):
    pass
print(p, f, s)
EOF
}

as_root=0
((EUID == 0)) && as_root=1
TEST_HOME=${HOME:-/tmp}

# As root: a dedicated unprivileged user runs the integration tests, as users will run nano.
stage_unprivileged_setup() {
        header "Unprivileged test user"
        if ! id -u "$TEST_USER" >/dev/null 2>&1; then
                say "test setup: creating user $TEST_USER (useradd) to run the integration tests unprivileged"
                if ! useradd --create-home --shell /bin/bash --user-group \
                        --comment "nano integration tests" "$TEST_USER"; then
                        stage_failed "test user" "useradd $TEST_USER failed"
                        return 1
                fi
        fi
        TEST_HOME=$(getent passwd "$TEST_USER" | cut -d: -f6)
        if [[ -z $TEST_HOME || ! -d $TEST_HOME ]]; then
                TEST_HOME=$RUNDIR/home
                mkdir -p "$TEST_HOME"
                chown "$TEST_USER:" "$TEST_HOME"
        fi
        say "test setup: integration tests run as $TEST_USER (uid $(id -u "$TEST_USER")), HOME=$TEST_HOME"

        if [[ -c /dev/fuse ]]; then
                local mode
                mode=$(stat -c %a /dev/fuse)
                if [[ $mode != 666 ]]; then
                        chmod 0666 /dev/fuse
                        say "test setup: /dev/fuse was mode $mode; made it 0666 (as distributions ship it) so that $TEST_USER can mount FUSE"
                fi
        else
                say "test setup: no /dev/fuse on this machine: FUSE tests will not run"
        fi

        # The source tree and the build dirs must be readable by the test user: its ancestors
        # traversable (a clone under /root is not), its files readable (a umask 077 clone is not).
        local d="" part
        local -a parts
        IFS=/ read -ra parts <<<"${ROOT#/}"
        for part in "${parts[@]}"; do
                d+="/$part"
                if ! as_test_user test -x "$d"; then
                        chmod o+x "$d"
                        say "test setup: made $d traversable (o+x) for $TEST_USER"
                fi
        done
        open_tree_to_others
        chown "$TEST_USER:" "$RUNDIR"
        delegate_cgroups_v1
}

# cgroup v1 hierarchies (memory, pids, cpu) get a directory the test user owns, as an administrator
# delegates one to a user; NANO_CGROUP_V1_ROOT tells nano (and the tests) to create instance cgroups
# there (doc/run.md). Hosts with cgroup v2 only have none of these mounts: nothing to do.
CGROUP_V1_ROOT=""
delegate_cgroups_v1() {
        local ctrl dir
        for ctrl in memory pids cpu; do
                # /sys/fs/cgroup/cpu may be a link to cpu,cpuacct: what counts is the mount behind it.
                dir=$(readlink -f "/sys/fs/cgroup/$ctrl" 2>/dev/null) || continue
                awk -v d="$dir" -v c="$ctrl" '$2 == d && $3 == "cgroup" && ("," $4 ",") ~ ("," c ",") { f = 1 }
                        END { exit !f }' /proc/mounts || continue
                if mkdir -p "$dir/nano-test" && chown -R "$TEST_USER:" "$dir/nano-test"; then
                        say "test setup: delegated the cgroup v1 directory $dir/nano-test to $TEST_USER (mkdir + chown -R)"
                        CGROUP_V1_ROOT=nano-test
                fi
        done
}

# Files and directories of the tree (.git aside) that others cannot read get o+rX.
open_tree_to_others() {
        local -a closed
        mapfile -t closed < <(find "$ROOT" -path "$ROOT/.git" -prune -o \
                \( \( -type d ! -perm -o=rx \) -o \( -type f ! -perm -o=r \) \) -print)
        ((${#closed[@]})) || return 0
        printf '%s\0' "${closed[@]}" | xargs -0 chmod o+rX
        say "test setup: made ${#closed[@]} files and directories readable (o+rX) for $TEST_USER: ${closed[*]:0:5}$( ((${#closed[@]} > 5)) && echo " ...")"
}

as_test_user() {
        if ((as_root)); then
                setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups -- "$@"
        else
                "$@"
        fi
}

# Does LeakSanitizer work here (it needs ptrace-like powers some containers deny)? Tried as the
# user who runs the integration tests. Sets LSAN to 1 or 0.
LSAN=0
probe_lsan() {
        local cc=${CC:-cc} out
        header "LeakSanitizer probe"
        printf '#include <stdlib.h>\nint main(void){void *volatile p = malloc(7); free(p); return 0;}\n' \
                >"$RUNDIR/lsan.c"
        if ! "$cc" -fsanitize=address -o "$RUNDIR/lsan" "$RUNDIR/lsan.c" 2>"$RUNDIR/lsan.err"; then
                say "test.sh: cannot build the probe with $cc -fsanitize=address: $(head -3 "$RUNDIR/lsan.err")"
                notes+=("LeakSanitizer off: the probe did not build")
                return 0
        fi
        chmod 0755 "$RUNDIR/lsan"
        if out=$(as_test_user env ASAN_OPTIONS=detect_leaks=1 "$RUNDIR/lsan" 2>&1 </dev/null) &&
                [[ $out != *LeakSanitizer* ]]; then
                LSAN=1
                say "LeakSanitizer works here: ASAN_OPTIONS=detect_leaks=1"
        else
                say "LeakSanitizer does not work here (${out:0:200}): ASAN_OPTIONS=detect_leaks=0"
                notes+=("LeakSanitizer does not work on this machine: leaks are not checked")
        fi
}

stage_pytest() { # LABEL BINARY [ENV=VALUE...]
        local label=$1 bin=$2 rc=0 p f s
        shift 2
        local xml=$RUNDIR/junit-${label//[^A-Za-z0-9]/_}.xml
        header "Integration tests: NANO_BIN=$bin, as $(as_test_user id -un 2>/dev/null || echo '?')"
        local -a envv=(
                PATH=/usr/local/bin:/usr/bin:/bin
                HOME="$TEST_HOME" LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
                NANO_BIN="$bin" CI="${CI:-}" NANO_TEST_MUST_WORK="$MUST_WORK"
                UBSAN_OPTIONS="$UBSAN_OPTIONS"
                "$@"
        )
        # Where cgroup v1 limits may go (delegate_cgroups_v1), or the caller's own setting.
        if [[ -n ${CGROUP_V1_ROOT:-${NANO_CGROUP_V1_ROOT:-}} ]]; then
                envv+=(NANO_CGROUP_V1_ROOT="${CGROUP_V1_ROOT:-$NANO_CGROUP_V1_ROOT}")
        fi
        [[ -n ${NANO_CGROUP_V2_ROOT:-} ]] && envv+=(NANO_CGROUP_V2_ROOT="$NANO_CGROUP_V2_ROOT")
        if ((as_root)); then
                envv+=(USER="$TEST_USER" LOGNAME="$TEST_USER")
        else
                envv+=(USER="${USER:-$(id -un)}" LOGNAME="${LOGNAME:-$(id -un)}")
                [[ -n ${TMPDIR:-} ]] && envv+=(TMPDIR="$TMPDIR")
        fi
        # Test knobs go through (NANO_TEST_KEEP, NANO_TEST_TIMEOUT, ...).
        local v
        while IFS= read -r v; do
                [[ $v == NANO_TEST_MUST_WORK ]] || envv+=("$v=${!v}")
        done < <(compgen -e | grep '^NANO_TEST_' || true)

        as_test_user env -i "${envv[@]}" \
                timeout --foreground --kill-after=30 "$PYTEST_TIMEOUT" \
                "$PYTHON" -m pytest -p no:cacheprovider -ra -v --durations=10 \
                --junitxml="$xml" "$ROOT/tests/integration" "${pytest_args[@]}" </dev/null || rc=$?

        p=0 f=0 s=0
        read -r p f s < <(junit_counts "$xml") || true
        add_counts "$label" "$p" "$f" "$s"
        case $rc in
                0) ;;
                1) ((f > 0)) || stage_failed "$label" "pytest exited 1 with no failed test in its report" ;;
                5) notes+=("$label: pytest collected no tests (exit code 5)") ;;
                124|137) stage_failed "$label" "pytest killed after ${PYTEST_TIMEOUT}s (NANO_TEST_SUITE_TIMEOUT)" ;;
                *) stage_failed "$label" "pytest exited $rc (2 interrupted, 3 internal error, 4 usage error)" ;;
        esac
}

# ---- run ----

header "nano tests in $ROOT"
# shellcheck disable=SC1091
say "$(uname -srm); $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); $(nproc) CPUs"
say "user $(id -un) (uid $EUID); CI=${CI:-}; NANO_TEST_MUST_WORK=$MUST_WORK"
say "builds: $( ((do_normal)) && echo "$BUILD ")$( ((do_asan)) && echo "$ASAN_BUILD (ASan+UBSan)")"

((do_deps)) && stage_deps
for tool in meson ninja "$PYTHON"; do
        command -v "$tool" >/dev/null || stage_failed "tools" "$tool not found"
done

have_user=1
if ((as_root)); then
        stage_unprivileged_setup || have_user=0
fi

if ((do_normal)); then
        stage_build "$BUILD" || true
fi
if ((do_asan)); then
        stage_build "$ASAN_BUILD" -Db_sanitize=address,undefined -Db_lundef=false || true
fi
if ((do_normal)); then
        # Every optional feature compiled out (the stand-in for hosts without them): the stubs must
        # keep building. Counted as a stage: a build failure is a test failure.
        if stage_build "$MIN_BUILD" --auto-features=disabled -Dtests=false; then
                add_counts "build ($MIN_BUILD, --auto-features=disabled)" 1 0 0
        fi
fi

if ((do_normal)); then
        stage_meson_test "$BUILD" "unit+fuzz ($BUILD)"
fi
if ((do_asan)); then
        probe_lsan
        export ASAN_OPTIONS="detect_leaks=$LSAN:detect_stack_use_after_return=1"
        stage_meson_test "$ASAN_BUILD" "unit+fuzz ($ASAN_BUILD)" --timeout-multiplier 3
fi

if ((as_root)); then
        # The build created files since the setup above.
        open_tree_to_others || true
fi
if ((have_user)); then
        if ((do_normal)); then
                stage_pytest "integration ($BUILD)" "$(abspath "$BUILD")/cli/nano"
        fi
        if ((do_asan)); then
                stage_pytest "integration ($ASAN_BUILD)" "$(abspath "$ASAN_BUILD")/cli/nano" \
                        ASAN_OPTIONS="$ASAN_OPTIONS" NANO_TEST_TIMEOUT="${NANO_TEST_TIMEOUT:-180}"
        fi
else
        stage_failed "integration" "no unprivileged user to run the tests as"
fi

exit 0
