"""From a `data.source` config to train/val/test lists: the source registry.

`data.source.reader` names a source in `SOURCES` (`file`, `hf`, `vader`, `asap`) or a format's reader
name (`jsonl`, `trl_pairs`, `seed_tsv`, `oasst`: a local file in that format). Row sources
(`file`, `hf`) pass their rows through the parser `data.source.format` names (default: the
reader's own format, else `list`), so any format reads from any of them. The other keys are
the options of the source and of the format, declared by their functions' signatures
(`rankrm.data.options`); `resolve` checks them all before anything is read.

Add a source: a function `(log, parsing, **options) -> {split: rows or None}` (None: carved
from train by `fractions`), or for a builder of its own lists `(log, seed, **options) ->
(splits, info)`, and its entry in `SOURCES`, with a `prepare` hook if it downloads something.
Streaming (e.g. into a token cache): `resolve(source).rows(log)` gives each split's rows,
`parsing.stream(rows, log, counts)` the validated (list, group) pairs one at a time, and
`splits.assign_groups` carves the missing splits from the group keys alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrm.data import asap, hf, vader
from rankrm.data.containers import Row, rename
from rankrm.data.formats import FORMATS, Parsing
from rankrm.data.options import Option, check_value, declared
from rankrm.data.readers import file_rows, parse_into
from rankrm.data.splits import Items, Splits, assemble
from rankrm.data.validate import DropLog
from rankrm.errors import RankrmError

Inputs = dict[str, "Iterator[Row] | None"]  # split -> its rows (None: carved from train)


def _files(path: str | None, train: str | None, val: str | None, test: str | None) -> dict[str, str | None]:
    if bool(path) == bool(train):
        raise RankrmError(
            "data.source: give either `path` (one file or dataset, split by `fractions`) or `train` (+ `val`/`test`)"
        )
    return {"train": path or train, "val": val, "test": test}


def file_inputs(
    log: DropLog,
    parsing: Parsing,
    path: str | None = None,  # one file, split by `fractions` (or give train / val / test)
    train: str | None = None,  # train file; a missing val / test is carved from it
    val: str | None = None,  # val file
    test: str | None = None,  # test file
    container: str | None = None,  # jsonl | json | csv | parquet | tsv; null: from the suffix, else the format's
    columns: Mapping[str, str] | None = None,  # rename columns to the format's names, e.g. {prompt: question}
) -> Inputs:
    """The `file` source: local files of any container."""
    files = _files(path, train, val, test)
    return {s: rename(file_rows(f, log, parsing, container), columns or {}) if f else None for s, f in files.items()}


def hf_inputs(
    log: DropLog,
    parsing: Parsing,
    path: str | None = None,  # hub id, save_to_disk folder or one local file (or give train / val / test)
    name: str | None = None,  # hub dataset config name
    revision: str | None = None,  # hub revision (commit) to pin
    splits: Mapping[str, str | None] | None = None,  # dataset split per rankrm split; null: carve (train: train)
    train: str | None = None,  # train file, folder or hub id (instead of path)
    val: str | None = None,  # val file, folder or hub id
    test: str | None = None,  # test file, folder or hub id
    container: str | None = None,  # of local files, as for the `file` source
    columns: Mapping[str, str] | None = None,  # rename columns to the format's names, e.g. {prompt: question}
) -> Inputs:
    """The `hf` source: a `datasets` dataset (local folder or hub id) or local files."""
    files = _files(path, train, val, test)
    given = {s: (f, None) if f else None for s, f in files.items()}
    if path:  # one dataset: a rankrm split reads the dataset split named for it, or is carved (null)
        names = {"train": "train", "val": None, "test": None, **(splits or {})}
        if Path(path).expanduser().is_file() and (names["val"] or names["test"]):
            raise RankrmError(f"data.source.splits={dict(splits or {})} names dataset splits, but {path} is one file")
        given = {s: (path, n) if n else None for s, n in names.items()}

    def rows(src: str, split: str | None) -> Iterator[Row]:
        if Path(src).expanduser().is_file():
            return file_rows(src, log, parsing, container)
        if parsing.format.rows != "object":
            raise RankrmError(f"data.source.format={parsing.name} reads {parsing.format.rows}, not dataset rows")
        return hf.dataset_rows(src, split, name, revision)

    return {s: rename(rows(*g), columns or {}) if g else None for s, g in given.items()}


def given_inputs(
    path: str | None = None, train: str | None = None, val: str | None = None, test: str | None = None, **_: Any
) -> list[str]:
    """What holds a row source's content: the configured files, folders or hub ids (the cache key hashes them)."""
    return [p for p in (path, train, val, test) if p]


@dataclass(frozen=True)
class SourceKind:
    """One entry of the source registry: a row source (`inputs`) or a builder of its own lists (`build`).

    The parameters with defaults of `inputs` (plus `splits.assemble`'s `fractions`) or of `build` are the
    source's `data.source` options.
    """

    inputs: Callable[..., Inputs] | None = None  # (log, parsing, **options) -> rows per split
    build: Callable[..., tuple[Splits, dict]] | None = None  # (log, seed, **options) -> lists per split, info
    prepare: Callable[..., None] | None = None  # (**options): downloads, once per node before reading
    content: Callable[..., list[str]] = given_inputs  # (**options): files / folders / hub ids holding the data
    doc: str = ""

    def options(self) -> dict[str, Option]:
        return declared(self.build) if self.build else {**declared(self.inputs), **declared(assemble)}  # type: ignore[arg-type]


