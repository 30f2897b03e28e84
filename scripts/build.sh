#!/usr/bin/env bash
# Builds the three parts of convis: the CO-RE BPF object (and its libbpf
# skeleton), the N-API addon that embeds it, and the TypeScript.
# Needs clang, llvm, bpftool, libbpf-dev and Node's headers: scripts/setup.sh
# installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build

# vmlinux.h comes from the build machine's BTF; the object is CO-RE, so it
# loads on any kernel with BTF, not only this one.
btf="${CONVIS_VMLINUX_BTF:-/sys/kernel/btf/vmlinux}"
if [ ! -s build/vmlinux.h ]; then
  if [ ! -r "$btf" ]; then
    echo "build: no kernel BTF at $btf (set CONVIS_VMLINUX_BTF to a vmlinux file with BTF)" >&2
    exit 1
  fi
  bpftool btf dump file "$btf" format c > build/vmlinux.h.tmp
  mv build/vmlinux.h.tmp build/vmlinux.h
fi

if [ ! build/convis.skel.h -nt bpf/convis.bpf.c ] || [ ! build/convis.skel.h -nt bpf/events.h ]; then
  clang -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 \
    -Wall -Werror -Wno-unused-function \
    -Ibuild -Ibpf -c bpf/convis.bpf.c -o build/convis.bpf.o
  # keep BTF (CO-RE needs it), drop DWARF
  llvm-strip -g build/convis.bpf.o
  bpftool gen skeleton build/convis.bpf.o name convis_bpf > build/convis.skel.h.tmp
  mv build/convis.skel.h.tmp build/convis.skel.h
fi

# npm puts its bundled node-gyp on PATH inside `npm run`; outside, find it.
gyp=(node-gyp)
if ! command -v node-gyp >/dev/null 2>&1; then
  gyp=(node "$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js")
fi
nodedir=()
# build against the installed Node's headers (there is no network for a download):
# Debian's and NodeSource's under /usr, the official binary's (node images) under /usr/local
for d in /usr /usr/local; do
  if [ -f "$d/include/node/node_api.h" ]; then nodedir=(--nodedir="$d"); break; fi
done
if [ ! native/build/Release/convis.node -nt build/convis.skel.h ] || [ ! native/build/Release/convis.node -nt native/addon.c ]; then
  "${gyp[@]}" rebuild --directory native "${nodedir[@]}" --loglevel=error >/dev/null
fi

# from scratch: a renamed or deleted source must not leave a stale test behind
rm -rf dist
node node_modules/typescript/bin/tsc -p tsconfig.json
