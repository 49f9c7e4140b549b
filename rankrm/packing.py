"""Packed rows (`backbone.packing`, issue 18): the sequences of a batch laid out without padding, exactly.

A batch of N sequences becomes R rows of W slots, built from *groups*:
- `lists`: every sequence is a group of its own;
- `shared_prompt`: every list is one group: its first p tokens -- the list's longest common prefix (the
  prompt, at least), capped one token short of its shortest sequence -- are stored once, then each
  sequence's remaining tokens (its segment).
Groups go into rows first-fit decreasing, each row as wide as the longest group (dense-mask kernels,
which compute every cell: a row then costs no more attention than a padded row), or all into one row
(kernels that skip masked blocks or take sequence boundaries: no empty slot at all).

Slot i attends to slot j iff both are in one group, j is in the shared prefix or in i's segment, and
(for a causal backbone) j comes no later than i. Token t of a sequence gets position t, in the prefix
or in its own segment, so positions restart per group and continue from the prefix's end. Each sequence
thus sees the tokens, positions and token types it sees alone: its score is its unshared forward's, up
to float rounding. For a causal backbone a common prefix's hidden states are the same in all K sequences,
so sharing it is exact wherever the prompt ends (chat-template tokens and responses that start alike
are shared too); no prompt length is needed. Bidirectional encoders cannot share a prompt exactly (the
prompt's states would depend on every response at once): `rankrm.config.packing.check_packing` refuses that.

How a kernel gets the layout (`KERNELS`, by transformers' `attn_implementation`):
- `sdpa_varlen` (rankrm's, the default under packing): one row; each sequence's queries gathered with the
  keys they see into small blocks, SDPA over those (`rankrm.varlen`), on CPU and GPU;
- `sdpa`: a boolean (R, 1, W, W) block mask through transformers' SDPA, on CPU and GPU; `eager`: the same
  as an additive float mask (both compute every masked cell: rows as wide as the longest group);
- `flex_attention`: a FlexAttention `BlockMask` over one row (blocks with no allowed pair are skipped;
  torch trains with it on GPUs only);
- `flash_attention_2/3/4` (and hub flash kernels): flash-attn varlen over one row from `cu_seq_lens_*`,
  `lists` only (a shared prefix is not a set of independent sequences).
Empty slots form a group of their own (so no softmax row is empty) and are never pooled.

Time and memory: the layout is O(N L) (L = longest sequence) plus an O(G R) first-fit (G groups);
a dense mask holds R W^2 booleans, a BlockMask (W/128)^2 blocks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rankrm.config.packing import VARLEN, check_packing
from rankrm.errors import RankrmError


@dataclass(frozen=True)
class Lists:
    """Which sequences of a batch form one list (rows list after list)."""

    sizes: Tensor  # (B,) sequences per list, summing to N

    @classmethod
    def of(cls, batch: dict[str, Tensor]) -> Lists:
        """From the collator's batch: `mask` (B, K_max) holds each list's responses first."""
        return cls(batch["mask"].sum(1))


@dataclass(frozen=True)
class Layout:
    """Where every token of every sequence sits in the rows (CPU tensors)."""

    rows: int
    width: int
    index: Tensor  # (N, L) flat slot (row * width + column) of token t of sequence n; 0 past its length
    lengths: Tensor  # (N,) tokens per sequence
    prefix: Tensor  # (N,) leading tokens each sequence shares with its group (stored once)
    group: Tensor  # (R, W) group of each slot; -1: empty
    segment: Tensor  # (R, W) 0: shared prefix, s >= 1: one sequence's own tokens; -1: empty
    real: int  # slots holding a token (each shared prefix token once)

    @property
    def valid(self) -> Tensor:
        return torch.arange(self.index.shape[1]) < self.lengths[:, None]  # (N, L)


def assign_rows(sizes: list[int], one_row: bool) -> tuple[list[int], list[int], int]:
    """(row, offset) of each group and the row width: all in one row, or first-fit decreasing into rows as
    wide as the longest group."""
    if one_row:  # in input order
        return [0] * len(sizes), [0, *itertools.accumulate(sizes)][:-1], sum(sizes)
    width, fill = max(sizes), []
    rows, offsets = [0] * len(sizes), [0] * len(sizes)
    for g in sorted(range(len(sizes)), key=lambda g: -sizes[g]):  # stable: ties keep input order
        r = next((r for r, used in enumerate(fill) if used + sizes[g] <= width), len(fill))
        if r == len(fill):
            fill.append(0)
        rows[g], offsets[g] = r, fill[r]
        fill[r] += sizes[g]
    return rows, offsets, width


def make_layout(lengths: list[int], group_sizes: list[int], prefixes: list[int], one_row: bool) -> Layout:
    """The layout of sequences with `lengths`, in consecutive groups of `group_sizes`, group g sharing its
    first `prefixes[g]` tokens (0: nothing shared)."""
    firsts = [0, *itertools.accumulate(group_sizes)][:-1]  # first sequence of each group
    span = [p + sum(n - p for n in lengths[f : f + k]) for f, k, p in zip(firsts, group_sizes, prefixes)]
    rows, offsets, width = assign_rows(span, one_row)
    n_rows = max(rows) + 1
    # Per sequence: the flat slot where its group's prefix starts (a), where its own segment starts minus
    # its prefix length (b: token t >= p sits at b + t), its prefix length, its segment id and its group.
    a, b, p_n, seg, grp = [], [], [], [], []
    for g, (f, k, p) in enumerate(zip(firsts, group_sizes, prefixes)):
        start = rows[g] * width + offsets[g]
        nxt = start + p  # where the next own segment starts
        for j in range(k):
            a.append(start)
            b.append(nxt - p)
            p_n.append(p)
            seg.append(j + 1)
            grp.append(g)
            nxt += lengths[f + j] - p
    lens = torch.tensor(lengths)
    t = torch.arange(max(lengths))[None, :]  # (1, L)
    valid = t < lens[:, None]  # (N, L)
    shared = t < torch.tensor(p_n)[:, None]  # (N, L)
    index = torch.where(shared, torch.tensor(a)[:, None] + t, torch.tensor(b)[:, None] + t) * valid  # (N, L)
    group = torch.full((n_rows * width,), -1, dtype=torch.long)
    segment = torch.full((n_rows * width,), -1, dtype=torch.long)
    group[index[valid]] = torch.tensor(grp)[:, None].expand_as(index)[valid]
    segment[index[valid]] = torch.where(shared, 0, torch.tensor(seg)[:, None])[valid]
    prefix = torch.tensor(p_n)
    return Layout(n_rows, width, index, lens, prefix, group.view(n_rows, width), segment.view(n_rows, width), sum(span))


def shared_prefixes(aligned: Tensor, lengths: Tensor, lists: Lists, types: Tensor | None) -> list[int]:
    """Tokens each list can store once: its longest common prefix (ids and token types equal in all its
    sequences: the prompt, at least), at least one token short of its shortest sequence (every sequence
    keeps a segment of its own, whose last token carries its reward).

    aligned: (N, L) real tokens first; lengths: (N,). Truncation that cut the prompts of one list by
    different amounts leaves them different: the list then shares only what still agrees (exact, less saved).
    Time and memory O(N L), vectorised.
    """
    sizes = lists.sizes.to(aligned.device)
    group = torch.repeat_interleave(torch.arange(len(sizes), device=aligned.device), sizes)  # (N,)
    first = (sizes.cumsum(0) - sizes)[group]  # (N,) first sequence of each one's list
    same = aligned == aligned[first]  # (N, L)
    if types is not None:
        same &= types == types[first]
    agree = same.long().cumprod(1).sum(1)  # (N,) leading tokens equal to the list's first sequence
    per_seq = torch.minimum(agree, lengths - 1)  # padding past a sequence's end may agree too: cap at its length
    out = torch.full((len(sizes),), aligned.shape[1], dtype=torch.long, device=aligned.device)
    return out.scatter_reduce(0, group, per_seq, "amin").tolist()


def align(x: Tensor, mask: Tensor) -> Tensor:
    """(N, T) left- or right-padded -> (N, L) with each row's real tokens first, in order (L = longest)."""
    order = mask.argsort(dim=1, descending=True, stable=True)  # real columns first, in order
    return x.gather(1, order)[:, : int(mask.sum(1).max())]


