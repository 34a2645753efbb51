#!/usr/bin/env bash
# tools/gdb/sessions/run.sh BUILD_DIR SESSION: runs a gdb session of docs/debugging.md.
#
#   tools/gdb/sessions/run.sh build/debug lab_step7     # reformer_lab --step 7
#   tools/gdb/sessions/run.sh build/debug reversible    # reversible_debug
#
# BUILD_DIR is a build configured with the debug preset (cmake --preset debug) in which
# the session's program is built. gdb runs SESSION.gdb in batch mode; the script turns on
# `set trace-commands on`, so gdb echoes each command, prefixed with "+", before its
# output. The session runs under script(1) (a pseudo-terminal), so the program's output
# is line-buffered and interleaves with gdb's as it does at a terminal.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SESSION (lab_step7 or reversible)" >&2
  exit 2
fi
build="$(cd "$1" && pwd)"
case "$2" in
  lab_step7) program=("$build/examples/reformer_lab" --step 7) ;;
  reversible) program=("$build/examples/reversible_debug") ;;
  *) echo "$0: unknown session '$2' (lab_step7 or reversible)" >&2; exit 2 ;;
esac
[ -x "${program[0]}" ] || { echo "$0: ${program[0]} is not built" >&2; exit 1; }
cmd=(gdb -nx -batch -iex "add-auto-load-safe-path $build" -x "$here/$2.gdb" --args "${program[@]}")
if command -v script >/dev/null; then
  script -qec "$(printf '%q ' "${cmd[@]}")" /dev/null | tr -d '\r'
else
  "${cmd[@]}"
fi
