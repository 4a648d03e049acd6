# Progress of a long build, sourced by build-toolchain.sh (and its test):
# log, and run PROGRAM STEP CMD... which keeps a step's output in
# $LOGS/PROGRAM.log and says every $HEARTBEAT seconds that it still runs.
# Needs LOGS and START_ALL set by the caller.

log() { printf '[%s %4ds] %s\n' "${STEP_LABEL:-toolchain}" "$((SECONDS - START_ALL))" "$*"; }

# Seconds between "still building" lines while a step runs (a cold build is
# minutes of silence otherwise), and what each program took cold on 2 cores.
HEARTBEAT="${IFLEARNER_BUILD_HEARTBEAT:-60}"  # read when sourced
declare -A COLD_SECONDS=([pulumi]=230 [kubernetes-provider]=320 [etcd]=25 [kwok]=80 [kube]=210
                         [kube-node]=30 [coredns]=105 [traefik]=270 [local-kms]=10)

# Go packages a cold build of each step compiles (`go build -v` prints one
# line per package it compiles), counted in the cold build logs of
# 2026-12-06 on 2 cores: the total of "N of about M packages". A warm build
# compiles fewer; a step missing here (kwok's install) shows N alone.
declare -A COLD_PACKAGES=([pulumi/build]=1729 [kubernetes-provider/build]=1099 [etcd/build]=330
                          [kube/build-kube-apiserver]=1652 [kube/build-kube-controller-manager]=380
                          [kube-node/build-kubelet]=100 [coredns/build]=987 [traefik/build]=2494
                          [local-kms/build]=48)

# The step's latest log line, short: what a Go build or download is at.
last_line() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-100; }

# packages_since LOG LINE: Go package paths the log gained after line LINE
# (lines that are a bare import path, as `go build -v` prints them).
packages_since() {
  tail -n "+$(($2 + 1))" "$1" 2>/dev/null | grep -cE '^[[:alnum:]_.~-]+(/[[:alnum:]_.~+-]+)*$' || true
}

# run PROGRAM STEP CMD...: runs a step, appending to the program's log, and
# says every HEARTBEAT seconds that it is still running (how long, of about
# how long cold, and its last log line); on failure says which program and
# step failed and where the log is.
run() {
  local prog=$1 step=$2; shift 2
  echo "+ [$step] $*" >>"$LOGS/$prog.log"
  local first
  first=$(wc -l <"$LOGS/$prog.log")
  "$@" >>"$LOGS/$prog.log" 2>&1 &
  local pid=$! started=$SECONDS next=$((SECONDS + HEARTBEAT)) expected="" compiled total go_build=no
  # `go build -v` / `go install -v` print each package they compile: count those.
  [[ $1 == go && ( ${2:-} == build || ${2:-} == install ) ]] && go_build=yes
  [[ -n "${COLD_SECONDS[$prog]:-}" ]] && expected=" of about ${COLD_SECONDS[$prog]}s cold"
  total=${COLD_PACKAGES[$prog/$step]:-}
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= next)); then
      compiled=""
      if [[ $go_build == yes ]]; then
        compiled="$(packages_since "$LOGS/$prog.log" "$first")${total:+ of about $total} packages, "
      fi
      log "$prog: still at step '$step', ${compiled}$((SECONDS - started))s$expected; last: $(last_line "$LOGS/$prog.log")"
      next=$((SECONDS + HEARTBEAT))
    fi
    sleep 1
  done
  if ! wait "$pid"; then
    log "FAILED: $prog, step '$step'. Log kept at $LOGS/$prog.log; last lines:"
    tail -n 25 "$LOGS/$prog.log" >&2
    exit 1
  fi
}

