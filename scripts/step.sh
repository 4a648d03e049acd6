#!/usr/bin/env bash
# step.sh LABEL PROGRAM STEP CMD...: runs one setup step with build-progress.sh's `run`: output
# in a log under ~/.cache/iflearner-operator/setup-logs, a line every
# IFLEARNER_BUILD_HEARTBEAT seconds (default 10) saying it still runs and what its output last
# said, and on failure the log's tail. For the steps of `make setup` outside the toolchain build.
set -euo pipefail
STEP_LABEL=$1; shift
LOGS="${IFLEARNER_SETUP_LOGS:-$HOME/.cache/iflearner-operator/setup-logs}"
mkdir -p "$LOGS"
START_ALL=$SECONDS
export IFLEARNER_BUILD_HEARTBEAT="${IFLEARNER_BUILD_HEARTBEAT:-10}"
# shellcheck source=build-progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/build-progress.sh"
: >"$LOGS/$1.log"
run "$@"
log "$1: done in $((SECONDS - START_ALL))s"
