"""The Streamlit page of `python -m rankrm.label`, run by Streamlit for each browser session.

Glue only: the session (`rankrm.label.server.SERVED`) decides what comes next and writes the
files. Text from the data reaches the browser only through the ranker component (textContent)
and `st.table` / `st.text` (escaped): never through markdown or HTML.
"""

from __future__ import annotations

import re
import time
from typing import Any

import streamlit as st

from rankrm.errors import RankrmError
from rankrm.label import server
from rankrm.label.agreement import shown
from rankrm.label.items import Item, prompt_lines

st.set_page_config(page_title="rankrm: rank answers", layout="wide")
served = server.SERVED
if served is None:
    st.error("Start this page with `python -m rankrm.label` (it builds the labelling session).")
    st.stop()
session = served.session
if served.ranker is None:
    served.ranker = st.components.v2.component(
        "rankrm_ranker",
        html="",
        js=(server.WEB_DIR / "ranker.js").read_text(encoding="utf-8"),
        css=(server.WEB_DIR / "ranker.css").read_text(encoding="utf-8"),
        isolate_styles=False,  # plain DOM: WebDriver tests reach it without a shadow root
    )


def clean_name(raw: str) -> str:
    """An annotator name: printable, spaces collapsed, at most 64 characters ('' if none)."""
    return re.sub(r"\s+", " ", "".join(c for c in raw if c.isprintable())).strip()[:64]


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def annotator_box() -> str:
    """The annotator name, from the sidebar box; kept in the URL (?annotator=) so a reload keeps it."""
    default = st.query_params.get("annotator") or served.annotator or ""
    name = clean_name(st.sidebar.text_input("Annotator", value=default, max_chars=64, key="annotator"))
    if name and st.query_params.get("annotator") != name:
        st.query_params["annotator"] = name
    return name


def table(title: str, rows: list[dict[str, Any]], empty: str) -> None:
    st.sidebar.subheader(title)
    if rows:
        st.sidebar.table(shown(rows))
    else:
        st.sidebar.text(empty)


def sidebar(annotator: str) -> None:
    p = session.progress(annotator) if annotator else None
    if p:
        share = p["done"] / p["total"] if p["total"] else 1.0
        st.sidebar.progress(share, text=f"Ranked {p['done']} of {p['total']} lists ({p['skipped']} skipped)")
        st.sidebar.text(
            f"All annotators: {plural(p['rankings'], 'ranking')} by {plural(p['annotators'], 'person', 'people')}"
        )
    table("Agreement", session.agreement(), "Shown once two people ranked a list.")
    if session.scorer is not None:
        table("Reward model vs people", session.model_rows(), "No ranking to compare yet.")
    with st.sidebar.expander("This job"):
        st.text("\n".join(f"{k}: {v}" for k, v in served.about.items()))


def handle(action: Any, item: Item, annotator: str, token: str, shown_at: float) -> tuple[str, str]:
    """Apply one save or skip from the page; (streamlit message kind, text) to show next."""
    if not isinstance(action, dict) or action.get("token") != token:
        return "warning", "That action was for a list no longer shown; nothing was saved."
    flagged, note = bool(action.get("flagged")), str(action.get("note") or "")
    if action.get("kind") == "skip":
        session.skip(item, annotator, flagged, note)
        return "info", "Skipped: it comes back after the lists you have not seen."
    try:
        order = [int(i) for i in action.get("order") or []]
        tied = [bool(t) for t in action.get("tied") or []]
        saved, tau = session.save(item, order, tied, annotator, time.time() - shown_at, flagged, note)
    except (RankrmError, TypeError, ValueError) as e:
        return "error", f"Not saved: {e}"
    if not saved:
        return "warning", "You had ranked this list already (another tab?); the first ranking stays."
    extra = "" if tau is None else f" The reward model's Kendall tau-b with your ranking: {tau:+.2f}."
    return "success", f"Saved.{extra}"


def main() -> None:
    st.sidebar.title("rankrm label")
    annotator = annotator_box()
    sidebar(annotator)
    if "flash" in st.session_state:
        kind, text = st.session_state.pop("flash")
        getattr(st, kind)(text)
    if not annotator:
        st.info("Type your name in the sidebar (Annotator) to start ranking.")
        return
    queue = session.queue(annotator)
    if not queue:
        st.success("Nothing left to rank for you in this job. Thank you!")
        return
    item = queue[0]
    try:
        with st.spinner("Generating answers..."):
            answers = session.answers(item)
    except RankrmError as e:
        st.error(str(e))
        return
    nonce = st.session_state.setdefault("nonce", 0)
    token = f"{item.id}:{annotator}:{nonce}"
    shown_at = st.session_state.setdefault("shown", {}).setdefault(token, time.time())
    p = session.progress(annotator)
    order = session.display_order(item, annotator, len(answers))
    data = {
        "token": token,
        "position": f"{p['done'] + 1} of {p['total']}",
        "prompt": prompt_lines(item.prompt),
        "answers": [{"id": i, "text": answers[i]} for i in order],
    }
    result = served.ranker(data=data, key=f"ranker-{token}", on_action_change=lambda: None)
    if result.action:
        st.session_state["flash"] = handle(result.action, item, annotator, token, shown_at)
        st.session_state["nonce"] = nonce + 1
        st.rerun()
    session.prefetch(annotator)


main()
