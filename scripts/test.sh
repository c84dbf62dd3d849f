#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what it needs, starts the real
# services the tests use (on loopback only), runs every test, and stops what it started.
#   scripts/test.sh [pytest args...]
source "$(dirname "$0")/bootstrap.sh"

ensure_apt postgresql chromium chromium-driver  # chromium: the Atlas browser tests (Playwright drives it)
ensure_venv test
ensure_unprivileged_venv

# The test cluster (single-node SLURM + a loopback SSH gateway, scripts/cluster.sh): stopped on
# exit whatever happens (the trap is set before it starts), unless it was already fully up.
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
if ! bash "$REPO/scripts/cluster.sh" status >/dev/null 2>&1; then
  trap '$sudo bash "$REPO/scripts/cluster.sh" stop || true' EXIT
fi
$sudo bash "$REPO/scripts/cluster.sh" start
eval "$(bash "$REPO/scripts/cluster.sh" env)"

cd "$REPO"
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
