#!/usr/bin/env bash
# One-step install: Python packages (runtime, tests, Ray extra) and, where
# apt-get is available and we are root, Debian's Chromium for browser tests
# and nginx for the deployment test (deploy/nginx.conf in front of gunicorn).
#   bash scripts/install.sh            everything
#   bash scripts/install.sh --runtime  only what serving the site needs
#   bash scripts/install.sh --deploy [PREFIX] [--system]
#                                      production on Debian: its own virtual
#                                      environment, systemd unit and nginx (scripts/deploy.sh)
#   bash scripts/install.sh --dry-run [--runtime]
#                                      print the steps it would take, install nothing
# Each step is printed as it starts and, with its elapsed seconds, as it ends;
# pip shows what it collects (its progress bar only on a terminal).
set -euo pipefail
if [ "${1:-}" = "--deploy" ]; then
  shift
  # deploy.sh takes only an absolute, normalised PREFIX and trusts nothing it finds under it
  exec bash "$(dirname "$0")/deploy.sh" "$@"
fi
cd "$(dirname "$0")/.."

DRY_RUN=0
RUNTIME_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --runtime) RUNTIME_ONLY=1 ;;
    *) echo "install.sh: unknown option '$arg' (--runtime, --dry-run, --deploy PREFIX [--system])" >&2; exit 2 ;;
  esac
done

# pip's bar redraws one line: fine on a terminal, noise in a log or a pipe
if [ -t 1 ]; then PROGRESS=on; else PROGRESS=off; fi
PIP=(python -m pip install --disable-pip-version-check --progress-bar "$PROGRESS")
STARTED=$SECONDS

# step "what" command...: say what starts, run it (or, with --dry-run, show it), say how long it took
step() {
  local what=$1 began=$SECONDS
  shift
  echo "==> $what…"
  if [ "$DRY_RUN" = 1 ]; then
    echo "    would run: $*"
  else
    "$@"
  fi
  echo "==> $what done in $((SECONDS - began)) s (total $((SECONDS - STARTED)) s)"
}

skip() {
  echo "==> $1: skipped, $2"
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

can_apt() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]
}

if [ "$RUNTIME_ONLY" = 1 ]; then
  step "Installing Python packages (runtime)" "${PIP[@]}" -r requirements.txt
  exit 0
fi

step "Installing Python packages (runtime and tests)" "${PIP[@]}" -r requirements-dev.txt
if [ -f requirements-ray.txt ]; then
  step "Installing Python packages (Ray extra)" "${PIP[@]}" -r requirements-ray.txt
fi

CHROMIUM_STEP="Installing chromium and chromium-driver (apt)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if can_apt; then
    step "$CHROMIUM_STEP" apt_install chromium chromium-driver
  else
    skip "$CHROMIUM_STEP" "not root or no apt-get"
    echo "Chromium not installed: run 'sudo apt-get install chromium chromium-driver' for the browser tests." >&2
  fi
else
  skip "$CHROMIUM_STEP" "already installed"
fi

NGINX_STEP="Installing nginx (apt)"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if can_apt; then
    # the package's own service is not needed: tests start nginx with their own config
    step "$NGINX_STEP" apt_install nginx
  else
    skip "$NGINX_STEP" "not root or no apt-get"
    echo "nginx not installed: run 'sudo apt-get install nginx' for the deployment test." >&2
  fi
else
  skip "$NGINX_STEP" "already installed"
fi

NODE_STEP="Installing nodejs and npm (apt)"
if ! command -v npm >/dev/null 2>&1; then
  if can_apt; then
    step "$NODE_STEP" apt_install nodejs npm
  else
    skip "$NODE_STEP" "not root or no apt-get"
    echo "npm not installed: run 'sudo apt-get install nodejs npm' for the accessibility tests." >&2
  fi
else
  skip "$NODE_STEP" "already installed"
fi

# axe-core checks every page in the browser tests; it goes into .cache/axe (git-ignored), not the project
AXE_VERSION=4.14.1
AXE_STEP="Installing axe-core $AXE_VERSION (npm, into .cache/axe)"
if [ "$DRY_RUN" = 1 ] || command -v npm >/dev/null 2>&1; then
  step "$AXE_STEP" npm install --prefix .cache/axe --no-save --no-package-lock --no-audit --no-fund \
    "axe-core@$AXE_VERSION"
else
  skip "$AXE_STEP" "npm is not installed"
fi
echo "==> Installed in $((SECONDS - STARTED)) s"
