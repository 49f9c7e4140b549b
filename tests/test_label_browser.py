"""The labelling page in a real browser (headless Chromium driven by Selenium).

Open the page, rank a list with drag and drop and the keyboard (with a tie), save, kill and
restart the server, see the next item, check the JSONL; flag and skip by keyboard; an answer made
of HTML shows as text; a second annotator's ranking gives an agreement row. Skips (one line) where Chromium is missing.

    python tests/test_label_browser.py URL OUT.png   # screenshot of a running page (docs/label.png)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
MISSING = [name for name, ok in (("chromium", CHROMIUM), ("chromium-driver", DRIVER)) if not ok]
MISSING += [m for m in ("selenium", "streamlit") if importlib.util.find_spec(m) is None]
SKIP = "needs a browser: apt-get install chromium chromium-driver && pip install -e '.[label,test]' (missing: {})"
ROOT = Path(__file__).resolve().parents[1]
EGG = "How do I boil an egg?"
GOOD = "Put it in boiling water for 8 minutes, then cool it in cold water."
SHORT = "Boil it."
OFF = "Eggs are a good source of protein."
INJECT = "<img src=x onerror=\"document.title='pwned'\"><b>Microwave</b> it in its shell."
LISTS = [
    {"prompt": EGG, "responses": [GOOD, SHORT, INJECT, OFF]},
    {"prompt": "Name a prime number.", "responses": ["7", "9", "1"]},
    {"prompt": "What is the capital of France?", "responses": ["Paris", "Lyon", "Paris, on the Seine."]},
]


def chrome() -> Any:
    """Headless Chromium with the flags this offline machine needs (no background network calls)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
    for flag in [*flags.split(), "--disable-component-update", "--disable-sync", "--window-size=1280,900"]:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='rankrm-chromium-')}")
    return webdriver.Chrome(options=opts, service=Service(DRIVER))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def label_server(cwd: Path, port: int, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m rankrm.label ...` until the block ends, then SIGKILL (no clean shutdown: the harsh case)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RANKRM_DATA_DIR": str(cwd / "data"), "HF_HUB_OFFLINE": "1"}
    log = (cwd / "server.log").open("ab")
    cmd = [sys.executable, "-m", "rankrm.label", f"server.port={port}", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=log)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, (cwd / "server.log").read_text()
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()


def wait(driver: Any, what: Any, timeout: float = 90) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(what)


def cards(driver: Any) -> list[Any]:
    return driver.find_elements("css selector", ".rrm-card")


def card_texts(driver: Any) -> list[str]:
    return [c.find_element("css selector", ".rrm-text").text for c in cards(driver)]


def shown_prompt(driver: Any) -> str:
    return driver.find_element("css selector", ".rrm-prompt .rrm-text").text


def keys(driver: Any, *ks: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    for k in ks:
        chain.send_keys(k)
    chain.perform()


def rank_egg_list(driver: Any) -> None:
    """GOOD dragged to the top; SHORT moved to place 2 by keyboard and tied with GOOD; INJECT last."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    wait(driver, lambda d: len(cards(d)) == 4)
    src, top = cards(driver)[card_texts(driver).index(GOOD)], cards(driver)[0]
    above_top = -top.size["height"] // 2 + 2  # offsets are from the element's centre
    ActionChains(driver).click_and_hold(src).move_to_element_with_offset(top, 0, above_top).release().perform()
    assert card_texts(driver)[0] == GOOD
    for text, key in ((SHORT, "2"), (INJECT, "4")):
        # select from the top (the dragged card has the focus), then move the selection to its place
        keys(driver, *([Keys.ARROW_UP] * 4), *([Keys.ARROW_DOWN] * card_texts(driver).index(text)), key)
    keys(driver, *([Keys.ARROW_UP] * 4), Keys.ARROW_DOWN, "t")  # place 2 (SHORT) ties with the one above
    assert card_texts(driver) == [GOOD, SHORT, OFF, INJECT]
    assert [c.find_element("css selector", ".rrm-rank").text for c in cards(driver)] == ["#1", "= #1", "#2", "#3"]
    keys(driver, Keys.ENTER)


@pytest.mark.slow
@pytest.mark.skipif(bool(MISSING), reason=SKIP.format(", ".join(MISSING)))
def test_rank_save_restart_resume_and_agree(tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    from rankrm.data.readers import read_jsonl
    from rankrm.data.validate import DropLog
    from rankrm.label.agreement import same_order, tau_b
    from rankrm.label.ranking import aligned
    from rankrm.label.store import sidecar

    data = tmp_path / "data"
    data.mkdir()
    (data / "lists.jsonl").write_text("".join(json.dumps(x) + "\n" for x in LISTS))
    out, port = data / "labels.jsonl", free_port()
    url = f"http://127.0.0.1:{port}/?annotator="
    driver = chrome()
    try:
        with label_server(tmp_path, port, "lists=data/lists.jsonl"):
            driver.get(url + "alice")
            wait(driver, lambda d: len(cards(d)) == 4)
            assert shown_prompt(driver) == EGG
            # The HTML answer is text: no element made from it, no script ran, the markup is visible.
            assert INJECT in card_texts(driver) and driver.title != "pwned"
            assert not driver.find_elements("css selector", ".rrm img, .rrm-text b")
            rank_egg_list(driver)
            wait(driver, lambda d: "Saved." in d.page_source and shown_prompt(d) == LISTS[1]["prompt"])
        (line,) = out.read_text().splitlines()  # the server was killed: the line is whole
        rec = json.loads(line)
        assert rec["prompt"] == EGG and rec["responses"] == [GOOD, SHORT, OFF, INJECT] and rec["scores"] == [2, 2, 1, 0]
        assert rec["annotation"]["annotator"] == "alice" and rec["annotation"]["flagged"] is False
        (rl,) = read_jsonl(out, DropLog()).lists
        assert list(rl.labels) == [2.0, 2.0, 1.0, 0.0]

        with label_server(tmp_path, port, "lists=data/lists.jsonl"):
            driver.get(url + "alice")  # restarted: the next unlabelled list, and the progress so far
            wait(driver, lambda d: cards(d) and shown_prompt(d) == LISTS[1]["prompt"])
            assert "Ranked 1 of 3 lists" in driver.page_source
            keys(driver, "f", "s")  # flag it and skip it: the third list comes up, the skip is on file
            wait(driver, lambda d: cards(d) and shown_prompt(d) == LISTS[2]["prompt"])
            (skip,) = [json.loads(x) for x in sidecar(out, "skips").read_text().splitlines()]
            assert skip["annotator"] == "alice" and skip["flagged"] is True
            driver.get(url + "bob")  # a second annotator starts at the first list and saves it as shown
            wait(driver, lambda d: cards(d) and shown_prompt(d) == EGG)
            keys(driver, Keys.ENTER)
            wait(driver, lambda d: "alice / bob" in d.page_source)
            row = driver.find_element("xpath", "//tr[th[contains(., 'alice / bob')] or td[contains(., 'alice / bob')]]")
            lines = [json.loads(x) for x in out.read_text().splitlines()]
            (_, a), (_, b) = (aligned(x) for x in lines)
            cells = [c.text for c in row.find_elements("css selector", "th, td")]
            assert cells[-4:] == [
                "1",
                f"{tau_b(a, b):.3f}",
                "1",
                f"{float(same_order(a, b)):.3f}",
            ]
    finally:
        driver.quit()


def screenshot(url: str, png: str) -> None:
    """Save a screenshot of a running page (the README's docs/label.png)."""
    driver = chrome()
    try:
        driver.get(url)
        wait(driver, lambda d: cards(d), timeout=120)
        time.sleep(1)
        driver.save_screenshot(png)
    finally:
        driver.quit()


if __name__ == "__main__":
    screenshot(sys.argv[1], sys.argv[2])
