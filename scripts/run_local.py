"""`make run`: both services in the foreground on the embedded defaults.

Starts ConfigService and SessionService as child processes, forwards SIGINT/SIGTERM to both,
and stops the other when one exits, so Ctrl-C shuts everything down gracefully.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

SERVICES = ("config_service", "session_service")


def main() -> int:
    """Runs both services until interrupted; returns the first non-zero exit code."""
    children = [subprocess.Popen([sys.executable, "-m", name]) for name in SERVICES]
    config_listen = os.environ.get("TANDEM_CONFIG_SERVICE_LISTEN", "127.0.0.1:50051")
    session_listen = os.environ.get("TANDEM_SESSION_SERVICE_LISTEN", "127.0.0.1:50052")
    print(
        f"Tandem: ConfigService on {config_listen}, SessionService on {session_listen}.\n"
        f"Try: .venv/bin/buf curl --protocol grpc --http2-prior-knowledge "
        f"--list-services http://{config_listen}\nCtrl-C stops both.",
        flush=True,
    )

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while all(child.poll() is None for child in children):
        time.sleep(0.2)
    forward(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return next((code for code in codes if code not in (0, -signal.SIGTERM)), 0)


if __name__ == "__main__":
    sys.exit(main())
