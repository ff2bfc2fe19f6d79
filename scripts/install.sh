#!/usr/bin/env bash
# One-step install: Python packages (runtime, tests, Ray extra) and, where
# apt-get is available and we are root, Debian's Chromium for browser tests
# and nginx for the deployment test (deploy/nginx.conf in front of gunicorn).
#   bash scripts/install.sh            everything
#   bash scripts/install.sh --runtime  only what serving the site needs
#   bash scripts/install.sh --deploy [PREFIX] [--system]
#                                      production on Debian: its own virtual
#                                      environment, systemd unit and nginx (scripts/deploy.sh)
set -euo pipefail
if [ "${1:-}" = "--deploy" ]; then
  shift
  # from the caller's folder, so that a relative PREFIX means what it says
  exec bash "$(dirname "$0")/deploy.sh" "$@"
fi
cd "$(dirname "$0")/.."
PIP="python -m pip install --quiet --disable-pip-version-check"

if [ "${1:-}" = "--runtime" ]; then
  $PIP -r requirements.txt
  exit 0
fi

$PIP -r requirements-dev.txt
if [ -f requirements-ray.txt ]; then
  $PIP -r requirements-ray.txt
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "Chromium not installed: run 'sudo apt-get install chromium chromium-driver' for the browser tests." >&2
  fi
fi

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # the package's own service is not needed: tests start nginx with their own config
    apt-get install -y -qq nginx >/dev/null
  else
    echo "nginx not installed: run 'sudo apt-get install nginx' for the deployment test." >&2
  fi
fi
