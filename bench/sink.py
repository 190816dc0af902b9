"""A counting SMTP sink in its own process: the benchmark's stand-in for a fast mail server.

It runs aiosmtpd (the server the project's catcher uses) but keeps nothing: each accepted
message only bumps a counter. Running it as a separate process keeps it off the sender's
GIL, as a real mail server would be. The parent talks to it over stdin/stdout: `count`
answers the number accepted so far, `reset` sets it to zero, `cpu` answers the CPU seconds
the sink has used (what a message costs the server), end of input stops it.

    with Sink() as sink:
        ... send to 127.0.0.1:sink.port ...
        assert sink.count() == n
"""

from __future__ import annotations

import subprocess
import sys
import threading
from types import TracebackType

READY_TIMEOUT = 30.0


class _CountingHandler:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.count += 1
        return "250 OK"


def serve() -> None:
    """The child process: start the server, print its port, answer commands until EOF."""
    import logging
    import resource

    from aiosmtpd.controller import Controller

    from campaign.devtools.catcher import free_port

    logging.getLogger("mail.log").setLevel(logging.ERROR)
    port = free_port()
    handler = _CountingHandler()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, ready_timeout=READY_TIMEOUT, enable_SMTPUTF8=True
    )
    controller.start()
    print(port, flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "cpu":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                print(usage.ru_utime + usage.ru_stime, flush=True)
                continue
            if command == "reset":
                with handler.lock:
                    handler.count = 0
            print(handler.count, flush=True)
    finally:
        controller.stop()


class Sink:
    """An SMTP server on 127.0.0.1:`port` in a child process that counts what it accepts."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.port = 0

    def _ask(self, command: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._process.stdout.readline().strip()

    def count(self) -> int:
        return int(self._ask("count"))

    def reset(self) -> None:
        self._ask("reset")

    def cpu(self) -> float:
        return float(self._ask("cpu"))

    def __enter__(self) -> Sink:
        assert self._process.stdout is not None
        ready = threading.Timer(READY_TIMEOUT, self._process.kill)
        ready.start()
        try:
            line = self._process.stdout.readline()
        finally:
            ready.cancel()
        if not line.strip().isdigit():
            self._process.kill()
            raise RuntimeError("the SMTP sink did not start")
        self.port = int(line)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)


if __name__ == "__main__":
    serve()
