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
#   .fashion-search-deploy   what this script installed there (all it will ever replace)
# Without --system every path the settings and the unit name lies under PREFIX:
#   run/ (the socket), var/ (index, Keras cache) and catalogue/.
# With --system (as root) the settings and the unit use the system's folders
# instead (/run/fashion-search, /var/lib/fashion-search, /srv/fashion-search/
# catalogue; a settings file an earlier run without --system wrote is moved
# over to them, other edits kept); it also creates the `fashion` user and the
# catalogue folder, installs the unit and the nginx configs, checks them
# (nginx -t, systemd-analyze verify) and starts or restarts the site.
set -euo pipefail
#
# Run as root, it trusts nothing it finds under PREFIX (tests/test_deploy_prefix.py):
#   - PREFIX must be absolute and normalised (no empty, `/`, `.`, `..`, `//`), and not
#     a system folder or anyone's home folder;
#   - no component of it may be a symlink or writable by anyone but root (see check_folder);
#   - files are written to a new mktemp file beside them, then moved over with `mv -T`
#     (a rename never follows a link), and a destination that is a symlink is refused;
#   - PREFIX/.fashion-search-deploy lists what this script installed there: only what it
#     lists is ever replaced or removed, anything else in the way is refused;
#   - the virtual environment is made afresh on every run (the old one removed only if
#     listed), so no interpreter found under PREFIX is ever run.
umask 022

usage() { echo "usage: bash scripts/install.sh --deploy [PREFIX] [--system]" >&2; exit 2; }
say() { echo "deploy: $*" >&2; }
refuse() { say "refusing: $*"; exit 2; }

PREFIX=/opt/fashion-search
GIVEN=0
SYSTEM=0
for arg in "$@"; do
  case "$arg" in
    --system) SYSTEM=1 ;;
    -*) usage ;;
    *) [ "$GIVEN" = 0 ] || usage; PREFIX="$arg"; GIVEN=1 ;;
  esac
done
[ -n "$PREFIX" ] || refuse "PREFIX is empty"
case "$PREFIX" in /*) ;; *) refuse "PREFIX must be an absolute path, not '$PREFIX'" ;; esac
while [ "$PREFIX" != / ] && [ "${PREFIX%/}" != "$PREFIX" ]; do PREFIX="${PREFIX%/}"; done
# the prefix goes into the unit's ExecStart and a sed expression: plain path characters only
case "$PREFIX" in *[!A-Za-z0-9._/-]*) refuse "PREFIX may hold only letters, digits and . _ / -" ;; esac
case "$PREFIX" in
  */./*|*/.|*/../*|*/..|*//*) refuse "PREFIX must be a normalised path (no '.', '..' or '//'): $PREFIX" ;;
