#!/usr/bin/env bash
# make bench: every benchmark in tests/bench/ against one build. Figures go to stdout; the ones we
# publish are copied into docs/benchmarks.md by hand with the date and machine.
set -uo pipefail
BUILD=${1:-build}
here=$(dirname "$0")
for b in "$here"/idle.sh "$here"/otlp*.sh "$here"/prom*.py; do
  [ -x "$b" ] || continue
  echo "######## $(basename "$b")"
  "$b" "$BUILD" || echo "(failed: $b)"
done
