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
# itself, with its own config and data under the cluster's data directory.
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
step="$(dirname "${BASH_SOURCE[0]}")/step.sh"
bash "$step" runtime apt update apt-get update -q
bash "$step" runtime apt install apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "[runtime] installed in $((SECONDS - t0))s"
