#!/bin/sh
# Installs the Debian packages sonde needs to build and test, when missing.
# As root it installs them; otherwise it names exactly what is missing and fails.
set -eu
PKGS="cmake make pkg-config gcc clang llvm bpftool libbpf-dev libelf-dev libdw-dev libdebuginfod-dev
libiberty-dev libprotobuf-c-dev protobuf-c-compiler libnghttp2-dev libyaml-dev libuv1-dev libzstd-dev
zstd openssl libssl-dev zlib1g-dev libcmocka-dev libhttp-parser-dev libclang-rt-14-dev curl python3
libpcre2-dev golang-go debuginfod prometheus g++ binutils libc6-dbg chromium nginx-light wrk
python3-grpcio nghttp2-server"
[ -n "${SONDE_EXTRA_PKGS:-}" ] && PKGS="$PKGS $SONDE_EXTRA_PKGS"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Test peers run on Node.js; a Node from elsewhere (nodesource, nvm) is fine as it is.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "sonde: missing Debian packages:$missing" >&2
  echo "sonde: install them with: sudo apt-get install$missing" >&2
  exit 1
fi
echo "sonde: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# An apt index older than a day (or none) is refreshed once.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  apt-get update -qq
fi
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
