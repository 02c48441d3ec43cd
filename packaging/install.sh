#!/bin/sh
# Inspection Station: per-user installer (no root needed). Run it from the unpacked archive:
#
#     tar xzf inspection-station-<version>-linux-x86_64.tar.gz
#     ./inspection-station-<version>-linux-x86_64/install.sh [options]
#
# Installs the app into ~/.local/opt/inspection-station (or --prefix), a `station` command into
# ~/.local/bin, a desktop launcher into ~/.local/share/applications and its icon. Running a newer
# (or the same) archive's install.sh upgrades in place: the app folder is replaced, the user's
# data (recipes, results, images, logs) and settings are never touched: they live in the user's
# data and config folders (~/.local/share/InspectionStation, ~/.config/InspectionStation), not in
# the install folder. To remove the app: <prefix>/uninstall.sh (keeps the data).
#
# Options:
#   --prefix DIR     install folder (default: ~/.local/opt/inspection-station)
#   --bin-dir DIR    where the `station` command goes (default: ~/.local/bin)
#   --no-desktop     no desktop launcher and icon
#   --no-bin         no `station` command
#   --check          run `station --self-test` after installing (15 to 30 seconds)
#   -q, --quiet      say less
#   -h, --help       this text
set -eu

NAME=inspection-station
MARKER=.inspection-station-install
HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=$(cat "$HERE/VERSION" 2>/dev/null || echo unknown)

DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
PREFIX=$HOME/.local/opt/$NAME
BIN_DIR=$HOME/.local/bin
DESKTOP=1
BIN=1
CHECK=0
QUIET=0

say() { [ "$QUIET" = 1 ] || printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX=$2; shift ;;
        --prefix=*) PREFIX=${1#*=} ;;
        --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a folder"; BIN_DIR=$2; shift ;;
        --bin-dir=*) BIN_DIR=${1#*=} ;;
        --no-desktop) DESKTOP=0 ;;
        --no-bin) BIN=0 ;;
        --check) CHECK=1 ;;
        -q|--quiet) QUIET=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

[ -n "${HOME:-}" ] || die "HOME is not set"
[ -x "$HERE/app/station" ] || die "$HERE/app/station is missing: run install.sh from the unpacked archive"

# The app carries libraries from the build machine: it needs at least that machine's glibc.
ver_ge() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, "."); split(b, y, "."); exit !((x[1] > y[1]) || (x[1] == y[1] && x[2] >= y[2])) }'; }
NEED_GLIBC=$(sed -n 's/.*"glibc_required": *"\([0-9.]*\)".*/\1/p' "$HERE/app/_internal/build-info.json" 2>/dev/null | head -n 1)
HAVE_GLIBC=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ -n "$NEED_GLIBC" ] && [ -n "$HAVE_GLIBC" ] && ! ver_ge "$HAVE_GLIBC" "$NEED_GLIBC"; then
    die "this PC has glibc $HAVE_GLIBC; this build of the station needs glibc $NEED_GLIBC or newer (a newer Linux, or a build made on an older one)"
