#!/bin/sh
# Runs the test suite of a build folder (default build/) and ends with "N passed, N failed".
# Usage: scripts/test.sh [BUILD_DIR] [meson test args...]
set -u
cd "$(dirname "$0")/.."
dir=${1:-build}
[ $# -gt 0 ] && shift
meson test -C "$dir" --print-errorlogs --num-processes 2 "$@"
status=$?
python3 scripts/test_summary.py "$dir/meson-logs/testlog.json"
exit $status
