#!/usr/bin/env bash
# Builds the real toolchain the operator and its tests need, from Go modules,
# into a versioned cache outside the repository. Idempotent: a program whose
# stamp exists is skipped. Prints progress per program; on failure names the
# program and step and keeps the log.
#
#   scripts/build-toolchain.sh            build everything missing
#   scripts/build-toolchain.sh --print-dir  print the tool directory only
set -euo pipefail

PULUMI_VERSION=v3.274.1
# The Go module proxy reachable here serves pulumi-kubernetes' provider module
# only at this commit (2026-01-15); it is registered under the Python SDK's
# version so that the SDK never asks for a download.
K8S_PROVIDER_MODULE_VERSION=v4.0.0-20260115033456-f47bc2d6f199
K8S_PROVIDER_VERSION=4.34.2
ETCD_VERSION=v3.6.16
KUBE_VERSION=v1.36.3
KUBE_STAGING_VERSION=v0.36.3
KWOK_VERSION=v0.8.0
COREDNS_VERSION=v1.14.7

KEY="pulumi-${PULUMI_VERSION}_k8sprov-${K8S_PROVIDER_VERSION}_etcd-${ETCD_VERSION}_kube-${KUBE_VERSION}_kwok-${KWOK_VERSION}"
# CoreDNS is not part of the key: adding it later must not rebuild the rest.
CACHE_ROOT="${IFLEARNER_CACHE:-$HOME/.cache/iflearner-operator}"
TOOLS="$CACHE_ROOT/tools/$KEY"
BIN="$TOOLS/bin"
# Providers live outside bin/ (which goes on PATH for the language host): a
# provider found on PATH is used whatever its version, with a warning each
# run; registered in PULUMI_HOME it is resolved like any plugin.
PROVIDERS="$TOOLS/providers"
LOGS="$TOOLS/logs"
WORK="$CACHE_ROOT/build"

if [[ "${1:-}" == "--print-dir" ]]; then echo "$TOOLS"; exit 0; fi

mkdir -p "$BIN" "$PROVIDERS" "$LOGS" "$WORK" "$TOOLS/stamps"
if [[ -f "$BIN/pulumi-resource-kubernetes" ]]; then  # built by an earlier version of this script
  mv "$BIN/pulumi-resource-kubernetes" "$PROVIDERS/pulumi-resource-kubernetes"
fi
export CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false GOPROXY="${GOPROXY:-https://proxy.golang.org}"
START_ALL=$SECONDS

# log, run (a step with its log and a heartbeat), last_line: scripts/build-progress.sh.
# shellcheck source=build-progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/build-progress.sh"

