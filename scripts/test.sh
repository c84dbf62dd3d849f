#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs, starts the real
# services the tests use (on loopback, and the test cluster's own hosts inside namespaces),
# runs every test, and stops what it started.
#   scripts/test.sh [pytest args...]
source "$(dirname "$0")/bootstrap.sh"

ensure_apt postgresql chromium chromium-driver zsh fish  # chromium: the Atlas browser tests (Playwright drives it); zsh, fish: completion tests
ensure_venv test
ensure_unprivileged_venv

# The multi-host test cluster (scripts/cluster.sh: login, cn1, cn2 and a workstation, in network
# namespaces): stopped on exit whatever happens (the trap is set before it starts, and Ctrl+C or
# SIGTERM exit through it), unless it was already up before this run.
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
if ! bash "$REPO/scripts/cluster.sh" status >/dev/null 2>&1; then
  trap '$sudo bash "$REPO/scripts/cluster.sh" stop || true' EXIT
  trap 'exit 130' INT TERM HUP
fi
$sudo bash "$REPO/scripts/cluster.sh" start
eval "$(bash "$REPO/scripts/cluster.sh" env)"

cd "$REPO"
# Lint first (ruff, pinned in the test extra, configured in pyproject.toml): a finding fails the run.
"$VENV/bin/python" -m ruff check metalab tests bench tasks.py
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
