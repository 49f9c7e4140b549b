"""Ranked-list data: sources and record formats -> validated `RankedList`s -> token cache -> splits -> batches.

Where each piece lives (what to touch to add one):
  records.py     `RankedList`, the one record every format produces
  containers.py  local file containers (jsonl, json, csv, parquet, tsv) -> rows; add one in `CONTAINERS`
  formats.py     record formats: rows -> lists (list, pairs, ultrafeedback, seed_tsv, oasst); add one in `FORMATS`
  oasst.py       the OpenAssistant tree parser (nested trees or flat message rows)
  sources.py     the source registry (`file`, `hf`, `vader`) and `resolve` / `read_source` for `data.source`
  hf.py          Hugging Face `datasets` rows (save_to_disk folders, hub ids)
  vader.py       the VADER builder (the default data)
  splits.py      every split rule: group carving, fractions, per-split files, VADER's split by text
  validate.py    field checks and the `DropLog` of invalid records
  cachekey.py    the token cache's key: source content, tokenizer state, length options
  tokencache.py  a cache entry's files (flat token arrays + offsets) and the streaming writer
  cache.py       open or build an entry (lock, atomic rename, validation); preflight's streamed check
  items.py       a split over an entry: carving, limits, filters, pairs, as index arrays
  tokenize.py, collate.py, sampler.py, datamodule.py   tokens, batches and the Lightning data module
"""
