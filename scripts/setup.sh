#!/bin/sh
# Installs the Debian 12 packages qins needs, then configures and builds it in build/.
# Idempotent: installs only what is missing and reuses an existing build folder.
# Extra meson options can be passed in QINS_MESON_ARGS (e.g. "-Dwerror=true").
set -eu
cd "$(dirname "$0")/.."

PKGS="meson ninja-build pkg-config gcc python3 libzmq3-dev libyaml-dev libvulkan-dev mesa-vulkan-drivers
vulkan-validationlayers glslang-tools spirv-tools libjemalloc-dev libmicrohttpd-dev libjansson-dev
libcmocka-dev libpcre2-dev"

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

if [ ! -f build/build.ninja ]; then
  # shellcheck disable=SC2086
  meson setup build ${QINS_MESON_ARGS:-}
elif [ -n "${QINS_MESON_ARGS:-}" ]; then
  # shellcheck disable=SC2086
  meson configure build ${QINS_MESON_ARGS}
fi
ninja -C build
