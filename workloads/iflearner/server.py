"""The federation's aggregation server: iflearner's own ``aggregate_server``,
ended when the federation is over.

    python -u server.py -n=2 --epochs=3 [--addr=0.0.0.0:50001] [--http_addr=0.0.0.0:50002]

All of iflearner's flags (-n, --epochs, --addr, --http_addr, --strategy,
--strategy_params) go unchanged to ``iflearner.business.homo.aggregate_server``
(gRPC on 50001, the status API ``GET /v1/status`` on 50002). iflearner's
server never exits on its own (its exit on completion is commented out), so a
server job would run forever and never reach ``Succeeded``. This wrapper adds
one thing: once every one of the ``-n`` parties has reported completion, it
prints ``FL-SERVER complete ...``, keeps serving for ``--linger`` seconds (so
a scheduler polling /v1/status sees the final state) and exits 0.
``--keep-running`` restores iflearner's behaviour.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from types import ModuleType


def _wait_for_completion(module: ModuleType, parties: int, linger: float) -> None:
    # aggregate_server.main() sets the module global ``server`` once parsed;
    # ``_clients`` maps party name -> ClientStatus(ready, complete, ...). Both
    # are iflearner 0.1.0 internals, pinned by the workload's requirements.
    while True:
        server = getattr(module, "server", None)
        clients = getattr(getattr(server, "_strategy_server", None), "_clients", {})
        done = sorted(name for name, status in dict(clients).items() if status.complete)
        if len(done) >= parties:
            print(f"FL-SERVER complete parties={','.join(done)}", flush=True)
            time.sleep(linger)
            sys.stdout.flush()
            sys.stderr.flush()
            # gRPC's and Flask's threads are not daemons: end the process as
            # iflearner's own (disabled) StrategyServer._exit would.
            os._exit(0)
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--linger", type=float, default=5.0)
    own.add_argument("--keep-running", action="store_true")
    ours, rest = own.parse_known_args(argv)
    # The party count, read the way iflearner reads it; the flag stays in rest.
    num = argparse.ArgumentParser(add_help=False)
    num.add_argument("-n", "--num", type=int, default=0)
    parties = num.parse_known_args(rest)[0].num
    # iflearner's main() parses sys.argv itself: hand it everything but ours.
    sys.argv = [sys.argv[0], *rest]

    from iflearner.business.homo import aggregate_server

    if not ours.keep_running and parties > 0:
        threading.Thread(target=_wait_for_completion, args=(aggregate_server, parties, ours.linger),
                         daemon=True).start()
    aggregate_server.main()


if __name__ == "__main__":
    main()
