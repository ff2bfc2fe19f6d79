#!/usr/bin/env bash
# Production install on Debian 12 or 13 (called as `bash scripts/install.sh --deploy PREFIX [--system]`).
#
# Into PREFIX (default /opt/fashion-search):
#   app/                     a copy of the code (replaced on every run: that is an upgrade)
#   venv/                    its own virtual environment: Debian's python3 refuses
#                            system-wide pip installs ("externally-managed-environment")
#   fashion-search.env       the settings (EnvironmentFile); kept if it exists
#   fashion-search.service   the systemd unit, its paths pointing into PREFIX
#   nginx/                   fashion-search.conf (the site) and nginx.conf (the main config)
# Without --system every path the settings and the unit name lies under PREFIX:
#   run/ (the socket), var/ (index, Keras cache) and catalogue/.
# With --system (as root) the settings and the unit use the system's folders
# instead (/run/fashion-search, /var/lib/fashion-search, /srv/fashion-search/
# catalogue; a settings file an earlier run without --system wrote is moved
# over to them, other edits kept); it also creates the `fashion` user and the
# catalogue folder, installs the unit and the nginx configs, checks them
# (nginx -t, systemd-analyze verify) and starts or restarts the site.
set -euo pipefail

usage() { echo "usage: bash scripts/install.sh --deploy [PREFIX] [--system]" >&2; exit 2; }

PREFIX=/opt/fashion-search
SYSTEM=0
for arg in "$@"; do
  case "$arg" in
    --system) SYSTEM=1 ;;
    -*) usage ;;
    *) PREFIX="$arg" ;;
  esac
