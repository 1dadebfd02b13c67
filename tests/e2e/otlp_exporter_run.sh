#!/bin/sh
# Runs an e2e driver of the OTLP exporters (otlp_exporter_test.js, gateway_test.js) with node,
# installing tests/e2e/node's packages first when missing (serialised: ctest runs tests in
# parallel and `npm ci` replaces node_modules). Exit 77 (skipped) without node.
# `otlp_exporter_run.sh --deps-only` only installs (the e2e_node_deps ctest fixture).
set -e
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null 2>&1 || { echo "node not found: skipped"; exit 77; }
(
  flock 9
  if [ ! -d "$here/node/node_modules/fzstd" ] || [ ! -d "$here/node/node_modules/otlp-schema" ] ||
     [ ! -d "$here/node/node_modules/@grpc/grpc-js" ] ||
     [ ! -d "$here/node/node_modules/@opentelemetry/sdk-trace-base" ] ||
     [ ! -d "$here/node/node_modules/@parca/client" ]; then
    npm ci --prefix "$here/node" --no-audit --no-fund
  fi
) 9>"${TMPDIR:-/tmp}/sonde-e2e-npm.lock"
script=$1
shift
[ "$script" = --deps-only ] && exit 0
exec node "$here/$script" "$@"
