"""Run the labelling page: Streamlit's server, in this process, on a session the runner built.

`python -m rankrm.label` builds the `LabelSession`, stores it here (`SERVED`) and starts the
server, which runs `web/page.py` for every browser session in a thread of this same process: the
page reads the session from this module, so the model is loaded once and every annotator of the
server shares one store (and its thread lock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankrm.label.session import LabelSession

WEB_DIR = Path(__file__).resolve().parent / "web"


@dataclass
class Served:
    """What the page needs besides the session: the pre-filled annotator and lines about the job."""

    session: LabelSession
    annotator: str | None = None
    about: dict[str, Any] = field(default_factory=dict)
    ranker: Any = None  # the registered Streamlit component (registered once, by the first page run)


SERVED: Served | None = None


def streamlit_options(address: str, port: int, open_browser: bool) -> dict[str, Any]:
    """Streamlit's own config, as its CLI flags would set it (keys: option names with _ for .)."""
    return {
        "server_address": address,
        "server_port": int(port),
        "server_headless": not open_browser,
        "server_fileWatcherType": "none",  # no reloads: the page is code of an installed package
        "browser_gatherUsageStats": False,  # offline, and nothing about the labels leaves the machine
        "client_toolbarMode": "minimal",
        "runner_magicEnabled": False,  # the page writes only what it calls st.* for
        "global_developmentMode": False,
    }


def serve(served: Served, address: str, port: int, open_browser: bool = False) -> None:
    """Block serving the page until interrupted (Ctrl+C / SIGTERM stop it cleanly)."""
    global SERVED
    SERVED = served
    from streamlit.web import bootstrap

    opts = streamlit_options(address, port, open_browser)
    bootstrap.load_config_options(opts)
    bootstrap.run(str(WEB_DIR / "page.py"), False, [], opts)