SOURCES: dict[str, SourceKind] = {
    "file": SourceKind(file_inputs, doc="local jsonl / json / csv / parquet / tsv files"),
    "hf": SourceKind(hf_inputs, doc="Hugging Face datasets: hub id, save_to_disk folder or local files"),
    "vader": SourceKind(
        build=vader.load_vader, prepare=vader.prepare, content=vader.files, doc="VADER ratings as graded K-way lists"
    ),
    "asap": SourceKind(
        build=asap.load_asap, content=asap.files, doc="ASAP's Chinese reviews with 1-5 stars as graded lists, ties kept"
    ),
}
READERS = {f.reader: name for name, f in FORMATS.items() if f.reader}  # reader name -> format of a local file


def _subset(fn: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in declared(fn)}


@dataclass(frozen=True)
class Resolved:
    """A checked `data.source`: the source, its options (defaults filled in) and the parsing of a row source."""

    reader: str
    kind: SourceKind
    options: dict[str, Any]
    parsing: Parsing | None = None

    def prepare(self) -> None:
        """Fetch what the source needs (VADER's files); the data module calls it once per node."""
        if self.kind.prepare is not None:
            self.kind.prepare(**self.options)

    def content(self) -> list[str]:
        """The files, folders or hub ids the lists are read from (a VADER source may fetch its files here)."""
        return self.kind.content(**self.options)

    def rows(self, log: DropLog) -> Inputs:
        """A row source's rows per split, opened (missing inputs fail here) but not yet read."""
        assert self.kind.inputs is not None and self.parsing is not None, f"{self.reader} builds its own lists"
        return self.kind.inputs(log, self.parsing, **_subset(self.kind.inputs, self.options))

    def read(self, log: DropLog, seed: int) -> tuple[Splits, dict]:
        """Read, validate and split: (split -> lists, info for `stats`)."""
        if self.kind.build is not None:
            return self.kind.build(log, seed, **self.options)
        assert self.parsing is not None
        per_split = {
            s: None if r is None else parse_into(Items(), r, self.parsing, log) for s, r in self.rows(log).items()
        }
        return assemble(per_split, seed, **_subset(assemble, self.options))


def _reader(reader: Any) -> tuple[SourceKind, str | None]:
    """(the source, its default format) of a `data.source.reader` value."""
    if reader in SOURCES:
        kind = SOURCES[reader]
        return kind, ("list" if kind.inputs else None)
    if reader in READERS:
        return SOURCES["file"], READERS[reader]
    raise RankrmError(f"data.source.reader={reader!r} must be one of {sorted([*SOURCES, *READERS])}")


def _all_options() -> set[str]:
    """Every option any source or format declares (a null one of another source/format is not a typo)."""
    return {
        *(o for k in SOURCES.values() for o in k.options()),
        *(o for f in FORMATS.values() for o in declared(f.options)),
    }


def resolve(source: Mapping[str, Any]) -> Resolved:
    """Check a `data.source` mapping without reading anything: names, options, their values.

    A null option means "the default". Raises one `RankrmError` line for the first problem.
    """
    opts = dict(source)
    reader = opts.pop("reader", None)
    kind, fmt_name = _reader(reader)
    fmt_given = opts.pop("format", None)
    if fmt_given is not None and kind.inputs is None:
        raise RankrmError(f"data.source.format={fmt_given!r}: reader {reader!r} builds its own lists (no format)")
    fmt_name = fmt_given or fmt_name
    if fmt_name is not None and fmt_name not in FORMATS:
        raise RankrmError(f"data.source.format={fmt_name!r} must be one of {sorted(FORMATS)}")
    src_opts = kind.options()
    fmt_opts = declared(FORMATS[fmt_name].options) if fmt_name else {}
    valid = {**src_opts, **fmt_opts}
    unknown = sorted(k for k, v in opts.items() if k not in valid and not (v is None and k in _all_options()))
    if unknown:
        what = f"reader '{reader}'" + (f" (format {fmt_name})" if fmt_name else "")
        raise RankrmError(f"data.source: unknown option(s) {unknown} for {what} (valid: {sorted(valid)})")
    given = {k: v for k, v in opts.items() if k in valid and v is not None}
    for k, v in given.items():
        check_value(k, v, valid[k])
    options = {k: given.get(k, o.default) for k, o in src_opts.items()}
    parsing = None
    if fmt_name:
        parsing = Parsing(fmt_name, FORMATS[fmt_name], {k: given.get(k, o.default) for k, o in fmt_opts.items()})
    return Resolved(str(reader), kind, options, parsing)


class SourceData:
    """The lists of a `data.source`, read and validated (no tokenizer needed): what `read_source` returns.

    A plain class, not a dataclass: it passes through `hydra.utils.instantiate` as an opaque object.
    """

    def __init__(self, splits: Splits, info: dict, drops: DropLog, format: str | None = None) -> None:
        self.splits, self.info, self.drops, self.format = splits, info, drops, format


def read_source(source: Mapping[str, Any], seed: int, skip_invalid: bool = False) -> SourceData:
    """Check, read and validate every input of `source` (the runner calls it before building any model)."""
    resolved = resolve(source)
    drops = DropLog(bool(skip_invalid))
    splits, info = resolved.read(drops, seed)
    return SourceData(splits, info, drops, resolved.parsing.name if resolved.parsing else None)


def describe(source: Mapping[str, Any]) -> str:
    """Where the lists came from, for error messages: the files, or the reader and its folder/id."""
    files = [str(source[k]) for k in ("path", "train", "val", "test") if source.get(k)]
    return ", ".join(files) or f"reader {source.get('reader')} ({source.get('data_dir') or 'default location'})"