moddir() { go mod download -json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error","no Dir")))'; }

fresh_copy() { # fresh_copy MODULE@VERSION DEST
  local src; src=$(moddir "$1")
  rm -rf "$2"; mkdir -p "$(dirname "$2")"; cp -r "$src" "$2"; chmod -R u+w "$2"
}

build_one() { # build_one NAME FUNCTION [VERSION]: the stamp records what was built
  local name=$1 fn=$2 version=${3:-}
  if [[ -f "$TOOLS/stamps/$name" && "$(cat "$TOOLS/stamps/$name")" == "$version" ]]; then
    log "$name: already built, skipping"; return
  fi
  log "$name: building (log: $LOGS/$name.log)"
  local t0=$SECONDS
  : >"$LOGS/$name.log"
  "$fn"
  echo "$version" >"$TOOLS/stamps/$name"
  log "$name: done in $((SECONDS - t0))s"
}

build_pulumi() {
  local d="$WORK/pulumi-pkg"
  run pulumi download fresh_copy "github.com/pulumi/pulumi/pkg/v3@$PULUMI_VERSION" "$d"
  cd "$d"
  run pulumi edit-go-mod go mod edit -dropreplace=github.com/pulumi/pulumi/sdk/v3 -require="github.com/pulumi/pulumi/sdk/v3@$PULUMI_VERSION"
  run pulumi build go build -v -mod=mod -tags osusergo,grpcnotrace \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" -o "$BIN/pulumi" ./cmd/pulumi
  cd "$WORK"; rm -rf "$d"
}

install_python_plugin_scripts() {
  # The proxy here does not serve the pulumi-language-python module, so there
  # is no Go language host. Inline Automation API programs do not need one:
  # the CLI talks to the language server inside the Python process
  # (--client). Dynamic providers need these scripts from the sdk module.
  local sdkdir
  sdkdir=$(moddir "github.com/pulumi/pulumi/sdk/v3@$PULUMI_VERSION")
  install -m 0755 "$sdkdir/python/cmd/pulumi-language-python-exec" "$BIN/pulumi-language-python-exec"
  # The dynamic-provider host is a two-line launcher (upstream ships it as a
  # script in python/dist, absent from the module zip); ours runs the
  # interpreter the operator runs under.
  cat >"$BIN/pulumi-resource-pulumi-python" <<'SH'
#!/bin/sh
exec "${PULUMI_PYTHON_CMD:-python3}" -u -m pulumi.dynamic "$@"
SH
  chmod 0755 "$BIN/pulumi-resource-pulumi-python"
  # The language host for `pulumi up` of the bootstrap project: the project's
  # own (iflearner/langhost.py), run by the operator's interpreter.
  cat >"$BIN/pulumi-language-python" <<'SH'
#!/bin/sh
exec "${PULUMI_PYTHON_CMD:-python3}" -u -m iflearner.langhost "$@"
SH
  chmod 0755 "$BIN/pulumi-language-python"
}

build_kubernetes_provider() {
  local d="$WORK/pulumi-kubernetes-provider"
  run kubernetes-provider download fresh_copy "github.com/pulumi/pulumi-kubernetes/provider/v4@$K8S_PROVIDER_MODULE_VERSION" "$d"
  cd "$d"
  run kubernetes-provider edit-go-mod go mod edit -dropreplace=github.com/pulumi/pulumi-kubernetes/sdk/v4
  cd cmd/pulumi-resource-kubernetes
  VERSION=$K8S_PROVIDER_VERSION run kubernetes-provider generate go run -mod=mod generate.go
  cd "$d"
  run kubernetes-provider build go build -v -mod=mod \
    -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=v$K8S_PROVIDER_VERSION" \
    -o "$PROVIDERS/pulumi-resource-kubernetes" ./cmd/pulumi-resource-kubernetes
  cd "$WORK"; rm -rf "$d"
}

build_etcd() {
  local d="$WORK/etcd-wrapper"
  rm -rf "$d"; mkdir -p "$d"; cd "$d"
  run etcd init go mod init iflearner.local/etcd-wrapper
  run etcd get go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  run etcd build go build -v -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  cd "$WORK"; rm -rf "$d"
}

# kube_wrapper DIR PROG CMD...: a throw-away module that requires
# k8s.io/kubernetes at $KUBE_VERSION with the given commands as tools; the
# shell is left inside DIR.
kube_wrapper() {
  local d=$1 prog=$2 kdir m c; shift 2
  kdir=$(moddir "k8s.io/kubernetes@$KUBE_VERSION")
  rm -rf "$d"; mkdir -p "$d"; cd "$d"
  run "$prog" init go mod init "iflearner.local/$prog-wrapper"
  grep -E '^godebug' "$kdir/go.mod" >>go.mod || true
  # Kubernetes requires its staging modules at v0.0.0 and replaces them with
  # ./staging/..., which the module zip lacks: pin each to its release.
  for m in $(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$kdir/go.mod" | awk '{print $1}'); do
    echo "replace $m => $m $KUBE_STAGING_VERSION" >>go.mod
  done
  local tools=()
  for c in "$@"; do tools+=("k8s.io/kubernetes/cmd/$c@$KUBE_VERSION"); done
  run "$prog" get go get -tool "${tools[@]}"
}

# Version ldflags for both version packages: without them /version reads
# v0.0.0-master and clients guess an ancient server.
kube_ldflags() {
  local minor=${KUBE_VERSION#v1.} flags="-s -w" pkg v; minor=${minor%%.*}
  local vars="gitVersion=$KUBE_VERSION gitMajor=1 gitMinor=$minor gitTreeState=clean gitCommit=0000000000000000000000000000000000000000 buildDate=2026-01-01T00:00:00Z"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for v in $vars; do flags+=" -X $pkg.$v"; done
  done
  echo "$flags"
}

build_kube_programs() { # build_kube_programs STEP PROG...
  local prog=$1 d="$WORK/$1-wrapper" ldflags c; shift
  kube_wrapper "$d" "$prog" "$@"
  ldflags=$(kube_ldflags)
  for c in "$@"; do
    run "$prog" "build-$c" go build -v -pgo=off -ldflags "$ldflags" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c"
  done
  cd "$WORK"; rm -rf "$d"
}

build_kube() { build_kube_programs kube kube-apiserver kube-controller-manager kube-scheduler; }

# The real node's programs: a separate step (and stamp) so that a cache built
# before they existed keeps its control plane.
build_kube_node() { build_kube_programs kube-node kubelet kube-proxy; }

build_kwok() {
  GOBIN="$BIN" run kwok install go install -v "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

install_kwok_stages() {
  # kwok needs Stage objects to play kubelet; its module ships the upstream
  # "fast" set (node initialize + lease heartbeat, pod ready/complete/delete).
  local dir out="$TOOLS/kwok-stages.yaml" f
  dir=$(moddir "sigs.k8s.io/kwok@$KWOK_VERSION")/kustomize/stage
  : >"$out.tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    { echo "---"; cat "$dir/$f"; } >>"$out.tmp"
  done
  mv "$out.tmp" "$out"
}

build_coredns() {
  local d="$WORK/coredns-wrapper"
  rm -rf "$d"; mkdir -p "$d"; cd "$d"
  run coredns init go mod init iflearner.local/coredns-wrapper
  run coredns get go get -tool "github.com/coredns/coredns@$COREDNS_VERSION"
  run coredns build go build -v -ldflags "-s -w" -o "$BIN/coredns" github.com/coredns/coredns
  cd "$WORK"; rm -rf "$d"
}

# Traefik, the gateway (Gateway API and NGINX-annotated Ingresses). Built as
# the main module: its own replace lines (forks under github.com/containous/)
# only apply there; a plain `go install` ignores them and fails. v3.7.x needs
# modules the proxy refuses.
TRAEFIK_VERSION=v3.6.12
build_traefik() {
  local d="$WORK/traefik"
  run traefik download fresh_copy "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" "$d"
  cd "$d"
  run traefik build go build -v -mod=mod -trimpath \
    -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    -o "$BIN/traefik" ./cmd/traefik
  cd "$WORK"; rm -rf "$d"
}

# The Gateway API standard-channel CRDs at the version Traefik's own go.mod
# requires (what its gateway provider speaks), from that module in the Go
# module cache, as one file the bootstrap applies.
install_gateway_api_crds() {
  local tdir ver dir out="$TOOLS/gateway-api-crds.yaml" f
  tdir=$(moddir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")
  ver=$(awk '$1 == "sigs.k8s.io/gateway-api" {print $2; exit}' "$tdir/go.mod")
  dir=$(moddir "sigs.k8s.io/gateway-api@$ver")/config/crd/standard
  { echo "# Gateway API $ver standard channel, from $dir"; } >"$out.tmp"
  for f in "$dir"/gateway.networking.k8s.io_*.yaml; do
    { echo "---"; cat "$f"; } >>"$out.tmp"
  done
  mv "$out.tmp" "$out"
}

# local-kms, an AWS KMS-compatible server for the tests and benchmarks of the KMS secrets
# provider (iflearner/localcluster/kms.py). Built as the main module: it has no tags, and its
# go.mod is what its author tested.
LOCAL_KMS_VERSION=v0.0.0-20260228092603-2a5e92d09ab6
build_local_kms() {
  local d="$WORK/local-kms"
  run local-kms download fresh_copy "github.com/nsmithuk/local-kms@$LOCAL_KMS_VERSION" "$d"
  cd "$d"
  run local-kms build go build -v -mod=mod -trimpath -ldflags "-s -w -X main.Version=$LOCAL_KMS_VERSION" \
    -o "$BIN/local-kms" .
  cd "$WORK"; rm -rf "$d"
}

register_plugins() {
  export PULUMI_HOME="$TOOLS/pulumi-home" PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
  mkdir -p "$PULUMI_HOME"
  run plugins install-kubernetes "$BIN/pulumi" plugin install resource kubernetes "$K8S_PROVIDER_VERSION" --file "$PROVIDERS/pulumi-resource-kubernetes"
}

only="${1:-all}"
want() { [[ "$only" == all || " $only " == *" $1 "* ]]; }
want pulumi && build_one pulumi build_pulumi
# Cheap and tied to the repository: always (re)installed.
want python-plugin-scripts && install_python_plugin_scripts
want kubernetes-provider && build_one kubernetes-provider build_kubernetes_provider
want etcd && build_one etcd build_etcd
want kwok && build_one kwok build_kwok
want kwok && install_kwok_stages
want kube && build_one kube build_kube
want kube-node && build_one kube-node build_kube_node "$KUBE_VERSION"
want coredns && build_one coredns build_coredns "$COREDNS_VERSION"
want traefik && build_one traefik build_traefik "$TRAEFIK_VERSION"
want traefik && install_gateway_api_crds
want local-kms && build_one local-kms build_local_kms "$LOCAL_KMS_VERSION"
want plugins && build_one plugins register_plugins
log "toolchain ready in $TOOLS ($((SECONDS - START_ALL))s)"
