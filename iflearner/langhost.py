"""A minimal Pulumi language host for Python programs run by the Pulumi CLI.

Upstream's Go host (pulumi-language-python) is a separate Go module that the
module proxy here does not serve, so the toolchain installs a launcher named
``pulumi-language-python`` that runs this module. The engine starts it with
its own address as the last argument; it answers on a loopback port it prints
to stdout, and runs ``__main__.py`` of the project directory in-process with
the same runtime glue the Automation API uses for inline programs.

Only what ``pulumi preview/up/destroy`` of an installed project needs is
implemented: dependencies are the interpreter's (the project's virtualenv),
so GetRequiredPlugins and InstallDependencies have nothing to do.
"""

from __future__ import annotations

import os
import runpy
import sys
from concurrent import futures
from typing import Any

import grpc
from pulumi.automation._server import LanguageServer
from pulumi.runtime.proto import language_pb2, language_pb2_grpc

MAX_MESSAGE_BYTES = 400 * 1024 * 1024


class ProjectLanguageServer(LanguageServer):
    """Runs the project's ``__main__.py`` for each Run request."""

    def __init__(self) -> None:
        super().__init__(program=self._run_program)
        self._program_dir = os.getcwd()

    def _run_program(self) -> None:
        sys.path.insert(0, self._program_dir)
        try:
            runpy.run_path(os.path.join(self._program_dir, "__main__.py"), run_name="__main__")
        finally:
            sys.path.remove(self._program_dir)

    def Handshake(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        return language_pb2.LanguageHandshakeResponse()

    def Run(self, request: Any, context: Any) -> Any:  # noqa: N802
        info = getattr(request, "info", None)
        directory = (info.program_directory if info is not None else "") or request.pwd or os.getcwd()
        self._program_dir = directory
        os.chdir(directory)
        return super().Run(request, context)

    def InstallDependencies(self, request: Any, context: Any) -> Any:  # noqa: N802
        return iter(())

    def GetProgramDependencies(self, request: Any, context: Any) -> Any:  # noqa: N802
        return language_pb2.GetProgramDependenciesResponse()


def main(argv: list[str]) -> int:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
    )
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(ProjectLanguageServer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        # The engine interrupts its plugins when the operation ends.
        server.stop(grace=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
