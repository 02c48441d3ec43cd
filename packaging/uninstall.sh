#!/bin/sh
# Inspection Station: removes this installation (the folder this script is in, the `station`
# command and the desktop launcher that install.sh created). The user's data and settings are
# kept: recipes, results, images and logs in ~/.local/share/InspectionStation, settings in
# ~/.config/InspectionStation. Reinstalling later finds them again.
#
#     <prefix>/uninstall.sh            remove the app, keep the data
#     <prefix>/uninstall.sh --purge    also delete the data, settings and cache (asks first;
#                                      --yes to skip the question)
set -eu

main() {
    MARKER=.inspection-station-install
    HERE=$(cd "$(dirname "$0")" && pwd)
    PURGE=0
    YES=0
    for arg in "$@"; do
        case "$arg" in
            --purge) PURGE=1 ;;
            --yes|-y) YES=1 ;;
            -h|--help) sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'; exit 0 ;;
            *) echo "uninstall.sh: unknown option $arg" >&2; exit 1 ;;
        esac
    done
    [ -f "$HERE/$MARKER" ] || { echo "uninstall.sh: $HERE is not an Inspection Station installation; nothing removed" >&2; exit 1; }

    DATA="${XDG_DATA_HOME:-$HOME/.local/share}/InspectionStation"
    CONFIG="${XDG_CONFIG_HOME:-$HOME/.config}/InspectionStation"
    CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/InspectionStation"
    if [ "$PURGE" = 1 ] && [ "$YES" != 1 ]; then
        printf 'Delete ALL recipes, results, images, logs and settings in\n  %s\n  %s\n  %s\n? Type yes: ' "$DATA" "$CONFIG" "$CACHE"
        read -r answer || answer=
        [ "$answer" = yes ] || { echo "Nothing removed."; exit 1; }
    fi

    desktop=$(sed -n 's/^desktop=//p' "$HERE/$MARKER")
    icon=$(sed -n 's/^icon=//p' "$HERE/$MARKER")
    link=$(sed -n 's/^link=//p' "$HERE/$MARKER")
    [ -n "$desktop" ] && [ -f "$desktop" ] && grep -q "$HERE/app/station" "$desktop" && rm -f "$desktop"
    [ -n "$icon" ] && rm -f "$icon"
    # the command only when it still points into this installation
    if [ -n "$link" ] && [ -L "$link" ]; then
        case "$(readlink "$link")" in "$HERE"/*) rm -f "$link" ;; esac
    fi
    if [ -n "$desktop" ] && command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database -q "$(dirname "$desktop")" 2>/dev/null || true
    fi
    rm -rf "$HERE"
    echo "Inspection Station removed from $HERE."
    if [ "$PURGE" = 1 ]; then
        rm -rf "$DATA" "$CONFIG" "$CACHE"
        echo "Data, settings and cache deleted."
    else
        echo "Kept your data in $DATA and settings in $CONFIG (delete them by hand if they are no longer needed)."
    fi
}

main "$@"
exit 0
