"""How the token cache stores tokens, measured: flat numpy arrays + offsets vs Arrow (what `datasets` keeps).

The same tokens (a token cache built from `bench_data.py`'s synthetic lists) are written three ways
and read back as training does, one padded batch of `--batch` random sequences at a time:
  numpy     tokens.bin + seq_offsets.npy, memory-mapped; a batch is one fancy-index gather (the cache)
  arrow     a LargeList<uint16> column in an Arrow IPC file, memory-mapped; a batch is `take` + flatten
  datasets  the same Arrow table as a `datasets.Dataset` with the numpy format; a batch is `ds[idx]`
Each then pads with the collator's own code. Reported: write and open seconds, bytes on disk, and
the median microseconds per batch over `--batches` batches (the same batches for every layout).

    python scripts/bench_token_storage.py --lists 20000 --words 150 --out scripts/results/bench_token_storage.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_data  # noqa: E402

COLUMNS = [("layout", "layout"), ("write_s", "write s"), ("open_s", "open s"), ("mb", "MB on disk")]
COLUMNS += [("batch_us", "us per batch (median)"), ("rss_growth_mb", "RSS growth over the batches MB")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lists", type=int, default=20000)
    p.add_argument("--words", type=int, default=150)
    p.add_argument("--batch", type=int, default=32, help="sequences per batch")
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.lists, args.words, args.batches = 40, 12, 20
    return args


def main(argv: list[str] | None = None) -> int:
    import datasets  # noqa: F401 -- imported before anything is timed
    import numpy as np
    import pyarrow as pa

    from rankrm.data.cache import open_tokens
    from rankrm.data.collate import RankCollator, SeqBatch

    args = parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_storage_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = bench_data.make_data(work / f"n{args.lists}_w{args.words}.jsonl", args.lists, 4, args.words, args.backbone)
    tok = bench_data._tokenizer(args.backbone)
    store, _ = open_tokens(
        {"reader": "jsonl", "path": str(data)}, tok, 0, 512, "filter", "left", False, cache_dir=str(work / "c")
    )
    offsets, tokens = np.asarray(store.seq_offsets), np.asarray(store.tokens)
    rng = np.random.default_rng(0)
    picks = [np.sort(rng.choice(len(offsets) - 1, args.batch, replace=False)) for _ in range(args.batches)]
    pad = RankCollator(tok.pad_token_id)

    def padded(flat: np.ndarray, lens: np.ndarray) -> Any:  # the collator's padding on gathered rows
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        k = np.array([len(lens)])
        return pad(SeqBatch(flat, None, starts, lens, k, np.zeros(len(lens))))["input_ids"]

    rows, reference = [], None
    for layout in ("numpy", "arrow", "datasets"):
        folder = work / layout
        folder.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        write(layout, folder, offsets, tokens)
        t1 = time.perf_counter()
        batch_of = reader(layout, folder, tokens.dtype)
        t2 = time.perf_counter()
        rss0, times, first = bench_data.rss_mb(), [], None
        for idx in picks:
            s = time.perf_counter()
            flat, lens = batch_of(idx)
            ids = padded(flat, lens)
            times.append(time.perf_counter() - s)
            first = ids if first is None else first
        reference = first if layout == "numpy" else reference
        mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
        rows.append(
            {
                "layout": layout,
                "write_s": t1 - t0,
                "open_s": t2 - t1,
                "mb": mb,
                "batch_us": 1e6 * statistics.median(times),
                "rss_growth_mb": bench_data.rss_mb() - rss0,
                "same_batch_as_numpy": bool((first == reference).all()),
            }
        )
    info = bc.machine_info(1)
    md = "\n\n".join(
        [
            f"## Token storage: {len(offsets) - 1:,} sequences, {len(tokens):,} tokens, batches of {args.batch} "
            f"random sequences, median of {args.batches}",
            bc.markdown_table(rows, COLUMNS),
            bc.load_line(info),
        ]
    )
    bc.write_report(args.out, {"args": vars(args), "machine": info, "rows": rows, "pyarrow": pa.__version__}, md)
    return 0


def write(layout: str, folder: Path, offsets: Any, tokens: Any) -> None:
    import numpy as np
    import pyarrow as pa

    if layout == "numpy":
        tokens.tofile(folder / "tokens.bin")
        np.save(folder / "seq_offsets.npy", offsets)
        return
    column = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(tokens))
    table = pa.table({"input_ids": column})
    if layout == "arrow":
        with pa.OSFile(str(folder / "tokens.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        return
    import datasets

    datasets.Dataset(table).save_to_disk(str(folder / "ds"))


def reader(layout: str, folder: Path, dtype: Any) -> Any:
    """`batch_of(idx) -> (flat tokens of the sequences idx, their lengths)` for a layout, opened."""
    import numpy as np
    import pyarrow as pa

    if layout == "numpy":
        toks = np.memmap(folder / "tokens.bin", dtype=dtype, mode="r")
        offs = np.load(folder / "seq_offsets.npy", mmap_mode="r")

        def numpy_batch(idx: Any) -> Any:
            starts, lens = offs[idx], offs[idx + 1] - offs[idx]
            src = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
            return toks[src], lens

        return numpy_batch
    if layout == "arrow":
        col = pa.ipc.open_file(pa.memory_map(str(folder / "tokens.arrow"))).read_all().column("input_ids")

        def arrow_batch(idx: Any) -> Any:
            part = col.take(pa.array(idx)).combine_chunks()
            return part.flatten().to_numpy(), np.diff(part.offsets.to_numpy())

        return arrow_batch
    import datasets

    ds = datasets.load_from_disk(str(folder / "ds")).with_format("numpy")

    def datasets_batch(idx: Any) -> Any:
        rows = ds[idx]["input_ids"]
        return np.concatenate(list(rows)), np.array([len(r) for r in rows])

    return datasets_batch


if __name__ == "__main__":
    sys.exit(main())
