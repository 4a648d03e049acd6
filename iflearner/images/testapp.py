#!/usr/bin/env python3
"""The test workload image's program (stdlib only).

  testapp serve PORT   answer every GET with "<hostname> <path>"
  testapp hog MB       allocate memory 10 MB at a time up to MB (touching
                       every page), then sleep: above a memory limit the
                       kernel OOM-kills it
"""

import http.server
import socket
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        body = f"{socket.gethostname()} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        server = http.server.ThreadingHTTPServer(("", int(argv[1])), Handler)
        print(f"serving on :{argv[1]}", flush=True)
        server.serve_forever()
    if len(argv) == 2 and argv[0] == "hog":
        chunks = []
        for allocated in range(10, int(argv[1]) + 1, 10):
            chunks.append(bytearray(b"x" * (10 << 20)))
            print(f"allocated {allocated} MB", flush=True)
        time.sleep(3600)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