esac
case "$PREFIX" in
  /|/bin|/boot|/dev|/etc|/home|/lib|/lib32|/lib64|/media|/mnt|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/var|/usr/*bin|/usr/lib|/usr/local|/run/user)
    refuse "PREFIX may not be $PREFIX: choose a folder of its own, such as /opt/fashion-search" ;;
esac
case "$PREFIX" in /home/*/*) ;; /home/*) refuse "PREFIX may not be a home folder ($PREFIX)" ;; esac
if [ "$PREFIX" = "${HOME:-}" ] || cut -d: -f6 /etc/passwd 2>/dev/null | grep -qxF -- "$PREFIX"; then
  refuse "PREFIX may not be a home folder ($PREFIX)"
fi
SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SHIPPED_PREFIX=/opt/fashion-search
ME="$(id -u)"
MARKER_NAME=.fashion-search-deploy
MARKER="$PREFIX/$MARKER_NAME"

if [ "$SYSTEM" = 1 ] && [ "$ME" != 0 ]; then
  say "--system installs into /etc and starts services: run it as root (sudo)"; exit 2
fi
case "$PREFIX" in /home/*|/root/*|/run/user/*)
  if [ "$SYSTEM" = 1 ]; then say "the unit's ProtectHome hides $PREFIX from the service: choose a prefix such as /opt/fashion-search"; exit 2; fi ;;
esac

# Whom a folder may belong to. As root: root only. As another user (a user's own prefix,
# the tests): root or that user. Either way a folder must not be a symlink, nor
# group- or world-writable, so nobody else can swap anything inside it. One exception,
# for ancestors of the prefix only: a root-owned folder with the sticky bit (/tmp),
# where others may add entries but cannot rename or remove root's or ours.
check_folder() {  # PATH ancestor|own
  local path="$1" owner mode
  [ ! -L "$path" ] || refuse "$path is a symlink (every folder of the prefix must be a real one)"
  [ -d "$path" ] || refuse "$path is not a folder"
  read -r owner mode < <(stat -c '%u %a' -- "$path")
  mode=$((8#$mode))
  if [ "$owner" != 0 ] && [ "$owner" != "$ME" ]; then
    refuse "$path belongs to user $owner: as $(id -un), only folders of root$([ "$ME" = 0 ] || echo " or $(id -un)") are trusted"
  fi
  if (( mode & 8#022 )) && ! { [ "$2" = ancestor ] && [ "$owner" = 0 ] && (( mode & 8#1000 )); }; then
    refuse "$path is writable by others (mode $(printf %o "$mode")): chmod go-w it first"
  fi
}
# a file this script reads or changes in place: a plain file of a trusted owner, no other links to it
check_file() {
  local path="$1" owner links
  [ ! -L "$path" ] || refuse "$path is a symlink: remove it, this script writes only plain files"
  [ -f "$path" ] || refuse "$path is not a plain file"
  read -r owner links < <(stat -c '%u %h' -- "$path")
  { [ "$owner" = 0 ] || [ "$owner" = "$ME" ]; } || refuse "$path belongs to user $owner"
  [ "$links" = 1 ] || refuse "$path has other hard links"
}

# every folder from / down to the prefix, made one at a time where missing
check_folder / ancestor
IFS=/ read -ra PARTS <<< "${PREFIX#/}"
FOLDER=""
for part in "${PARTS[@]}"; do
  FOLDER="$FOLDER/$part"
  role=ancestor; [ "$FOLDER" != "$PREFIX" ] || role=own
  if [ ! -e "$FOLDER" ] && [ ! -L "$FOLDER" ]; then mkdir -m 0755 -- "$FOLDER"; fi
  check_folder "$FOLDER" "$role"
done

# What this script installed here, by name relative to PREFIX, one a line.
[ ! -e "$MARKER" ] && [ ! -L "$MARKER" ] || check_file "$MARKER"
ours() { [ -f "$MARKER" ] && grep -qxF -- "$1" "$MARKER"; }
TEMPS=()
trap 'rm -rf -- "${TEMPS[@]}"' EXIT
# put DEST MODE < content: a new file beside DEST, renamed over it (never through a link)
put() {
  local dest="$1" tmp
  [ ! -L "$dest" ] || refuse "$dest is a symlink"
  [ ! -d "$dest" ] || refuse "$dest is a folder"
  tmp="$(mktemp -- "$(dirname -- "$dest")/.fashion-search.XXXXXX")"
  TEMPS+=("$tmp")
  cat > "$tmp"
  chmod "$2" "$tmp"
  mv -T -- "$tmp" "$dest"
}
# record NAME in the marker before making it, so a run cut short leaves it ours to replace
claim() {
  ours "$1" && return 0
  { if [ -f "$MARKER" ]; then cat "$MARKER"; else echo "# installed by fashion-search's scripts/deploy.sh; it replaces nothing else"; fi
    echo "$1"; } | put "$MARKER" 0644
}
# a folder: made (and claimed) if missing, else it must be a real, trusted one
folder() {
  local path="$PREFIX/$1"
  if [ ! -e "$path" ] && [ ! -L "$path" ]; then claim "$1"; mkdir -m 0755 -- "$path"; fi
  check_folder "$path" own
}

# Check everything before changing anything.
PROBLEMS=()
for name in venv app fashion-search.service nginx/fashion-search.conf nginx/nginx.conf; do
  path="$PREFIX/$name"
  if [ -L "$path" ]; then
    PROBLEMS+=("$path is a symlink; this script replaces only what it installed itself")
  elif [ -e "$path" ] && ! ours "$name"; then
    PROBLEMS+=("$path exists but $MARKER does not list it as installed by this script: move it away (an install by an older version? remove it, the settings file is kept)")
  fi
done
for name in venv app; do
  [ -L "$PREFIX/$name" ] || [ ! -e "$PREFIX/$name" ] || [ -d "$PREFIX/$name" ] || PROBLEMS+=("$PREFIX/$name is not a folder")
done
for name in fashion-search.service nginx/fashion-search.conf nginx/nginx.conf; do
  [ -L "$PREFIX/$name" ] || [ ! -e "$PREFIX/$name" ] || [ -f "$PREFIX/$name" ] || PROBLEMS+=("$PREFIX/$name is not a plain file")
done
[ ! -L "$PREFIX/fashion-search.env" ] || PROBLEMS+=("$PREFIX/fashion-search.env is a symlink: put the settings file itself there")
for name in nginx run var catalogue; do
  [ ! -L "$PREFIX/$name" ] || PROBLEMS+=("$PREFIX/$name is a symlink")
done
if [ "${#PROBLEMS[@]}" != 0 ]; then
  for problem in "${PROBLEMS[@]}"; do say "refusing: $problem"; done
  exit 2
fi
ENV_FILE="$PREFIX/fashion-search.env"
[ ! -e "$ENV_FILE" ] || check_file "$ENV_FILE"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  say "$PYTHON 3.10 or newer is needed (Debian: apt-get install python3)"; exit 2
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$ME" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    say "$PYTHON cannot make virtual environments: apt-get install python3-venv"; exit 2
  fi
fi

# A fresh environment every time: an interpreter found here is never run.
say "packages -> $PREFIX/venv"
claim venv
rm -rf -- "$PREFIX/venv"
"$PYTHON" -m venv -- "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$SOURCE/requirements.txt"

say "code -> $PREFIX/app"
NEW="$(mktemp -d -- "$PREFIX/.app.new.XXXXXX")"
TEMPS+=("$NEW")
chmod 0755 "$NEW"
tar -C "$SOURCE" --exclude=__pycache__ -cf - \
  app.py gunicorn.conf.py requirements.txt README.md indexer web templates static deploy \
  | tar -C "$NEW" --no-same-owner --no-same-permissions -xf -
claim app
OLD=""
if [ -d "$PREFIX/app" ]; then
  OLD="$(mktemp -d -- "$PREFIX/.app.old.XXXXXX")"
  TEMPS+=("$OLD")
  mv -T -- "$PREFIX/app" "$OLD/app"
fi
mv -T -- "$NEW" "$PREFIX/app"
[ -z "$OLD" ] || rm -rf -- "$OLD"

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
if [ ! -e "$ENV_FILE" ]; then
  claim fashion-search.env
  if [ "$SYSTEM" = 1 ]; then
    put "$ENV_FILE" 0640 < "$SOURCE/deploy/fashion-search.env"
  else
    { echo "$LOCAL_MARK"; to_prefix "$SOURCE/deploy/fashion-search.env"; } | put "$ENV_FILE" 0640
  fi
  say "settings -> $ENV_FILE (edit FASHION_CATALOGUE there)"
elif [ "$SYSTEM" = 1 ] && grep -qxF "$LOCAL_MARK" "$ENV_FILE"; then
  ours fashion-search.env || refuse "$ENV_FILE names folders under the prefix, but $MARKER does not list it as this script's: edit it yourself"
  to_system "$ENV_FILE" | put "$ENV_FILE" 0640
  say "settings: $ENV_FILE now names the system's folders"
fi
claim fashion-search.service
if [ "$SYSTEM" = 1 ]; then
  # the shipped unit names the default prefix; point every path at this one
  sed "s#$SHIPPED_PREFIX\b#$PREFIX#g" "$SOURCE/deploy/fashion-search.service" | put "$PREFIX/fashion-search.service" 0644
else
  # no /run or /var/lib folders of its own: the socket and the index live under PREFIX
  to_prefix -e '/^RuntimeDirectory/d' -e '/^StateDirectory/d' \
      -e "s#^ReadWritePaths=.*#ReadWritePaths=$PREFIX/var $PREFIX/run#" -e 's#^ExecReload=/bin/kill #ExecReload=kill #' \
      "$SOURCE/deploy/fashion-search.service" | put "$PREFIX/fashion-search.service" 0644
  folder run; folder var; folder catalogue
fi
folder nginx
claim nginx/fashion-search.conf
put "$PREFIX/nginx/fashion-search.conf" 0644 < "$SOURCE/deploy/nginx.conf"
claim nginx/nginx.conf
put "$PREFIX/nginx/nginx.conf" 0644 < "$SOURCE/deploy/nginx-main.conf"

if [ "$SYSTEM" = 0 ]; then
  say "done. As root, to run it: bash $SOURCE/scripts/install.sh --deploy $PREFIX --system"
  exit 0
fi

id fashion >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin fashion
chgrp -h fashion "$PREFIX/fashion-search.env"  # a plain file (checked above), never a link
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
