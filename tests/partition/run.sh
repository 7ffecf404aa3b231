#!/usr/bin/env bash
# The Docker partition suite, one command: builds the `hearth:dev` image FROM scratch
# (deploy/build-image.sh; nothing is pulled), then runs tests/partition (crate hearth-partition)
# against docker-compose.yml. Prints a table; exits non-zero on a violated invariant, and when no
# Docker engine answers (it never passes silently).
#   tests/partition/run.sh                 # everything
#   tests/partition/run.sh --only pause    # scenarios whose name contains "pause"
#   SKIP_IMAGE_BUILD=1 tests/partition/run.sh   # reuse an image built from this tree
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! docker info >/dev/null 2>&1; then
  echo "partition suite: no Docker engine answers (docker info failed); it needs one. FAILING." >&2
  exit 1
fi
for tool in docker-compose nsenter iptables; do
  if ! command -v "$tool" >/dev/null; then
    echo "partition suite: $tool is missing on this host (Debian: docker-compose, util-linux, iptables). FAILING." >&2
    exit 1
  fi
done
if [ "${SKIP_IMAGE_BUILD:-}" != 1 ]; then
  bash deploy/build-image.sh
fi
cargo build -q -p hearth-partition
start=$(date +%s)
"${CARGO_TARGET_DIR:-target}/debug/hearth-partition" --root . "$@"
echo "partition suite wall time: $(( $(date +%s) - start )) s"
