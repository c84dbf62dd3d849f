#!/usr/bin/env bash
# The main job on a fresh machine: install metalab, then walk the example project
# (examples/quickstart) through its configuration.
source "$(dirname "$0")/bootstrap.sh"

ensure_venv test
cd "$REPO/examples/quickstart"
PATH="$VENV/bin:$PATH"
log "metalab env list"
metalab env list
log "metalab env show"
metalab env show