fi
case "$PREFIX" in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
case "$BIN_DIR" in /*) ;; *) BIN_DIR=$(pwd)/$BIN_DIR ;; esac
PREFIX=${PREFIX%/}
[ "$PREFIX" != "$HOME" ] && [ "$PREFIX" != "$DATA_HOME" ] || die "refusing to install into $PREFIX itself: choose a folder of its own"
if [ "$(id -u)" = 0 ] && [ "${STATION_INSTALL_AS_ROOT:-}" != 1 ]; then
    say "note: installing as root, for root's own account (HOME=$HOME); the station is meant to be installed per user"
fi

# An existing folder is replaced only when it is an earlier installation (it has our marker):
# anything else (a typo in --prefix, someone's data) is never deleted.
if [ -e "$PREFIX" ] && [ ! -f "$PREFIX/$MARKER" ]; then
    if [ -d "$PREFIX" ] && [ -z "$(ls -A "$PREFIX")" ]; then
        rmdir "$PREFIX"
    else
        die "$PREFIX exists and is not an Inspection Station installation: choose another --prefix"
    fi
fi
OLD_VERSION=
[ -f "$PREFIX/VERSION" ] && OLD_VERSION=$(cat "$PREFIX/VERSION")

PARENT=$(dirname "$PREFIX")
mkdir -p "$PARENT"
NEW="$PARENT/.$NAME.new.$$"
OLD="$PARENT/.$NAME.old.$$"
trap 'rm -rf "$NEW"' EXIT INT TERM
say "Installing Inspection Station $VERSION into $PREFIX ..."
mkdir -p "$NEW"
cp -RP "$HERE/app" "$NEW/app"
cp "$HERE/VERSION" "$NEW/VERSION"
cp "$HERE/uninstall.sh" "$NEW/uninstall.sh"
chmod 755 "$NEW/uninstall.sh" "$NEW/app/station"

ICON_DIR="$DATA_HOME/icons/hicolor/scalable/apps"
ICON="$ICON_DIR/$NAME.svg"
APPS_DIR="$DATA_HOME/applications"
DESKTOP_FILE="$APPS_DIR/$NAME.desktop"
LINK="$BIN_DIR/station"
{
    echo "version=$VERSION"
    [ "$DESKTOP" = 1 ] && echo "desktop=$DESKTOP_FILE" && echo "icon=$ICON"
    [ "$BIN" = 1 ] && echo "link=$LINK"
    true
} > "$NEW/$MARKER"

# swap: the previous version moves aside, the new one takes its place, the old one goes
if [ -d "$PREFIX" ]; then
    mv "$PREFIX" "$OLD"
fi
mv "$NEW" "$PREFIX"
trap - EXIT INT TERM
rm -rf "$OLD"

if [ "$BIN" = 1 ]; then
    mkdir -p "$BIN_DIR"
    if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
        say "note: $LINK exists and is not a link: left alone (start the station with $PREFIX/app/station)"
    else
        ln -sfn "$PREFIX/app/station" "$LINK"
    fi
fi

if [ "$DESKTOP" = 1 ]; then
    mkdir -p "$ICON_DIR" "$APPS_DIR"
    cp "$PREFIX/app/_internal/resources/icons/station.svg" "$ICON"
    TMP_DESKTOP="$APPS_DIR/.$NAME.desktop.$$"
    cat > "$TMP_DESKTOP" <<EOF
[Desktop Entry]
Type=Application
Version=1.0
Name=Inspection Station
GenericName=Visual inspection
Comment=Offline visual inspection: PASS, FAIL or REVIEW with a heatmap
Exec="$PREFIX/app/station"
TryExec=$PREFIX/app/station
Icon=$ICON
Terminal=false
Categories=Graphics;ImageProcessing;
Keywords=inspection;anomaly;quality;camera;
StartupNotify=true
X-InspectionStation-Version=$VERSION
EOF
    chmod 644 "$TMP_DESKTOP"
    mv "$TMP_DESKTOP" "$DESKTOP_FILE"
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$APPS_DIR" 2>/dev/null || true
fi

if [ -n "$OLD_VERSION" ]; then
    say "Upgraded from $OLD_VERSION to $VERSION."
else
    say "Installed $VERSION."
fi
if [ "$BIN" = 1 ]; then
    say "  start:     station (in $BIN_DIR), or the 'Inspection Station' launcher"
else
    say "  start:     $PREFIX/app/station, or the 'Inspection Station' launcher"
fi
say "  check:     $PREFIX/app/station --self-test"
say "  uninstall: $PREFIX/uninstall.sh (keeps recipes, results and settings)"
say "  your data and settings stay in ${XDG_DATA_HOME:-~/.local/share}/InspectionStation and ${XDG_CONFIG_HOME:-~/.config}/InspectionStation"
case ":$PATH:" in *":$BIN_DIR:"*) ;; *) [ "$BIN" = 1 ] && say "note: $BIN_DIR is not on your PATH" ;; esac

if [ "$CHECK" = 1 ]; then
    say "Running the self-test ..."
    "$PREFIX/app/station" --self-test
fi
exit 0
