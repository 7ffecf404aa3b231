#!/usr/bin/env bash
# Builds the `hearth:dev` container image FROM scratch: the release binary plus the few shared
# libraries it links (ldd lists them; glibc >= 2.34 resolves names without NSS modules).
# Nothing is pulled from any registry.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p hearth
bin="$TARGET_DIR/release/hearth"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/data" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
cp "$bin" "$ctx/rootfs/hearth"
# Every library the binary links, at the same path, plus the dynamic loader.
ldd "$bin" | awk '/=>/ { print $3 } /^[ \t]*\// { print $1 }' | sort -u | while read -r lib; do
  [ -f "$lib" ] || continue
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
printf 'hosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/hearth"]
DOCKERFILE
docker build -q -t hearth:dev "$ctx"
echo "built image hearth:dev ($(du -sh "$ctx/rootfs" | cut -f1) root filesystem)"
