#!/usr/bin/env bash
# The main job on a fresh machine: install metalab, then bring up the example project's
# local services (PostgreSQL + Atlas) and show their status. Stop them with:
#   (cd examples/quickstart && ../../.venv/bin/metalab services down)
source "$(dirname "$0")/bootstrap.sh"

ensure_apt postgresql
ensure_venv test
project="$REPO/examples/quickstart"
# As root, PostgreSQL runs as the `postgres` user, which must reach the project's file_root.
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$project" 2>/dev/null; then
  copy=/tmp/metalab-quickstart
  log "$project is private to root; running the example from $copy"
  mkdir -p "$copy" && chmod 755 "$copy" && cp "$project/.metalab.toml" "$copy/"
  project="$copy"
fi
cd "$project"
PATH="$VENV/bin:$PATH"
log "metalab env show"
metalab env show
log "metalab services up"
metalab services up
log "metalab services status"
metalab services status
