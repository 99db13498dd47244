"""Pieces shared by the synthetic generators: seeding, request checks, splits, progress."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

from medexplain.errors import MedexplainError
from medexplain.progress import progress_bar

T = TypeVar("T")

SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
_GENERATOR_KEYS = {"fundus": 0, "deformation": 1, "blobs": 2}
_SAMPLE_STREAM, _SPLIT_STREAM = 0, 1


def check_request(generator: str, n: int, size: int, seed: int, min_size: int, max_size: int) -> None:
    """Refuse impossible requests with one line naming the value (before anything is written)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise MedexplainError(f"n={n!r}: the number of {generator} images must be an integer >= 1")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not min_size <= size <= max_size:
        raise MedexplainError(f"size={size!r}: {generator} images need an integer size in [{min_size}, {max_size}]")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MedexplainError(f"seed={seed!r}: the seed must be an integer >= 0")


def sample_streams(generator: str, seed: int, index: int, count: int) -> list[np.random.Generator]:
    """``count`` independent generators for sample ``index``: they depend on (seed, index) only, never on n."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise MedexplainError(f"index={index!r}: a sample index must be an integer >= 0")
    root = np.random.SeedSequence(seed, spawn_key=(_GENERATOR_KEYS[generator], _SAMPLE_STREAM, index))
    return [np.random.default_rng(child) for child in root.spawn(count)]


def stratified_splits(labels: Sequence[int], generator: str, seed: int) -> tuple[str, ...]:
    """Split names per item, stratified by ``labels``: each class is shuffled, then cut 70 / 15 / 15 %.

    Per class of m items, round(0.15 m) go to val, round(0.15 m) to test and the rest to train (so a class with
    fewer than 4 items is all train).
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_GENERATOR_KEYS[generator], _SPLIT_STREAM)))
    labels = np.asarray(labels)
    splits = np.empty(len(labels), dtype=object)
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        n_val = int(np.floor(SPLIT_FRACTIONS["val"] * len(members) + 0.5))
        n_test = int(np.floor(SPLIT_FRACTIONS["test"] * len(members) + 0.5))
        splits[members[:n_val]] = "val"
        splits[members[n_val : n_val + n_test]] = "test"
        splits[members[n_val + n_test :]] = "train"
    return tuple(str(name) for name in splits)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float intensities in [0, 1] -> uint8 (rounded, clipped)."""
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def progress(items: Iterable[T], total: int, description: str, enabled: bool) -> Iterator[T]:
    """Iterate ``items`` behind a progress bar on stderr when ``enabled``."""
    with progress_bar(enabled) as bar:
        yield from bar.track(items, total=total, description=description)
