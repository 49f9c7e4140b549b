"""Rank answers in the browser: `python -m rankrm.label` (issue 21).

A local web page shows a prompt and K answers (generated on the fly by a local decoder, or read
from a file of lists); a person orders them by dragging or with the keyboard, may tie, skip or
flag, and each ranking is appended to a list JSONL file that `python -m rankrm.train data=jsonl`
trains on. Several annotators can share one file (a file lock); their agreement (Kendall tau-b,
exact-order share) is shown on the page and by `mode=summary`; an exported reward model can rank
the same answers, and the lists where it disagrees most with people come first.

Why Streamlit (not Gradio): its custom components v2 take a component's HTML, CSS and JavaScript
as plain strings and mount them in the page itself (no iframe, no JavaScript build step), which is
all a drag-and-drop list with keyboard control needs; WebDriver (Selenium) reaches that DOM
directly; and its server runs inside this process, so the runner loads the model once and every
browser session shares one store. Gradio would also work without a build step, but its current
release pins `pillow<13`, which would downgrade a dependency other parts of a rankrm environment use.

Pieces: `items` (inputs, content ids, the data-dir guard), `store` (append-only JSONL under a
lock), `ranking` (ordering -> list line), `agreement`, `generate` (K answers from a causal LM),
`session` (queues, active learning), `server` + `web/` (the page), `__main__` (the runner).
"""
