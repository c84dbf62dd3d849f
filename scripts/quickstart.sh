#!/usr/bin/env bash
# The main job on a fresh machine: install metalab, run the quick-start experiment (six runs
# into a FileStore), then bring up the example project's local services (PostgreSQL + Atlas)
# and run a sweep into them with store="discover". Stop the services afterwards with:
#   (cd <the project folder printed below> && metalab services down)
source "$(dirname "$0")/bootstrap.sh"

ensure_apt postgresql
ensure_venv test
project="$REPO/examples/quickstart"
# As root, PostgreSQL runs as the `postgres` user, which must reach the project's file_root.
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$project" 2>/dev/null; then
  copy=/tmp/metalab-quickstart
  log "$project is private to root; running the example from $copy"
  mkdir -p "$copy" && chmod 755 "$copy" && cp "$project/.metalab.toml" "$project/sweep.py" "$REPO/examples/discover/sweep.py" "$copy/" 2>/dev/null
  cp "$REPO/examples/discover/sweep.py" "$copy/discover_sweep.py"
  project="$copy"
else
  cp "$REPO/examples/discover/sweep.py" "$project/discover_sweep.py"
fi
cd "$project"
PATH="$VENV/bin:$PATH"
log "a local experiment: python sweep.py (FileStore under $project/experiments)"
python sweep.py
log "local services: metalab services up"
metalab services up
metalab services status
log "a sweep into the services: python discover_sweep.py (store=\"discover\")"
python discover_sweep.py
log "services are running in $project; stop them with: (cd $project && $VENV/bin/metalab services down)"