done
case "$PREFIX" in /*) ;; *) PREFIX="$(pwd)/$PREFIX" ;; esac
# the prefix goes into the unit's ExecStart and a sed expression: plain path characters only
case "$PREFIX" in *[!A-Za-z0-9._/-]*) echo "deploy: PREFIX may hold only letters, digits and . _ / -" >&2; exit 2 ;; esac
SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SHIPPED_PREFIX=/opt/fashion-search

say() { echo "deploy: $*" >&2; }

if [ "$SYSTEM" = 1 ] && [ "$(id -u)" != 0 ]; then
  say "--system installs into /etc and starts services: run it as root (sudo)"; exit 2
fi
case "$PREFIX" in /home/*|/root/*|/run/user/*)
  if [ "$SYSTEM" = 1 ]; then say "the unit's ProtectHome hides $PREFIX from the service: choose a prefix such as /opt/fashion-search"; exit 2; fi ;;
esac
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  say "$PYTHON 3.10 or newer is needed (Debian: apt-get install python3)"; exit 2
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    say "$PYTHON cannot make virtual environments: apt-get install python3-venv"; exit 2
  fi
fi

mkdir -p "$PREFIX"
# packages first: a worker restarted while the code is swapped must find what the new code imports
say "packages -> $PREFIX/venv"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
  "$PYTHON" -m venv "$PREFIX/venv"
fi
"$PREFIX/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$SOURCE/requirements.txt"

say "code -> $PREFIX/app"
rm -rf "$PREFIX/app.new"
mkdir "$PREFIX/app.new"
tar -C "$SOURCE" --exclude=__pycache__ -cf - \
  app.py gunicorn.conf.py requirements.txt README.md indexer web templates static deploy \
  | tar -C "$PREFIX/app.new" -xf -
rm -rf "$PREFIX/app.old"
if [ -d "$PREFIX/app" ]; then mv "$PREFIX/app" "$PREFIX/app.old"; fi
mv "$PREFIX/app.new" "$PREFIX/app"
rm -rf "$PREFIX/app.old"

# The shipped files name the system's folders; without --system they move under PREFIX.
LOCAL_MARK="# paths under the prefix (install.sh --deploy without --system)"
to_prefix() {
  sed -e "s#$SHIPPED_PREFIX\b#$PREFIX#g" -e "s#/run/fashion-search\b#$PREFIX/run#g" \
      -e "s#/var/lib/fashion-search\b#$PREFIX/var#g" -e "s#/srv/fashion-search/catalogue\b#$PREFIX/catalogue#g" "$@"
}
to_system() {
  sed -e "\|^$LOCAL_MARK\$|d" -e "s#$PREFIX/run\b#/run/fashion-search#g" \
      -e "s#$PREFIX/var\b#/var/lib/fashion-search#g" -e "s#$PREFIX/catalogue\b#/srv/fashion-search/catalogue#g" "$@"
}
if [ ! -f "$PREFIX/fashion-search.env" ]; then
  if [ "$SYSTEM" = 1 ]; then
    install -m 0640 "$SOURCE/deploy/fashion-search.env" "$PREFIX/fashion-search.env"
  else
    { echo "$LOCAL_MARK"; to_prefix "$SOURCE/deploy/fashion-search.env"; } > "$PREFIX/fashion-search.env.new"
    chmod 0640 "$PREFIX/fashion-search.env.new"
    mv "$PREFIX/fashion-search.env.new" "$PREFIX/fashion-search.env"
  fi
  say "settings -> $PREFIX/fashion-search.env (edit FASHION_CATALOGUE there)"
elif [ "$SYSTEM" = 1 ] && grep -qxF "$LOCAL_MARK" "$PREFIX/fashion-search.env"; then
  to_system "$PREFIX/fashion-search.env" > "$PREFIX/fashion-search.env.new"
  chmod 0640 "$PREFIX/fashion-search.env.new"
  mv "$PREFIX/fashion-search.env.new" "$PREFIX/fashion-search.env"
  say "settings: $PREFIX/fashion-search.env now names the system's folders"
fi
if [ "$SYSTEM" = 1 ]; then
  # the shipped unit names the default prefix; point every path at this one
  sed "s#$SHIPPED_PREFIX\b#$PREFIX#g" "$SOURCE/deploy/fashion-search.service" > "$PREFIX/fashion-search.service"
else
  # no /run or /var/lib folders of its own: the socket and the index live under PREFIX
  to_prefix -e '/^RuntimeDirectory/d' -e '/^StateDirectory/d' \
      -e "s#^ReadWritePaths=.*#ReadWritePaths=$PREFIX/var $PREFIX/run#" -e 's#^ExecReload=/bin/kill #ExecReload=kill #' \
      "$SOURCE/deploy/fashion-search.service" > "$PREFIX/fashion-search.service"
  mkdir -p "$PREFIX/run" "$PREFIX/var" "$PREFIX/catalogue"
fi
mkdir -p "$PREFIX/nginx"
cp "$SOURCE/deploy/nginx.conf" "$PREFIX/nginx/fashion-search.conf"
cp "$SOURCE/deploy/nginx-main.conf" "$PREFIX/nginx/nginx.conf"

if [ "$SYSTEM" = 0 ]; then
  say "done. As root, to run it: bash $SOURCE/scripts/install.sh --deploy $PREFIX --system"
  exit 0
fi

id fashion >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin fashion
chgrp fashion "$PREFIX/fashion-search.env"
mkdir -p /srv/fashion-search/catalogue
if ! command -v nginx >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
if [ -f /etc/nginx/nginx.conf ] && [ ! -f /etc/nginx/nginx.conf.before-fashion-search ]; then
  cp /etc/nginx/nginx.conf /etc/nginx/nginx.conf.before-fashion-search
fi
install -m 0644 "$PREFIX/nginx/fashion-search.conf" /etc/nginx/conf.d/fashion-search.conf
# checked before it replaces the main config: a failure leaves nginx as it was
install -m 0644 "$PREFIX/nginx/nginx.conf" /etc/nginx/nginx.conf.fashion-search-new
if ! nginx -t -c /etc/nginx/nginx.conf.fashion-search-new; then
  rm -f /etc/nginx/nginx.conf.fashion-search-new
  say "nginx rejected the new configuration; /etc/nginx/nginx.conf is unchanged"; exit 1
fi
mv /etc/nginx/nginx.conf.fashion-search-new /etc/nginx/nginx.conf
install -m 0644 "$PREFIX/fashion-search.service" /etc/systemd/system/fashion-search.service
systemd-analyze verify /etc/systemd/system/fashion-search.service
systemctl daemon-reload
systemctl enable fashion-search >/dev/null
systemctl restart fashion-search
systemctl reload-or-restart nginx
say "running: curl -s http://localhost/healthz"
