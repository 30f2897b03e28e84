#!/usr/bin/env bash
# Builds the OCI image localhost/convis:<version> (and :latest) with podman
# or docker, from this checkout and the two package registries (npm,
# Debian): no base image, no image registry. `npm run image` builds first.
#
#   bash scripts/image.sh            # podman if installed, else docker
#   CONVIS_IMAGE_ENGINE=docker bash scripts/image.sh
#
# CONVIS_IMAGE_ENGINE may carry flags too (the tests pass a private podman
# --root). Prints the image name and its size on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a engine <<< "${CONVIS_IMAGE_ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}"
version=$(node -p 'require("./package.json").version')
name=localhost/convis
dir=$(mktemp -d /tmp/convis-image.XXXXXX)
trap 'rm -rf "$dir"' EXIT

bash deploy/image/rootfs.sh "$dir/rootfs"
# the settings deploy/image/Dockerfile gives the same root filesystem
# one key=value per ENV and LABEL: `podman import --change` takes the rest of the line as one value
changes=(
  --change 'ENTRYPOINT ["/usr/local/bin/node", "--v8-pool-size=1", "/opt/convis/bin/convis"]'
  --change 'ENV PATH=/usr/local/bin:/usr/bin'
  --change 'ENV NODE_ENV=production'
  --change 'ENV MALLOC_ARENA_MAX=2'
  --change 'WORKDIR /'
  --change 'USER 0:0'
  --change 'EXPOSE 9400'
  --change 'LABEL org.opencontainers.image.title=convis'
  --change "LABEL org.opencontainers.image.version=$version"
  --change 'LABEL org.opencontainers.image.licenses=Apache-2.0'
)
# the engine's progress lines are shown only when the import fails
tar --numeric-owner -C "$dir/rootfs" -c . | "${engine[@]}" import "${changes[@]}" - "$name:$version" >/dev/null 2>"$dir/import.log" ||
  { cat "$dir/import.log" >&2; exit 1; }
"${engine[@]}" tag "$name:$version" "$name:latest"
bytes=$("${engine[@]}" image inspect --format '{{.Size}}' "$name:$version")
echo "image: $name:$version ($name:latest), $((bytes / 1000000)) MB ($bytes bytes)"
