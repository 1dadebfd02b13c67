#!/bin/sh
# e2e/example_plugin: the third-party path, end to end.
#   1. `cmake --install` the build into a temporary prefix;
#   2. build examples/plugins/attributes out of tree against that prefix, once with its Makefile
#      (pkg-config) and once with its CMakeLists.txt (find_package);
#   3. run the installed sonde on testgen -> attributes_from_file -> file (json):
#        run "make":  the Makefile-built .so from a --plugin-path directory, action upsert;
#        run "cmake": the CMake-built .so installed next to the binary (../lib/sonde), action
#                     insert, reload_interval set: the file is broken, then changed, while data
#                     flows;
#   4. SIGTERM, then check every resource of every record for the file's attributes and that no
#      item was lost or duplicated.
# Needs: SONDE_BUILD_DIR, SONDE_SOURCE_DIR (set by ctest), cmake, make, cc, pkg-config, python3.
set -eu

BUILD=${SONDE_BUILD_DIR:?run through ctest, or set SONDE_BUILD_DIR}
SRC=${SONDE_SOURCE_DIR:?run through ctest, or set SONDE_SOURCE_DIR}
CMAKE=${CMAKE:-cmake}
PYTHON=${PYTHON:-python3}
COUNT=300

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sonde-e2e-example-XXXXXX")
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [ "${SONDE_KEEP_TMP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

# ---- 1. install ---------------------------------------------------------------------------------
step "install $BUILD into $tmp/prefix"
"$CMAKE" --install "$BUILD" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "cmake --install"; }
pc=$(find "$tmp/prefix" -name sonde.pc | head -n 1)
[ -n "$pc" ] || fail "no sonde.pc installed"
pcdir=$(dirname "$pc")
sonde="$tmp/prefix/bin/sonde"
[ -x "$sonde" ] || fail "no installed bin/sonde"
plugindir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=plugindir sonde)
[ -d "$plugindir" ] || fail "pkg-config plugindir $plugindir does not exist"
# The installed binary searches ../lib/sonde; plugindir must be that same place.
[ "$(cd "$plugindir" && pwd -P)" = "$(cd "$tmp/prefix/bin/../lib/sonde" && pwd -P)" ] ||
  fail "pkg-config plugindir $plugindir is not bin/../lib/sonde"

# ---- 2. out-of-tree builds ----------------------------------------------------------------------
# A copy, so that the Makefile build writes nothing into the source tree.
step "build with the Makefile (pkg-config)"
cp -R "$SRC/examples/plugins/attributes" "$tmp/src"
rm -f "$tmp/src/"*.so
PKG_CONFIG_PATH="$pcdir" make -C "$tmp/src" >"$tmp/make.log" 2>&1 ||
  { cat "$tmp/make.log"; fail "make"; }
PKG_CONFIG_PATH="$pcdir" make -C "$tmp/src" install PLUGINDIR="$tmp/plugins" \
  >>"$tmp/make.log" 2>&1 || { cat "$tmp/make.log"; fail "make install"; }

step "build with CMake (find_package)"
"$CMAKE" -S "$SRC/examples/plugins/attributes" -B "$tmp/build-cmake" \
  -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/cmake.log" 2>&1 &&
  "$CMAKE" --build "$tmp/build-cmake" >>"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log"; fail "cmake build"; }

# testgen is a test-only plug-in, never installed: both runs find it through SONDE_PLUGIN_PATH.
mkdir -p "$tmp/testplugins"
cp "$BUILD/lib/sonde/receiver_testgen.so" "$tmp/testplugins/"
chmod 0755 "$tmp/plugins/"*.so "$tmp/testplugins/"*.so
export SONDE_PLUGIN_PATH="$tmp/testplugins"

