"""Train / validation / test split: by time when the data has a timestamp, stratified at random otherwise.

Time-stamped data is never split at random: a random split lets the model learn from the future of the rows it is
tested on, which flatters every metric that promotion gates on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from tasks.config import SplitSpec

__all__ = ["Split", "SplitError", "split_by_time", "split_stratified"]

IndexArray = npt.NDArray[np.int64]


class SplitError(ValueError):
    """A split that cannot train or evaluate a model (empty, or one class only)."""


@dataclass(frozen=True)
class Split:
    train: IndexArray
    valid: IndexArray
    test: IndexArray
    method: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    def check(self, labels: npt.NDArray[np.int8]) -> None:
        for name, index in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            if len(index) == 0:
                raise SplitError(f"the {name} split is empty: more rows (or a longer time span) are needed")
            positives = int(labels[index].sum())
            if positives == 0 or positives == len(index):
                raise SplitError(
                    f"the {name} split ({len(index)} rows, {positives} positive) holds one class only: "
                    "more rows or more positives are needed"
                )


def split_by_time(timestamps: pl.Series, spec: SplitSpec) -> Split:
    """Cut at timestamps so that every training row is earlier than every validation row, and so on."""
    t = timestamps.dt.epoch("us").to_numpy()
    ordered = np.sort(t)
    n = len(ordered)
    cut_valid = ordered[min(int(n * spec.train), n - 1)]
    cut_test = ordered[min(int(n * (spec.train + spec.valid)), n - 1)]
    positions = np.arange(n, dtype=np.int64)
    train = positions[t < cut_valid]
    valid = positions[(t >= cut_valid) & (t < cut_test)]
    test = positions[t >= cut_test]
    return Split(train=train, valid=valid, test=test, method="time")


def split_stratified(labels: npt.NDArray[np.int8], spec: SplitSpec, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    parts: dict[str, list[IndexArray]] = {"train": [], "valid": [], "test": []}
    for cls in (0, 1):
        members = np.flatnonzero(labels == cls).astype(np.int64)
        rng.shuffle(members)
        first = round(len(members) * spec.train)
        second = first + round(len(members) * spec.valid)
        parts["train"].append(members[:first])
        parts["valid"].append(members[first:second])
        parts["test"].append(members[second:])
    joined = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    return Split(train=joined["train"], valid=joined["valid"], test=joined["test"], method="stratified")