def scatter(values: Tensor, layout: Layout, fill: int = 0) -> Tensor:
    """(N, L) per-token values -> (R, W) rows (shared prefix tokens are equal, so writing them K times is safe)."""
    flat = values.new_full((layout.rows * layout.width,), fill)
    valid = layout.valid.to(values.device)
    flat[layout.index.to(values.device)[valid]] = values[valid]
    return flat.view(layout.rows, layout.width)


# ---------------------------------------------------------------- kernels: the layout in each attention's terms


def allowed(layout: Layout, causal: bool, device: torch.device) -> Tensor:
    """(R, W, W) bool: slot i (dim 1) may attend to slot j (dim 2)."""
    g, s = layout.group.to(device), layout.segment.to(device)
    ok = (g[:, :, None] == g[:, None, :]) & ((s[:, None, :] == 0) | (s[:, None, :] == s[:, :, None]))
    if causal:
        ok &= torch.ones(layout.width, layout.width, dtype=torch.bool, device=device).tril()
    return ok


Built = tuple[Any, dict[str, Any]]  # (the backbone's attention_mask argument, extra keyword arguments)


def dense_bool(layout: Layout, causal: bool, dtype: torch.dtype, device: torch.device) -> Built:
    return allowed(layout, causal, device)[:, None], {}  # (R, 1, W, W)


def dense_additive(layout: Layout, causal: bool, dtype: torch.dtype, device: torch.device) -> Built:
    """Eager attention adds the mask to the scores: 0 where allowed, the dtype's minimum elsewhere."""
    mask = torch.zeros(layout.rows, 1, layout.width, layout.width, dtype=dtype, device=device)
    return mask.masked_fill(~allowed(layout, causal, device)[:, None], torch.finfo(dtype).min), {}


