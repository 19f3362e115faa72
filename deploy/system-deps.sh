#!/usr/bin/env bash
# `make system-deps` (the first step of `make test`, and of .ci/run): the system packages the
# build and the test suite need, by their Debian names. When some are missing it installs them
# through apt-get if it runs as root or may use sudo without a password; otherwise it stops at
# once with the one command to run.
set -euo pipefail

missing=()
need() {  # need PACKAGE COMMAND...: PACKAGE is missing when any COMMAND is
  local package=$1
  shift
  for command in "$@"; do
    command -v "$command" >/dev/null 2>&1 || { missing+=("$package"); return; }
  done
}
# The build itself: make, and Python's venv module (a separate package on Debian).
need make make
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# The integration suite also runs against a real PostgreSQL server, which the tests start
# themselves (initdb in a temp dir, loopback only): they need its binaries.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
# The interop test runs a Node.js gRPC client, and `make lint` runs buf from npm.
need nodejs node
need npm npm
# The web console is tested in Debian's real Chromium, driven through its chromedriver.
need chromium chromium
need chromium-driver chromedriver
# The CLI's live view is tested in a real terminal.
need tmux tmux
# The deployment tests check the systemd units with systemd's own tools.
need systemd systemd-analyze systemd-sysusers

[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "the tests need these system packages (Debian names), which are missing: ${missing[*]}" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
    echo "the tests need these system packages, which are missing: ${missing[*]}" >&2
    echo "install them with:" >&2
    echo "sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi
echo "installing: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
