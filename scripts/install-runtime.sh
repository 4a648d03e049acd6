#!/usr/bin/env bash
# Installs what the local cluster's real node (`cluster up --node real`) and
# the project's image builder need from Debian's packages, when missing:
# containerd, runc, the CNI plugins (in /usr/lib/cni), iptables and iproute2
# (kube-proxy, the bridge), nftables (to remove the tables iptables-nft
# leaves behind), conntrack, debootstrap (Debian root filesystems for images),
# a C compiler with a static libc (the pause image's program), and
# PostgreSQL (the server of the postgres:// state backend option; the local
# cluster code starts its own, under a data dir of its own), docker-registry
# (each real node's image registry) and skopeo (`images push`), and
# prometheus (promtool for the alert rules' tests; a Prometheus the
# monitoring test starts itself).
#
# Nothing is started or enabled here: the local cluster starts containerd
# itself, with its own config and data under the cluster's data directory
# (and the services some packages would start are kept from running).
set -euo pipefail

# command -> Debian package that provides it
declare -A NEED=(
  [containerd]=containerd
  [runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [iptables]=iptables
  [nft]=nftables
  [ip]=iproute2
  [conntrack]=conntrack
  [debootstrap]=debootstrap
  [gcc]=gcc
  [/usr/lib/x86_64-linux-gnu/libc.a]=libc6-dev
  [/usr/lib/postgresql/15/bin/postgres]=postgresql
  [setpriv]=util-linux
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [promtool]=prometheus
)

missing=()
for what in "${!NEED[@]}"; do
  if [[ "$what" == /* ]]; then [[ -e "$what" ]] && continue
  else command -v "$what" >/dev/null 2>&1 && continue; fi
  missing+=("${NEED[$what]}")
done

if ((${#missing[@]} == 0)); then
  echo "[runtime] containerd $(containerd --version | awk '{print $3}'), runc, CNI plugins, debootstrap: present"
  exit 0
fi

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "[runtime] installing from Debian's packages: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[runtime] apt-get is not available on this machine. The real node needs: ${missing[*]}" >&2
  echo "[runtime] install them with the system's package manager, then run \`make setup\` again." >&2
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "[runtime] installing packages needs root; run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
t0=$SECONDS
export DEBIAN_FRONTEND=noninteractive
# docker-registry and prometheus start a system service when installed (on systemd hosts): one
# listening on every interface's port 5000, the other on 9090. Nothing here may run them: the
# local cluster starts its own registry on the node's address, the tests their own Prometheus.
# A policy-rc.d that says "no" keeps them from starting during the install (when the host has
# none of its own); afterwards they are disabled for the next boot too.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
step="$(dirname "${BASH_SOURCE[0]}")/step.sh"
bash "$step" runtime apt update apt-get update -q
bash "$step" runtime apt install apt-get install -y -q --no-install-recommends "${missing[@]}"
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  for service in docker-registry prometheus; do
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  done
fi
echo "[runtime] installed in $((SECONDS - t0))s"
