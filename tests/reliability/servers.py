"""`valdrix serve` processes that a fault can kill with SIGKILL and bring back on the same port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.live import _wait_ready
from tests.pg import free_port

# Generous: on a 2-core host shared with other jobs, starting Python and importing the app can take 20 s.
START_SECONDS = 90.0


class Replica:
    """One server process on a fixed port, so clients keep their URL across a crash and a restart."""

    def __init__(self, database_url: str, env: dict[str, str], name: str) -> None:
        self.database_url = database_url
        self.env = env
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.gettempdir()) / f"valdrix-reliability-{name}-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "VALDRIX_DATABASE_URL": self.database_url, "VALDRIX_PORT": str(self.port),
               "VALDRIX_WORKERS": "1", **self.env}
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "valdrix", "serve", "--no-migrate"], env=env,
                                          stdout=log, stderr=subprocess.STDOUT)
        _wait_ready(self.url, timeout=START_SECONDS)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, in-flight requests lose their connection mid-answer."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None



def urls(replicas: list[Replica]) -> list[str]:
    return [replica.url for replica in replicas]
