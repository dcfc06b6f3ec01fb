#!/usr/bin/env bash
# Runs the built image without a container runtime: its root filesystem is mounted by buildah
# and the entrypoint runs chrooted into it as the image's user (uid 10001). The model gets onto
# the /models volume as in a pod: with HUB_URL (a ModelScope hub or mirror serving MODEL_ID),
# the image's own `ofa-entail download` fetches it there, as the init container does, and the
# server then loads it offline; without, the tiny model is copied in. Then /healthz, /readyz and
# a real /predict are probed.
#
# Usage: deploy/image/run-check.sh [IMAGE_NAME] [PORT] [HUB_URL MODEL_ID]
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:-ofa-entail:cpu}
port=${2:-18190}
hub=${3:-}
model_id=${4:-}
export STORAGE_DRIVER=${BUILDAH_STORAGE_DRIVER:-vfs}
b() { buildah --storage-driver "$STORAGE_DRIVER" "$@"; }

ctr=$(b from "$name")
root=$(b mount "$ctr")
pid=
log=$(mktemp "${TMPDIR:-/tmp}/ofa-image-run.XXXXXX")
cleanup() {
  status=$?
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  # The server's own log says why a probe failed.
  [ "$status" -ne 0 ] && { echo "the server's log:" >&2; cat "$log" >&2; }
  rm -f "$log"
  b umount "$ctr" >/dev/null 2>&1 || true
  b rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT
chroot_bin=$(command -v chroot)
# The image's own entrypoint and user, as a runtime would start them.
chown 10001:10001 "$root/models"
if [ -n "$hub" ]; then
  env -i MODEL_ID="$model_id" MODEL_CACHE=/models MODELSCOPE_ENDPOINT="$hub" \
    "$chroot_bin" --userspec=10001:10001 "$root" /usr/local/bin/ofa-entail download >&2
  model_env=(MODEL_ID="$model_id" MODEL_CACHE=/models MODEL_OFFLINE=true)
else
  cp -r fixtures/tiny_ofa_ve "$root/models/tiny"
  chown -R 10001:10001 "$root/models/tiny"
  model_env=(MODEL_DIR=/models/tiny)
fi
env -i HOST=127.0.0.1 PORT="$port" LOG_FORMAT=json RATE_LIMIT=off "${model_env[@]}" \
  "$chroot_bin" --userspec=10001:10001 "$root" /usr/local/bin/ofa-entail serve > "$log" 2>&1 &
pid=$!
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/healthz"; echo
curl -sf "http://127.0.0.1:$port/readyz"; echo
curl -sf -F image=@fixtures/golden/images/grace_hopper.jpg -F "text=a woman in a military uniform." \
  "http://127.0.0.1:$port/predict"; echo
