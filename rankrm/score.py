"""Score texts with an exported reward model (a dir written by `rankrm.export.export_model`).

    python -m rankrm.score MODEL_DIR [--prompt P] [--rank] TEXT [TEXT ...]
    python -m rankrm.score MODEL_DIR --jsonl FILE [--out FILE] [--rank]

Texts are encoded exactly as in training (`rankrm.data.tokenize`: prompt + response as a text
pair for encoders, joined for decoders, the chat template for message prompts). The model is
the plain transformers export (AutoModelForSequenceClassification); a reward norm that could
not be folded into the head (decoders) is applied from `config.rankrm_reward_mean/std`.

Output: one `score<TAB>text` line per text in input order, or best first with `--rank`.
With `--jsonl`, every input line `{"prompt"?, "responses": [...], ...}` is written back with
`"rewards": [...]` added (and `"ranking"`: response indices best first, with `--rank`);
other fields, e.g. human `scores`, are kept. The file is read as training reads the `list`
format, in the container its suffix names (`.jsonl`, or a `.json` array).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from rankrm.data.records import RankedList
from rankrm.errors import DataError, RankrmError, exit_on_user_error


def load_exported(model_dir: str | Path) -> tuple[Any, Any]:
    """(AutoModelForSequenceClassification in eval mode, AutoTokenizer) from an export dir."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    d = Path(model_dir).expanduser()
    if not (d / "config.json").is_file():
        raise RankrmError(f"{d} is not an exported model dir (no config.json); export one with rankrm-train")
    hf_logging.disable_progress_bar()
    try:
        # safetensors only: a pickled pytorch_model.bin can run code on load, and exports never write one.
        model = AutoModelForSequenceClassification.from_pretrained(d, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(d)
    except (OSError, ValueError) as e:
        raise RankrmError(f"could not load the model in {d}: {str(e).splitlines()[0]}") from e
    if model.config.num_labels != 1:
        raise RankrmError(f"{d} has {model.config.num_labels} labels; a reward model has 1")
    return model.eval(), tokenizer


def score_lists(
    model: Any, tokenizer: Any, lists: Sequence[RankedList], batch_size: int = 16, max_length: int | None = None
) -> list[list[float]]:
    """Scores (normalised when the export stores a norm) of every response of every list."""
    from rankrm.data.collate import RankCollator
    from rankrm.data.tokenize import EncodedList, effective_max_length, encode_lists
    from rankrm.export import hf_scores

    limit = effective_max_length(tokenizer, max_length)
    encoded, counts = encode_lists(tokenizer, list(lists), limit, overlong="truncate")
    if counts.get("overlong_filtered"):
        n = counts["overlong_filtered"]
        raise RankrmError(f"{n} list(s) cannot fit in {limit} tokens even with the prompt cut")
    ids = [x for el in encoded for x in el.ids]  # N sequences, row-major over lists
    types = None if encoded[0].type_ids is None else [t for el in encoded for t in el.type_ids]
    order = sorted(range(len(ids)), key=lambda n: len(ids[n]))  # similar lengths share a batch
    collate = RankCollator(tokenizer.pad_token_id, tokenizer.padding_side)
    flat = [0.0] * len(ids)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            # One pseudo-list of all the batch's sequences: the collator pads them as in training.
            chunk = EncodedList(
                [ids[n] for n in idx], None if types is None else [types[n] for n in idx], tuple(0.0 for _ in idx)
            )
            batch = collate([chunk])
            inputs = {k: v for k, v in batch.items() if k not in ("labels", "mask")}
            for n, s in zip(idx, hf_scores(model, inputs).tolist()):
                flat[n] = s
    out, pos = [], 0
    for el in encoded:
        out.append(flat[pos : pos + el.k])
        pos += el.k
    return out


def _read_jsonl(path: str) -> tuple[list[dict[str, Any]], list[RankedList]]:
    """Input objects and their lists (any container the suffix names; `prompt`/`responses` read as
    the `list` format reads them); a bad line is a DataError with file, line and field."""
    from rankrm.data.containers import read_rows
    from rankrm.data.formats import list_texts
    from rankrm.data.validate import DropLog

    objs, lists = [], []
    for where, line, obj in read_rows(path, DropLog()):
        prompt, responses = list_texts(obj, where, line)
        if not responses:
            raise DataError(where, line, "responses", "is empty")
        objs.append(obj)
        lists.append(RankedList(tuple(responses), tuple(0.0 for _ in responses), prompt, f"{where}:{line}"))
    return objs, lists


def ranking(scores: Sequence[float]) -> list[int]:
    """Indices best (highest score) first; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _write_text_scores(texts: Sequence[str], scores: Sequence[float], rank: bool, out: Any) -> None:
    idx = ranking(scores) if rank else range(len(texts))
    for pos, i in enumerate(idx, start=1):
        prefix = f"{pos}\t" if rank else ""
        one_line = texts[i].replace("\n", "\\n")
        out.write(f"{prefix}{scores[i]:.6f}\t{one_line}\n")


def _write_jsonl(objs: Iterable[dict[str, Any]], scores: Sequence[Sequence[float]], rank: bool, out: Any) -> None:
    for obj, s in zip(objs, scores):
        row = {**obj, "rewards": [round(x, 6) for x in s]}
        if rank:
            row["ranking"] = ranking(s)
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rankrm-score", description="Score texts with an exported rankrm reward model.")
    ap.add_argument("model_dir", help="dir written by the training run's export (<run dir>/model)")
    ap.add_argument("texts", nargs="*", metavar="TEXT", help="responses to score (one list)")
    ap.add_argument("--prompt", help="prompt the TEXTs answer (plain text)")
    ap.add_argument("--rank", action="store_true", help="print best first with ranks (jsonl: add 'ranking')")
    ap.add_argument("--jsonl", metavar="FILE", help='score a file of {"prompt"?, "responses": [...]} lines')
    ap.add_argument("--out", metavar="FILE", help="write the jsonl output here instead of stdout")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default 16)")
    ap.add_argument(
        "--max-length", type=int, default=None, help="token limit; longer prompts are cut (default: the model's)"
    )
    args = ap.parse_intermixed_args(argv)  # options may come after the TEXTs, or between them
    if bool(args.jsonl) == bool(args.texts):
        ap.error("give either TEXT arguments or --jsonl FILE")
    if args.jsonl and args.prompt is not None:
        ap.error("--prompt is for TEXT arguments; in --jsonl files put the prompt in each line")
    if args.out and not args.jsonl:
        ap.error("--out goes with --jsonl")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    return args


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (`rankrm-score`)."""
    args = parse_args(argv)
    model, tokenizer = load_exported(args.model_dir)
    if args.jsonl:
        objs, lists = _read_jsonl(args.jsonl)
        scores = score_lists(model, tokenizer, lists, args.batch_size, args.max_length)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                _write_jsonl(objs, scores, args.rank, fh)
        else:
            _write_jsonl(objs, scores, args.rank, sys.stdout)
        return
    for i, t in enumerate(args.texts):
        if not t.strip():
            raise RankrmError(f"TEXT {i + 1} is empty")
    prompt = args.prompt if args.prompt and args.prompt.strip() else None
    rl = RankedList(tuple(args.texts), tuple(0.0 for _ in args.texts), prompt, "command line")
    scores = score_lists(model, tokenizer, [rl], args.batch_size, args.max_length)[0]
    _write_text_scores(args.texts, scores, args.rank, sys.stdout)


if __name__ == "__main__":
    main()
