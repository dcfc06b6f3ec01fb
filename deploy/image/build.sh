#!/usr/bin/env bash
# Builds the CPU image with buildah from `scratch`: the release binary, exactly the shared
# libraries it links (from ldd), a non-root user. No base image is pulled, so this works
# where registries cannot be reached.
#
# Usage: deploy/image/build.sh [IMAGE_NAME]     (default ofa-entail:cpu)
# Env: BUILDAH_STORAGE_DRIVER (default vfs, which needs no kernel overlay support)
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:-ofa-entail:cpu}
bin=target/release/ofa-entail
[ -x "$bin" ] || cargo build --release -p ofa-entail
export STORAGE_DRIVER=${BUILDAH_STORAGE_DRIVER:-vfs}
b() { buildah --storage-driver "$STORAGE_DRIVER" "$@"; }

ctr=$(b from scratch)
trap 'b umount "$ctr" >/dev/null 2>&1 || true; b rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(b mount "$ctr")
install -D -m 0755 "$bin" "$root/usr/local/bin/ofa-entail"
# The dynamic loader and every library the binary needs, at the paths ldd resolved.
ldd "$bin" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
mkdir -p "$root/etc" "$root/tmp" "$root/models"
chmod 1777 "$root/tmp"
echo "ofa:x:10001:10001:ofa-entail:/nonexistent:/sbin/nologin" > "$root/etc/passwd"
echo "ofa:x:10001:" > "$root/etc/group"
b umount "$ctr" >/dev/null

b config \
  --entrypoint '["/usr/local/bin/ofa-entail"]' --cmd serve \
  --user 10001:10001 --port 8000 \
  --env HOST=0.0.0.0 --env PORT=8000 --env LOG_FORMAT=json --env MODEL_CACHE=/models \
  --label org.opencontainers.image.title=ofa-entail \
  --label org.opencontainers.image.description="OFA visual entailment inference service" \
  "$ctr"
b commit --rm "$ctr" "$name" >/dev/null
trap - EXIT
b images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$name"
