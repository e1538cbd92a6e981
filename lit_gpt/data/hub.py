"""Fail-fast reachability check for the Hugging Face hub.

Why: `huggingface_hub` retries and waits on timeouts, so an offline machine can sit for minutes before
failing. Preprocessing asks this module first and, when the hub is unreachable, fails within seconds
with an error that names the offline alternatives.
"""

import os
import socket
import threading
from urllib.parse import urlparse

import huggingface_hub.constants


def hub_reachable(timeout: float = 5.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within `timeout` seconds.

    DNS resolution is not covered by socket timeouts, so the probe runs in a daemon thread that is
    abandoned when it takes too long.
    """
    if huggingface_hub.constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    result = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
