"""Hub ids without network: one quick probe, then offline mode, so the user hears back at once
(not after ~50 s of huggingface_hub retries). Local sockets stand in for the hub: no network needed."""

from __future__ import annotations

import http.server
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
from data_fixtures import strict_rows, write_jsonl
from huggingface_hub import constants

from rankrm import hub
from rankrm.backbones import build_reward_model
from rankrm.config import load_option
from rankrm.errors import RankrmError

ERNIE = "nghuyong/ernie-3.0-base-zh"


def refused_url() -> str:
    """A local port nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel completes them) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def answering_url() -> Iterator[str]:
    """A local HTTP server that answers every request with 404 (an answer all the same)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode off for this test (conftest turns it on); restored afterwards, env included."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub.reachable.cache_clear()
    yield
    hub.reachable.cache_clear()


def test_probe_tells_an_answer_from_silence(online: None, silent_url: str, answering_url: str) -> None:
    assert hub.reachable(answering_url, 2.0)
    assert not hub.reachable(refused_url(), 2.0)
    assert not hub.reachable(silent_url, 0.3)  # connected, but no answer within the timeout


def test_unreachable_hub_switches_to_offline_once(online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", refused_url())
    assert hub.offline_unless_reachable()
    assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    assert hub.reachable.cache_info().misses == 1
    assert hub.offline_unless_reachable() and hub.reachable.cache_info().misses == 1  # asked once


def test_reachable_hub_stays_online(online: None, answering_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", answering_url)
    assert not hub.offline_unless_reachable() and not constants.HF_HUB_OFFLINE


def test_hub_backbone_without_network_names_the_offline_backbone(online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(huggingface_hub.try_to_load_from_cache(ERNIE, "config.json"), str):
        pytest.skip(f"{ERNIE} is in the local HF cache")
    monkeypatch.setattr(constants, "ENDPOINT", refused_url())
    with pytest.raises(RankrmError) as err:
        build_reward_model(load_option("backbone", "ernie"))
    assert f"could not load '{ERNIE}' (offline, not in the HF cache)" in str(err.value)
    assert "`backbone=e5_multilingual`" in str(err.value) and "backbone=minilm" in str(err.value)


def test_env_switch_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "yes")
    assert not hub.hub_offline() and hub.hub_offline(datasets=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "On")
    assert hub.hub_offline()


@pytest.mark.slow
def test_card_command_without_network_and_without_offline_mode(tmp_path: Path) -> None:
    """`python -m rankrm.train loss=ranklist backbone=ernie` with the hub unreachable and HF_HUB_OFFLINE unset."""
    if isinstance(huggingface_hub.try_to_load_from_cache(ERNIE, "config.json"), str):
        pytest.skip(f"{ERNIE} is in the local HF cache")
    import subprocess

    data = write_jsonl(tmp_path / "lists.jsonl", strict_rows(20, k=4))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = refused_url()
    args = ["loss=ranklist", "backbone=ernie", "data=jsonl", f"data.source.path={data}", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(
        [sys.executable, "-m", "rankrm.train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("rankrm: error: could not load 'nghuyong/ernie-3.0-base-zh' (offline")
        and "e5_multilingual" in last
    )
    logged = proc.stdout + proc.stderr
    assert "does not answer: loading from the local HF cache only" in logged
    assert "Retrying in" not in logged  # no huggingface_hub retry loop
