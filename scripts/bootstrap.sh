# shellcheck shell=bash
# Sourced by the project's scripts: make a fresh Debian machine ready to run metalab.
#   ensure_apt PKG...   install Debian packages that are missing (as root, or through sudo)
#   ensure_venv EXTRAS  create .venv and pip-install the project with the given extras
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${METALAB_VENV:-$REPO/.venv}"
log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

_apt_updated=0
ensure_apt() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$_apt_updated" = 0 ]; then $sudo apt-get update -qq; _apt_updated=1; fi
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV" 2>/dev/null || { ensure_apt python3-venv; python3 -m venv "$VENV"; }
  fi
  log "installing metalab[$extras] into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[$extras]" 2>&1 \
    | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import metalab" # fail here, not in the tests, if the install did not take
}

# A second, world-readable install for the tests that run metalab as an unprivileged user:
# the main venv's interpreter (pyenv under /root, say) may be unreadable to other users.
ensure_unprivileged_venv() {
  [ "$(id -u)" = 0 ] || return 0
  local venv=/opt/metalab-test/unprivileged-venv
  ensure_apt python3-venv
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv for the unprivileged-user tests"
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
  fi
  # A local folder is always rebuilt and reinstalled; dependencies added since are installed too.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$REPO" 2>&1 | grep -v "is ignored: it is neither" || true
  chmod -R a+rX "$(dirname "$venv")"
  export METALAB_UNPRIVILEGED_VENV="$venv"
}