def block_mask(layout: Layout, causal: bool, dtype: torch.dtype, device: torch.device) -> Built:
    """A FlexAttention BlockMask of the same rule; blocks holding no allowed pair are never computed."""
    from torch.nn.attention.flex_attention import create_block_mask

    g, s = layout.group.to(device), layout.segment.to(device)

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        ok = (g[b, q] == g[b, kv]) & ((s[b, kv] == 0) | (s[b, kv] == s[b, q]))
        return ok & (kv <= q) if causal else ok

    return create_block_mask(mask_mod, layout.rows, None, layout.width, layout.width, device=device), {}


def varlen(layout: Layout, causal: bool, dtype: torch.dtype, device: torch.device) -> Built:
    """flash-attn varlen: no mask, the sequences' boundaries in the one row (transformers hands them to
    `flash_attn_varlen_func`)."""
    lens = layout.lengths[layout.index[:, 0].argsort()]  # (N,) in row order
    cu = torch.nn.functional.pad(lens.cumsum(0), (1, 0)).to(device=device, dtype=torch.int32)  # (N + 1,)
    m = int(lens.max())
    return None, {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": m, "max_length_k": m}


def varlen_blocks(layout: Layout, causal: bool, dtype: torch.dtype, device: torch.device) -> Built:
    """`sdpa_varlen` (`rankrm.varlen`): SDPA over each sequence's own blocks, gathered from one row."""
    from rankrm.varlen import blocks

    return blocks(layout, causal, dtype, device)


@dataclass(frozen=True)
class Kernel:
    """How one attention implementation takes a layout."""

    build: Callable[[Layout, bool, torch.dtype, torch.device], Built]
    one_row: bool  # all groups in one row (no empty slot) instead of rows as wide as the longest group


KERNELS: dict[str, Kernel] = {
    "sdpa": Kernel(dense_bool, one_row=False),
    VARLEN: Kernel(varlen_blocks, one_row=True),
    "eager": Kernel(dense_additive, one_row=False),
    "flex_attention": Kernel(block_mask, one_row=True),
    "flash_attention_2": Kernel(varlen, one_row=True),
    "flash_attention_3": Kernel(varlen, one_row=True),
    "flash_attention_4": Kernel(varlen, one_row=True),
}


def kernel_for(attn_implementation: str | None) -> Kernel:
    """The kernel of a transformers `attn_implementation` (hub kernels named like "...flash-attn..." are varlen)."""
    name = attn_implementation or "sdpa"
    if name in KERNELS:
        return KERNELS[name]
    if "flash" in name:
        return KERNELS["flash_attention_2"]
    raise RankrmError(
        f"backbone.packing needs one of the attention implementations {', '.join(KERNELS)} (or a flash-attn "
        f"kernel); this backbone runs '{name}': set backbone.attn_implementation or backbone.packing=none"
    )


def check_model(packing: str, causal: bool, attn_implementation: str | None) -> None:
    """The packing rules (`rankrm.config.packing.check_packing`) on a built model, whose attention says what
    its config could not, and a kernel that packing can drive."""
    check_packing(packing, causal, attn_implementation)
    if packing != "none":
        kernel_for(attn_implementation)


@dataclass(frozen=True)
class PackedRows:
    """One backbone call over packed rows, and where each sequence's tokens are in its output."""

    input_ids: Tensor  # (R, W)
    position_ids: Tensor  # (R, W)
    token_type_ids: Tensor | None  # (R, W)
    attention_mask: Any  # the kernel's form (see KERNELS)
    kwargs: dict[str, Any]  # extra backbone arguments of the kernel
    index: Tensor  # (N, L) flat slot of token t of sequence n
    lengths: Tensor  # (N,)
    real: int  # slots holding a token
    cells: int  # R * W


def pack(
    ids: Tensor, mask: Tensor, types: Tensor | None, lists: Lists | None, kernel: Kernel, causal: bool, dtype: Any
) -> PackedRows:
    """A padded batch (N, T) -> packed rows; `lists` given: each list shares its common prefix (`shared_prefixes`)."""
    lengths = mask.sum(1)  # (N,)
    aligned = align(ids, mask)  # (N, L)
    aligned_types = None if types is None else align(types, mask)
    if lists is None:
        sizes, prefixes = [1] * len(ids), [0] * len(ids)
    else:
        sizes, prefixes = lists.sizes.tolist(), shared_prefixes(aligned, lengths, lists, aligned_types)
    layout = make_layout(lengths.tolist(), sizes, prefixes, kernel.one_row)
    positions = torch.arange(aligned.shape[1], device=ids.device).expand_as(aligned)  # (N, L): token t at t
    attention, kwargs = kernel.build(layout, causal, dtype, ids.device)
    return PackedRows(
        input_ids=scatter(aligned, layout),
        position_ids=scatter(positions, layout),
        token_type_ids=None if aligned_types is None else scatter(aligned_types, layout),
        attention_mask=attention,
        kwargs=kwargs,
        index=layout.index.to(ids.device),
        lengths=lengths,
        real=layout.real,
        cells=layout.rows * layout.width,
    )