# ---- 3. runs ------------------------------------------------------------------------------------
# write_config NAME ACTION RELOAD PER_BATCH INTERVAL
write_config() {
  mkdir -p "$tmp/$1"
  cat >"$tmp/$1/config.yaml" <<EOF
receivers:
  testgen:
    count: $COUNT
    per_batch: $4
    interval: $5
processors:
  attributes_from_file:
    path: $tmp/$1/attrs.txt
    action: $2
    reload_interval: $3
exporters:
  file/traces:
    path: $tmp/$1/traces.json
  file/metrics:
    path: $tmp/$1/metrics.json
  file/logs:
    path: $tmp/$1/logs.json
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [testgen]
      processors: [attributes_from_file]
      exporters: [file/traces]
    metrics:
      receivers: [testgen]
      processors: [attributes_from_file]
      exporters: [file/metrics]
    logs:
      receivers: [testgen]
      processors: [attributes_from_file]
      exporters: [file/logs]
EOF
}

# Replaces a file at once, so that a reload never reads half of it.
put() {
  printf '%b' "$2" >"$1.new" && mv "$1.new" "$1"
}

wait_log() { # RUN PATTERN [SECONDS]
  n=$(((${3:-20}) * 10))
  while [ "$n" -gt 0 ]; do
    grep -Eq "$2" "$tmp/$1/sonde.log" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
    n=$((n - 1))
  done
  cat "$tmp/$1/sonde.log"
  fail "$1: no /$2/ in the log"
}

start() { # RUN [ARGS...]
  run=$1
  shift
  "$sonde" --config "$tmp/$run/config.yaml" "$@" >"$tmp/$run/sonde.log" 2>&1 &
  pid=$!
}

stop() { # RUN
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  pid=
  [ "$rc" = 0 ] || { cat "$tmp/$1/sonde.log"; fail "$1: sonde exited with $rc after SIGTERM"; }
  if grep -q "plug-in refused" "$tmp/$1/sonde.log"; then
    cat "$tmp/$1/sonde.log"
    fail "$1: a plug-in was refused"
  fi
}

# check RUN KEY=VALUE[|VALUE2] ...: every resource has each KEY with one of the values (as one
# string attribute, not twice), and every item 0..COUNT-1 of each signal arrived exactly once.
check() {
  run=$1
  shift
  "$PYTHON" - "$tmp/$run" "$COUNT" "$@" <<'EOF'
import json, os, sys
d, count, want = sys.argv[1], int(sys.argv[2]), {}
for a in sys.argv[3:]:
    k, v = a.split("=", 1)
    want[k] = v.split("|")
shapes = {"traces": ("resourceSpans", "scopeSpans", "spans"),
          "metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
          "logs": ("resourceLogs", "scopeLogs", "logRecords")}
errors, seen_values = [], {k: set() for k in want}
for sig, (rk, sk, ik) in shapes.items():
    path = os.path.join(d, sig + ".json")
    if not os.path.exists(path):
        sys.exit("%s: no output file" % sig)
    index, resources = [], 0
    for ln, line in enumerate(open(path), 1):
        if not line.strip():
            continue
        for r in json.loads(line).get(rk, []):
            resources += 1
            attrs = r.get("resource", {}).get("attributes", [])
            keys = [a["key"] for a in attrs]
            for k, vals in want.items():
                got = [a["value"].get("stringValue") for a in attrs if a["key"] == k]
                if len(got) != 1 or got[0] not in vals:
                    errors.append("%s line %d: %s is %r, want one of %r (keys %r)"
                                  % (sig, ln, k, got, vals, keys))
                else:
                    seen_values[k].add(got[0])
            if len(keys) != len(set(keys)):
                errors.append("%s line %d: duplicate resource keys %r" % (sig, ln, keys))
            for s in r.get(sk, []):
                for it in s.get(ik, []):
                    if sig == "metrics":
                        pts = (it.get("gauge") or it.get("sum") or {}).get("dataPoints", [])
                    else:
                        pts = [it]
                    for p in pts:
                        for a in p.get("attributes", []):
                            if a["key"] == "testgen.index":
                                index.append(int(a["value"]["intValue"]))
    if sorted(index) != list(range(count)):
        missing = sorted(set(range(count)) - set(index))
        errors.append("%s: %d items, want %d (missing %r, duplicates %d)"
                      % (sig, len(index), count, missing[:10], len(index) - len(set(index))))
    print("%s: %d items in %d resources" % (sig, len(index), resources))
for e in errors[:20]:
    print("  " + e, file=sys.stderr)
if errors:
    sys.exit("%d problems" % len(errors))
for k, vals in seen_values.items():
    print("  %s seen as %s" % (k, sorted(vals)))
print("\n".join("SEEN %s=%s" % (k, v) for k, vs in seen_values.items() for v in sorted(vs)),
      file=open(os.path.join(d, "seen.txt"), "w"))
EOF
}

