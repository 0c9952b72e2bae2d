#!/bin/bash
# Print a PATH that holds only the programs a fresh CI machine has: those of the
# Debian packages of .ci/base-packages (the machine as it comes) and of
# .ci/apt-packages with their dependencies (what scripts/setup-dev.sh installs).
# A test that needs anything else (a program this machine got by hand) then
# fails here as it would on a fresh machine.
# Usage: PATH=$(scripts/fresh-path.sh DIR) ./scripts/test.sh   (DIR: created, filled with links)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/fresh-path.sh DIR}
rm -rf "$dir" && mkdir -p "$dir" && chmod 755 "$dir"  # tests run programs as other users too

wanted() { grep -v '^\s*\(#\|$\)' "$1"; }
mapfile -t listed < <(wanted .ci/apt-packages)
# installed packages the listed ones depend on (Depends, Pre-Depends), recursively
mapfile -t deps < <(apt-cache depends --recurse --installed --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances "${listed[@]}" 2>/dev/null \
    | sed -n 's/^ *\(Pre\)\{0,1\}Depends: \([^<>: ]*\).*/\2/p' | sort -u)
allowed=$( (wanted .ci/base-packages; printf '%s\n' "${listed[@]}" "${deps[@]}") | sort -u)

# every program file of those packages (dpkg -L), then alternatives pointing at one of them
programs=$(mktemp)
trap 'rm -f "$programs"' EXIT
for package in $allowed; do
    dpkg -L "$package" 2>/dev/null || true
done | grep -E '^(/usr)?/s?bin/[^/]+$' | sort -u >"$programs"
declare -A known
while read -r file; do
    known[$file]=1
    [ -x "$file" ] && [ ! -d "$file" ] && ln -sf "$file" "$dir/$(basename "$file")"
done <"$programs"
for bindir in /usr/bin /usr/sbin /bin /sbin; do
    for link in "$bindir"/*; do
        [ -L "$link" ] && [ ! -e "$dir/$(basename "$link")" ] || continue
        target=$(readlink -f "$link")
        if [ -n "${known[$target]:-}${known[${target#/usr}]:-}${known[/usr$target]:-}" ]; then
            ln -s "$link" "$dir/$(basename "$link")"
        fi
    done
done
echo "$dir"
