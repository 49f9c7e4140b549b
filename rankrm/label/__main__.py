"""`python -m rankrm.label [key=value ...]`: the labelling page, its summary, or answer generation.

    python -m rankrm.label prompts=data/prompts.txt                # page on http://127.0.0.1:8501
    python -m rankrm.label lists=data/lists.jsonl annotator=alice  # rank (or re-rank) given lists
    python -m rankrm.label mode=summary prompts=data/prompts.txt   # progress and agreement, printed
    python -m rankrm.label mode=generate prompts=data/prompts.txt  # answers for every prompt, no page

Glue only (config: `rankrm/conf/label.yaml`). Config and input errors stop before any model or
server starts, with one `rankrm: error: ...` line.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra
from omegaconf import DictConfig, OmegaConf

from rankrm import CONF_DIR
from rankrm.errors import RankrmError, exit_on_user_error
from rankrm.label.agreement import shown
from rankrm.label.items import Item, inside, read_lists, read_prompts
from rankrm.label.session import LabelSession
from rankrm.label.store import LabelStore

log = logging.getLogger("rankrm.label")
MODES = ("serve", "summary", "generate")


def _check(cfg: DictConfig) -> None:
    if cfg.mode not in MODES:
        raise RankrmError(f"mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if not isinstance(cfg.k, int) or cfg.k < 2:
        raise RankrmError(f"k must be an integer >= 2, got {cfg.k!r}")
    per = cfg.annotations_per_item
    if per is not None and (not isinstance(per, int) or per < 1):
        raise RankrmError(f"annotations_per_item must be null or an integer >= 1, got {per!r}")
    if cfg.prompts and cfg.lists:
        raise RankrmError("give prompts=FILE (answers are generated) or lists=FILE (answers given), not both")
    if not (cfg.prompts or cfg.lists) and cfg.mode != "summary":
        raise RankrmError("give prompts=FILE (answers are generated) or lists=FILE (answers given)")
    if cfg.lists and cfg.mode == "generate":
        raise RankrmError("mode=generate writes answers to prompts: give prompts=FILE, not lists=FILE")
    port = cfg.server.port
    if not isinstance(port, int) or not 0 < port < 65536:
        raise RankrmError(f"server.port must be an integer in 1..65535, got {port!r}")


def _read_items(cfg: DictConfig, out: Path, counts: Counter[str]) -> list[Item]:
    key = "prompts" if cfg.prompts else "lists" if cfg.lists else None
    if key is None:
        return []
    src = inside(cfg[key], cfg.paths.data_dir, key)
    if src == out:
        raise RankrmError(f"{key} and out are the same file ({src}): rankings go to a file of their own")
    items = read_prompts(src, counts) if key == "prompts" else read_lists(src, cfg.reader, counts)
    if not items:
        raise RankrmError(f"{key}={cfg[key]}: nothing to rank in it")
    return items


def build(cfg: DictConfig) -> LabelSession:
    """The session a config describes: files checked and read; models are loaded on first use."""
    from rankrm.label.generate import Generator
    from rankrm.label.session import Scorer

    _check(cfg)
    out = inside(cfg.out, cfg.paths.data_dir, "out")
    counts: Counter[str] = Counter()
    items = _read_items(cfg, out, counts)
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    generator = None
    if cfg.prompts:
        spec = OmegaConf.to_container(cfg.generator, resolve=True)
        generator = Generator(spec, OmegaConf.to_container(cfg.sampling, resolve=True))  # type: ignore[arg-type]
    scorer = Scorer(str(cfg.reward_model)) if cfg.reward_model else None
    store = LabelStore(out)
    per = cfg.annotations_per_item
    return LabelSession(items, store, int(cfg.k), generator, scorer, bool(cfg.shuffle), per, counts)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of dicts -> aligned text lines (header first)."""
    if not rows:
        return []
    cols = list(rows[0])
    cells = [cols] + [list(r.values()) for r in shown(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]


def _people(session: LabelSession) -> list[dict[str, Any]]:
    ids = set(session.by_id)
    per: dict[str, list[dict[str, Any]]] = {}
    for item, by in session.store.rankings.items():
        if item in ids or not ids:
            for who, rec in by.items():
                per.setdefault(who, []).append(rec["annotation"])
    skips = Counter(who for (item, who) in session.store.skipped if item in ids or not ids)
    rows = []
    for who in sorted(set(per) | set(skips)):
        anns = per.get(who, [])
        secs = [a["seconds"] for a in anns if isinstance(a.get("seconds"), (int, float))]
        rows.append(
            {
                "annotator": who,
                "ranked": f"{len(anns)}/{len(ids)}" if ids else len(anns),
                "skipped": skips.get(who, 0),
                "flagged": sum(bool(a.get("flagged")) for a in anns),
                "median s": f"{statistics.median(secs):.1f}" if secs else None,
            }
        )
    return rows


def summary(session: LabelSession) -> str:
    """Progress per annotator, agreement between annotators (and with the reward model), counts."""
    n = sum(len(by) for by in session.store.rankings.values())
    lines = [f"labels: {session.store.out} ({n} rankings of {len(session.store.rankings)} items)"]
    if session.items:
        lines.append(f"items in the input: {len(session.items)}")
    lines += ["", *(_table(_people(session)) or ["no rankings yet"])]
    agreement = session.agreement()
    lines += ["", "agreement on the lists both ranked (lists; tau-b: mean Kendall tau-b over the lists where it is"]
    lines += ["defined, `tau on`; exact: share of lists in the same order with the same ties):"]
    lines += _table(agreement) or ["no list ranked by two annotators yet"]
    if session.scorer is not None:
        session.score_known()
        lines += ["", f"reward model ({session.scorer.model_dir}) vs each annotator:"]
        lines += _table(session.model_rows()) or ["no ranking to compare yet"]
    counts = {**session.counts, **session.store.counts}
    bad = sum(log.bad_lines for log in (session.store.labels, session.store.skips, session.store.answers_log))
    counts = {k: v for k, v in {**counts, "unreadable_lines": bad}.items() if v}
    if counts:
        lines += ["", "counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    return "\n".join(lines)


def generate_all(session: LabelSession) -> None:
    todo = [it for it in session.items if session.known_answers(it) is None]
    log.info("generating answers for %d of %d prompts into %s", len(todo), len(session.items), session.store.out)
    for i, item in enumerate(todo, 1):
        session.answers(item)
        log.info("%d/%d %s", i, len(todo), item.id)


def run(cfg: DictConfig) -> None:
    session = build(cfg)
    if cfg.mode == "summary":
        print(summary(session))
        return
    if cfg.mode == "generate":
        generate_all(session)
        return
    if importlib.util.find_spec("streamlit") is None:
        raise RankrmError("the labelling page needs Streamlit: pip install -e '.[label]'")
    from rankrm.label.server import Served, serve

    if cfg.server.address not in ("127.0.0.1", "localhost", "::1"):
        log.warning("server.address=%s: anyone who can reach it can read and write the labels", cfg.server.address)

    if session.scorer is not None:
        log.info("scoring the known answers with the reward model %s", session.scorer.model_dir)
        session.score_known()
    about = {
        "output": session.store.out,
        "input": cfg.prompts or cfg.lists,
        "items": len(session.items),
        "answers": f"generated by {session.generator.name} (k={cfg.k})" if session.generator else "from the input",
        "reward model": cfg.reward_model or "none",
    }
    serve(Served(session, cfg.annotator, about), cfg.server.address, cfg.server.port, cfg.server.open_browser)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="label")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
