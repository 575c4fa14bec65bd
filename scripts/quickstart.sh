#!/usr/bin/env bash
# The quick start: installs what is needed, builds nano, imports the two example releases into a
# store under build/quickstart/, and runs three instances of them side by side, as this user.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build
ninja -C build

nano=$PWD/build/cli/nano
work=$PWD/build/quickstart
export NANO_HOME=$work/home
if [ -d "$work" ]; then
        "$nano" rm -f a b c >/dev/null 2>&1 || true
        "$nano" umount >/dev/null 2>&1 || true
        rm -rf "$work"
fi
mkdir -p "$work"

echo "== import two versions of the example service"
"$nano" store add examples/releases/hello-1.0 --name hello --version 1.0
"$nano" store add examples/releases/hello-2.0 --name hello --version 2.0
"$nano" store ls
"$nano" store du

echo "== run it once in the foreground, then three instances in the background"
"$nano" run --rm hello@1.0
"$nano" run -d --name a hello@1.0 -- hello serve 18080
"$nano" run -d --name b hello@1.0 -- hello serve 18081
"$nano" run -d --name c hello@2.0 -- hello serve 18082
"$nano" ps
for port in 18080 18081 18082; do
        out=
        for _ in $(seq 50); do
                out=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/').read().decode().strip())" 2>/dev/null) && break
                sleep 0.1
        done
        echo "127.0.0.1:$port says: ${out:-no answer}"
done
"$nano" inspect a
echo "== stop and remove the instances"
"$nano" stop a b c
"$nano" rm a b c
"$nano" umount
echo "== done: the store is in $NANO_HOME"
