#!/usr/bin/env bash
# Sets a fresh Debian 12 machine up to build, run and test convis, as root:
# Debian packages (toolchain, libbpf, test peers), npm packages, the build.
# Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs Debian packages)" >&2
  exit 1
fi

# build: clang/llvm (BPF object), bpftool (vmlinux.h, skeleton), libbpf-dev,
# build-essential + python3 (node-gyp); run: libbpf1, libelf1, zlib1g;
# tests: iproute2 (network namespaces), util-linux (setpriv), python3 (peers),
# real container runtimes started by the tests (dockerd, podman, containerd with CRI, runc,
# CNI plugins), busybox-static for the images they build locally, and a real
# Prometheus for the metrics tests, liburing-dev for the io_uring peer; iperf3
# for the benchmark's bulk transfer, nginx and apache2-utils (ab) for its web
# server phase; dnsmasq-base: a real DNS server for the DNS-names test;
# openssl: the image build checks the Node.js tarball's integrity with it
pkgs=(clang llvm bpftool libbpf-dev libbpf1 libelf1 zlib1g build-essential python3 iproute2 util-linux ca-certificates
  containerd runc containernetworking-plugins busybox-static docker.io podman iptables
  prometheus liburing-dev iperf3 nginx apache2-utils dnsmasq-base openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund --loglevel=error
bash scripts/build.sh
