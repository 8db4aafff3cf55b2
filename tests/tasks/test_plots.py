from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from tasks.plots import _operating_points, write_evaluation_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _labelled_scores(rows: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.05).astype(np.int64)
    y[:2] = (0, 1)
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(-3.0, 1.0, rows) + 2.0 * y)))
    return y, scores


def test_writes_three_valid_png_files(tmp_path: Path) -> None:
    # given
    y, scores = _labelled_scores(5_000, 1)

    # when
    paths = write_evaluation_plots(y, scores, tmp_path)

    # then
    assert paths == {
        "roc": tmp_path / "roc.png",
        "pr": tmp_path / "pr.png",
        "calibration": tmp_path / "calibration.png",
    }
    for path in paths.values():
        content = path.read_bytes()
        assert content[:8] == PNG_SIGNATURE, path
        assert len(content) > 5_000, path


def test_creates_the_output_folder_and_leaves_no_figure_open(tmp_path: Path) -> None:
    # given a folder that does not exist yet
    y, scores = _labelled_scores(2_000, 2)
    out_dir = tmp_path / "run" / "plots"

    # when
    paths = write_evaluation_plots(y, scores, out_dir, ece_bins=5)

    # then
    import matplotlib.pyplot as plt

    assert all(path.parent == out_dir and path.is_file() for path in paths.values())
    assert plt.get_fignums() == []


def test_large_split_is_plotted_from_a_bounded_number_of_exact_points() -> None:
    # given a split far larger than the number of points a curve needs
    y, scores = _labelled_scores(400_000, 3)
    positive = y == 1

    # when
    true_pos, false_pos = _operating_points(positive, scores)

    # then the curve has at most ~2000 points, runs from (0, 0) to (P, N) and never steps back, and its points
    # are exact counts (here: at the highest positive score, which is always one of the thresholds)
    assert true_pos.size <= 2_001
    assert (true_pos[0], false_pos[0]) == (0, 0)
    assert (true_pos[-1], false_pos[-1]) == (positive.sum(), (~positive).sum())
    assert np.all(np.diff(true_pos) >= 0) and np.all(np.diff(false_pos) >= 0)
    flagged = scores >= scores[positive].max()
    point = (np.sum(flagged & positive), np.sum(flagged & ~positive))
    assert point in set(zip(true_pos.tolist(), false_pos.tolist(), strict=True))


def test_large_split_plots_quickly(tmp_path: Path) -> None:
    # given
    y, scores = _labelled_scores(1_000_000, 4)
    write_evaluation_plots(y[:1_000], scores[:1_000], tmp_path / "warm-up")
    import time

    # when
    started = time.perf_counter()
    paths = write_evaluation_plots(y, scores, tmp_path)
    elapsed = time.perf_counter() - started

    # then (a generous bound: it takes ~0.5 s on two cores, plotting all rows would take minutes)
    assert elapsed < 10.0
    assert all(path.read_bytes()[:8] == PNG_SIGNATURE for path in paths.values())


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        (np.zeros(10, dtype=np.int64), np.linspace(0, 1, 10), "both classes"),
        (np.array([0, 1, 0]), np.array([0.1, 0.2]), "3 rows.*2"),
        (np.array([0, 1]), np.array([0.1, 1.5]), "probabilities"),
        (np.array([0, 2]), np.array([0.1, 0.5]), "only 0 and 1"),
    ],
)
def test_invalid_input_raises(tmp_path: Path, y: NDArray[np.int64], scores: NDArray[np.float64], message: str) -> None:
    # when / then
    with pytest.raises(ValueError, match=message):
        write_evaluation_plots(y, scores, tmp_path)
    assert not list(tmp_path.iterdir())
