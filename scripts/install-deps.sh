#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Installs the Debian packages nano needs to build and test, if any is missing. Idempotent and
# fast: when all are present it only asks dpkg-query and exits.
#
#   scripts/install-deps.sh           install what is missing (apt-get; as root, else through sudo)
#   scripts/install-deps.sh --check   only report; exit 1 if something is missing
#   scripts/install-deps.sh --list    print the package list
#
# Debian 12 names. ostree, bubblewrap and hyperfine are for bench/ only and are not installed here.
set -euo pipefail

PACKAGES=(
        # build
        meson ninja-build pkg-config gcc clang libclang-rt-14-dev
        libfuse3-dev libcap-dev libseccomp-dev libcgroup-dev libxxhash-dev libzstd-dev libssl-dev
        libarchive-dev libcurl4-openssl-dev libinih-dev libjson-c-dev
        # tests
        libcmocka-dev python3-pytest fuse3 squashfs-tools squashfuse zstd xz-utils bzip2 uidmap
        util-linux dpkg-dev
)

say() { printf 'install-deps: %s\n' "$*" >&2; }

mode=install
case "${1:-}" in
        "") ;;
        --check) mode=check ;;
        --list) printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
        -h|--help) sed -n '3,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "unknown option: $1 (try --help)"; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
        say "dpkg-query not found: this script knows Debian (12) only; install by hand: ${PACKAGES[*]}"
        exit 1
fi

# One dpkg-query for all: packages it does not know at all are reported on stderr and missing from
# the output, so compare against what it printed as installed.
declare -A installed=()
while read -r name status; do
        [[ $status == installed ]] && installed[$name]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)

missing=()
for p in "${PACKAGES[@]}"; do
        [[ -n ${installed[$p]:-} ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
        say "all ${#PACKAGES[@]} packages present"
        exit 0
fi
say "missing ${#missing[@]} package(s): ${missing[*]}"
[[ $mode == check ]] && exit 1

sudo=()
if ((EUID != 0)); then
        if ! command -v sudo >/dev/null 2>&1; then
                say "not root and no sudo: as root, run: apt-get install -y ${missing[*]}"
                exit 1
        fi
        sudo=(sudo)
        # Without a terminal sudo cannot ask for a password: fail rather than hang.
        [[ -t 0 ]] || sudo=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
say "running: ${sudo[*]} apt-get update"
"${sudo[@]}" apt-get "${apt_opts[@]}" update -q
say "running: ${sudo[*]} apt-get install -y --no-install-recommends ${missing[*]}"
"${sudo[@]}" apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}"
say "installed: ${missing[*]}"
