#!/usr/bin/env bash
# Verifies (`check`) or re-copies (`vendor`) the WASI packages under wit/deps/
# against the pins in wit/deps.lock. The sources are crates that ship the WIT
# files they were generated from, so no network beyond crates.io is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-check}
lock=wit/deps.lock

registry_src() {
  local crate=$1 dir
  dir=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$crate" 2>/dev/null | head -n1 || true)
  if [ -z "$dir" ]; then
    # Fetch the exact crate once through a throwaway manifest.
    local tmp name=${crate%@*} version=${crate#*@}
    tmp=$(mktemp -d)
    printf '[package]\nname="w"\nversion="0.0.0"\nedition="2021"\n[dependencies]\n%s="=%s"\n' "$name" "$version" >"$tmp/Cargo.toml"
    mkdir "$tmp/src" && : >"$tmp/src/lib.rs"
    cargo fetch --manifest-path "$tmp/Cargo.toml" >/dev/null
    rm -rf "$tmp"
    dir=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$crate" | head -n1)
  fi
  echo "$dir"
}

status=0
while read -r sum path source; do
  case "$sum" in ''|'#'*) continue ;; esac
  if [ "$mode" = vendor ]; then
    crate=${source%%:*}
    src="$(registry_src "${crate/@/-}")/${source#*:}"
    mkdir -p "$(dirname "$path")"
    cp "$src" "$path"
  fi
  actual=$(sha256sum "$path" 2>/dev/null | cut -d' ' -f1 || true)
  if [ "$actual" != "$sum" ]; then
    echo "wit-deps: $path does not match its pin in $lock (expected $sum, found ${actual:-no file}); run \`make wit-vendor\` or update the pin on purpose" >&2
    status=1
  fi
done <"$lock"

extra=$(find wit/deps -name '*.wit' | sort | while read -r f; do grep -q "  $f  " "$lock" || echo "$f"; done)
if [ -n "$extra" ]; then
  echo "wit-deps: files under wit/deps/ without a pin in $lock: $extra" >&2
  status=1
fi
[ $status -eq 0 ] && echo "wit-deps: all files under wit/deps/ match $lock"
exit $status
