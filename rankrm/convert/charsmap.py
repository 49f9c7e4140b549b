"""Build a SentencePiece `precompiled_charsmap` (what `tokenizers.normalizers.Precompiled` reads) from a
per-codepoint replacement map, so a converted tokenizer normalises text inside `tokenizer.json`.

Format (spm_precompiled, the reader in `tokenizers`): `u32 trie_bytes`, a darts-clone double-array
trie of `u32` units over the keys' UTF-8 bytes, then the replacement strings, each NUL-terminated; a
key's value is the byte offset of its replacement. A unit holds a label (low 8 bits), a has-leaf flag
(bit 8) and an offset to its children's base (bits 10-30, shifted by 8 when bit 9 is set); the child
with byte `c` of a node at position `p` sits at `p ^ offset(p) ^ c`, and the leaf (value | 1 << 31)
at byte 0. Lookups never bounds-check, so every base's 256-unit block lies inside the array.

Memory grows with the map: one 256-unit block per trie node at worst; in practice e5's 4,837-entry
map (16,191 key bytes) packs into 9,984 units, a 52 KB charsmap. Time: a first-fit search for each
node's base, ~1-2 s for that map on a loaded 2-core CPU (once per conversion).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

LEAF = 1 << 31
HAS_LEAF = 1 << 8
MAX_OFFSET = 1 << 21  # offsets above this need bit 9 and a multiple of 256: never needed here


def _trie(keys: Mapping[bytes, int]) -> list[dict[int, int]]:
    """Byte trie: node -> {byte: child node}; byte 0 marks the key's end (its value in `values`)."""
    nodes: list[dict[int, int]] = [{}]
    for key in keys:
        node = 0
        for c in key:
            if c not in nodes[node]:
                nodes[node][c] = len(nodes)
                nodes.append({})
            node = nodes[node][c]
        nodes[node][0] = -1  # leaf marker
    return nodes


def double_array(keys: Mapping[bytes, int]) -> list[int]:
    """darts-clone units for `keys` (UTF-8 byte strings without NUL -> value < 2**31)."""
    if any(0 in k or not k for k in keys):
        raise ValueError("charsmap keys must be non-empty and hold no NUL byte")
    nodes = _trie(keys)
    values = {}
    for key, value in keys.items():  # the node a key ends at -> its value
        node = 0
        for c in key:
            node = nodes[node][c]
        values[node] = value
    units: dict[int, int] = {0: 0}
    used_bases: set[int] = set()
    next_free = 1  # first position that may still be free: keeps the base search linear overall
    stack = [(0, 0)]  # (trie node, its position)
    while stack:
        node, pos = stack.pop()
        labels = sorted(nodes[node])
        base = _find_base(labels, units, used_bases, next_free)
        used_bases.add(base)
        offset = pos ^ base
        if offset >= MAX_OFFSET:
            raise ValueError("charsmap too large for a short offset")
        units[pos] = units.get(pos, 0) | (offset << 10)
        for c in labels:
            child_pos = base ^ c
            if c == 0:
                units[child_pos] = values[node] | LEAF
                continue
            child = nodes[node][c]
            units[child_pos] = c | (HAS_LEAF if 0 in nodes[child] else 0)
            stack.append((child, child_pos))
        while next_free in units:
            next_free += 1
    size = (max(used_bases) | 0xFF) + 1  # the last base's whole block: lookups read any byte of it
    return [units.get(i, 0) for i in range(max(size, max(units) + 1))]


def _find_base(labels: list[int], units: Mapping[int, int], used_bases: set[int], start: int) -> int:
    """Smallest base, not used by another node, whose slots `base ^ c` are all free (slot 0 is the root)."""
    pos = start
    while True:  # try each free position for the first label's slot
        base = pos ^ labels[0]
        if pos not in units and base not in used_bases and all((base ^ c) not in units for c in labels):
            return base
        pos += 1


def precompiled_charsmap(mapping: Mapping[int, str]) -> bytes:
    """{codepoint: replacement} -> the bytes `tokenizers.normalizers.Precompiled` takes."""
    blob = bytearray()
    offsets: dict[str, int] = {}
    keys = {}
    for cp, out in sorted(mapping.items()):
        if out not in offsets:
            offsets[out] = len(blob)
            blob += out.encode("utf-8") + b"\0"
        keys[chr(cp).encode("utf-8", "surrogatepass")] = offsets[out]
    units = double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)