# -- run "make": upsert, plug-in from --plugin-path ----------------------------------------------
step "run make: Makefile-built plug-in via --plugin-path, action upsert"
write_config make upsert 0 7 1ms
put "$tmp/make/attrs.txt" '# added to every resource\ndeployment.environment = e2e\n\nhost.owner=team-sonde\r\nservice.name=overridden\n'
"$sonde" components --plugin-path "$tmp/plugins" >"$tmp/make/components.txt" 2>&1 ||
  { cat "$tmp/make/components.txt"; fail "sonde components"; }
grep -q "attributes_from_file \[traces, metrics, logs, profiles\]" "$tmp/make/components.txt" ||
  { cat "$tmp/make/components.txt"; fail "sonde components does not list attributes_from_file"; }
grep -q "$tmp/plugins/processor_attributes_from_file.so" "$tmp/make/components.txt" ||
  fail "sonde components: attributes_from_file is not from $tmp/plugins"
start make --plugin-path "$tmp/plugins"
wait_log make "finished: $COUNT items per signal"
stop make
check make deployment.environment=e2e host.owner=team-sonde service.name=overridden ||
  fail "make: output check"

# -- run "cmake": insert + reload, plug-in installed next to the binary ----------------------------
step "run cmake: CMake-built plug-in installed into the default plug-in dir, insert + reload"
"$CMAKE" --install "$tmp/build-cmake" >>"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log"; fail "cmake --install of the example"; }
[ -f "$plugindir/processor_attributes_from_file.so" ] ||
  fail "the CMake install did not put the plug-in into $plugindir"
write_config cmake insert 50ms 3 25ms
put "$tmp/cmake/attrs.txt" 'deployment.environment=v1\nservice.name=overridden\n'
start cmake # no --plugin-path: testgen, file and the example all come from ../lib/sonde
wait_log cmake "ready in"
sleep 0.3
# Broken on line 2: logged with the line number, v1 stays in use.
put "$tmp/cmake/attrs.txt" 'deployment.environment=v2\nthis line has no equals sign\n'
wait_log cmake "reload failed.*attrs.txt:2: expected key=value" 10
sleep 0.2
put "$tmp/cmake/attrs.txt" 'deployment.environment=v2\nservice.name=overridden\n'
wait_log cmake "reloaded .*attrs.txt: 2 attributes" 10
wait_log cmake "finished: $COUNT items per signal" 60
stop cmake
# insert keeps testgen's own service.name; both versions of the file were applied, v2 last.
check cmake "deployment.environment=v1|v2" service.name=testgen || fail "cmake: output check"
grep -q "SEEN deployment.environment=v1" "$tmp/cmake/seen.txt" || fail "cmake: v1 never applied"
grep -q "SEEN deployment.environment=v2" "$tmp/cmake/seen.txt" || fail "cmake: reload never applied"
tail -n 1 "$tmp/cmake/traces.json" | grep -q '"deployment.environment","value":{"stringValue":"v2"}' ||
  fail "cmake: the last traces record does not carry the reloaded value"

echo "PASS"
