"""Score texts with an exported reward model (a dir written by `rankrm.export.export_model`).

    python -m rankrm.score MODEL_DIR [--prompt P] [--rank] TEXT [TEXT ...]
    python -m rankrm.score MODEL_DIR --jsonl FILE [--out FILE] [--rank]
    python -m rankrm.score MODEL_DIR --stats FILE

The export is read back into the model training ran (`rankrm.reward.load_reward_model`) and texts are
encoded as in training, with the input format saved in the export (`rankrm.inputs`: prompt + response
as a text pair for encoders, joined with the recorded prompt joiner for decoders, the chat template
for message prompts); a reward norm is applied. `rankrm.reward_function` gives the same scores.

Output: one `score<TAB>text` line per text in input order, or best first with `--rank`.
With `--jsonl`, every input line `{"prompt"?, "responses": [...], ...}` is written back with
`"rewards": [...]` added (and `"ranking"`: response indices best first, with `--rank`);
other fields, e.g. human `scores`, are kept. The file is read as training reads the `list`
format, in the container its suffix names (`.jsonl`, or a `.json` array). `--stats FILE` prints
one JSON line: n, mean, std, min and max of the scores of every response in FILE -- the reward
scale an RL trainer will see (rankrm.json's `reward_stats` holds the same for the val set).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rankrm.data.records import RankedList
from rankrm.errors import DataError, RankrmError, exit_on_user_error


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
    ap.add_argument("--stats", metavar="FILE", help="print n, mean, std, min, max of the scores of FILE's responses")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default 16)")
    ap.add_argument(
        "--max-length", type=int, default=None, help="token limit; longer prompts are cut (default: the model's)"
    )
    args = ap.parse_intermixed_args(argv)  # options may come after the TEXTs, or between them
    if sum(map(bool, (args.jsonl, args.texts, args.stats))) != 1:
        ap.error("give either TEXT arguments, --jsonl FILE or --stats FILE")
    if (args.jsonl or args.stats) and args.prompt is not None:
        ap.error("--prompt is for TEXT arguments; in --jsonl / --stats files put the prompt in each line")
    if args.out and not args.jsonl:
        ap.error("--out goes with --jsonl")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    return args


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (`rankrm-score`)."""
    from rankrm.inputs import as_prompt
    from rankrm.reward import load_reward_model, score_lists, score_stats

    args = parse_args(argv)
    rm = load_reward_model(args.model_dir, device="cpu")
    if args.stats:
        scores = score_lists(rm, _read_jsonl(args.stats)[1], args.batch_size, args.max_length)
        print(json.dumps(score_stats([x for s in scores for x in s])))
        return
    if args.jsonl:
        objs, lists = _read_jsonl(args.jsonl)
        scores = score_lists(rm, lists, args.batch_size, args.max_length)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                _write_jsonl(objs, scores, args.rank, fh)
        else:
            _write_jsonl(objs, scores, args.rank, sys.stdout)
        return
    for i, t in enumerate(args.texts):
        if not t.strip():
            raise RankrmError(f"TEXT {i + 1} is empty")
    prompt = as_prompt(args.prompt)
    rl = RankedList(tuple(args.texts), tuple(0.0 for _ in args.texts), prompt, "command line")
    scores = score_lists(rm, [rl], args.batch_size, args.max_length)[0]
    _write_text_scores(args.texts, scores, args.rank, sys.stdout)


if __name__ == "__main__":
    main()
