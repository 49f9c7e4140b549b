"""Whether the Hugging Face hub can be used, and answering fast when it cannot.

`hub_offline` reads the offline switches now (not at import time). Without network and without
`HF_HUB_OFFLINE`, loading a hub id spends ~50 s in huggingface_hub's retries (5 per file, with
backoff) before it fails. `offline_unless_reachable` asks the hub's endpoint once per process for an
answer within `TIMEOUT_S`; if none comes, it switches huggingface_hub to offline mode for the rest of
the process (and its children), so a cached copy still loads and a missing one fails at once with
rankrm's message (`rankrm.locate.loading`, for models; `rankrm.data.hf` reads only the switches).
"""

from __future__ import annotations

import functools
import logging
import os
import threading

log = logging.getLogger(__name__)

TIMEOUT_S = 3.0  # the hub answers a HEAD in well under a second where there is network
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline(datasets: bool = False) -> bool:
    """True if HF_HUB_OFFLINE (with `datasets`: or HF_DATASETS_OFFLINE) is set, read now."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    return any(os.environ.get(v, "").upper() in _TRUE for v in names)


@functools.cache
def reachable(endpoint: str, timeout: float) -> bool:
    """True if `endpoint` gives any HTTP answer within about `timeout` seconds (one probe per process)."""
    from huggingface_hub.utils import get_session

    answered: list[bool] = []

    def probe() -> None:
        try:
            get_session().head(endpoint, timeout=timeout)  # the hub's own client: its proxies and certificates
            answered.append(True)
        except Exception:  # noqa: BLE001 -- any failure to get an answer (DNS, refused, timeout, TLS) means unreachable
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)  # name lookups ignore the socket timeout: bound the whole probe
    return bool(answered and answered[0])


def offline_unless_reachable() -> bool:
    """Switch huggingface_hub to offline mode if its endpoint does not answer; True if it did so (or already was)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_offline():
        return True
    if reachable(constants.ENDPOINT, TIMEOUT_S):
        return False
    log.warning("the Hugging Face hub (%s) does not answer: loading from the local HF cache only", constants.ENDPOINT)
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"  # child processes (DDP workers) start offline too
    return True
