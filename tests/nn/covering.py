"""A deterministic greedy covering array: every `strength`-way combination of factor values
appears in some row, in far fewer rows than the full product."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any


def covering_array(
    factors: Mapping[str, Sequence[Any]], strength: int, seed: int = 0, candidates: int = 48
) -> list[dict[str, Any]]:
    """Rows (name -> value) covering every `strength`-tuple of factor values."""
    names = list(factors)
    combos = list(itertools.combinations(range(len(names)), strength))
    uncovered = {
        (c, vals) for c in combos for vals in itertools.product(*(range(len(factors[names[i]])) for i in c))
    }
    rng = random.Random(seed)
    rows: list[list[int]] = []
    while uncovered:
        pool = sorted(uncovered)
        best, best_gain = None, -1
        for _ in range(candidates):
            combo, vals = rng.choice(pool)  # start from an uncovered tuple: progress is guaranteed
            row = [rng.randrange(len(factors[n])) for n in names]
            for i, v in zip(combo, vals, strict=True):
                row[i] = v
            gain = sum((c, tuple(row[i] for i in c)) in uncovered for c in combos)
            if gain > best_gain:
                best, best_gain = row, gain
        assert best is not None  # candidates >= 1
        rows.append(best)
        uncovered -= {(c, tuple(best[i] for i in c)) for c in combos}
    return [{n: factors[n][v] for n, v in zip(names, row, strict=True)} for row in rows]


def uncovered_tuples(
    rows: Sequence[Mapping[str, Any]], factors: Mapping[str, Sequence[Any]], strength: int
) -> list:
    """The `strength`-tuples of values no row holds (empty for a covering array)."""
    missing = []
    for combo in itertools.combinations(factors, strength):
        for vals in itertools.product(*(factors[n] for n in combo)):
            if not any(all(r[n] == v for n, v in zip(combo, vals, strict=True)) for r in rows):
                missing.append(dict(zip(combo, vals, strict=True)))
    return missing
