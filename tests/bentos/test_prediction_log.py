"""The prediction log: JSON lines, sampled reproducibly, rotated by size."""

from __future__ import annotations

import io
import json
from pathlib import Path

from tasks.prediction_log import PredictionLog, open_prediction_log


def line(index: int) -> dict[str, object]:
    return {"request_id": f"r-{index}", "record": 0, "score": 0.5, "features": {"amount": float(index)}}


def test_lines_are_written_as_json_and_flushed(tmp_path: Path) -> None:
    # given a log in a folder
    log = PredictionLog(tmp_path, buffer_lines=1000)
    # when two lines are written and the log is flushed
    log.write(line(1))
    log.write(line(2))
    log.flush()
    # then the process's file holds them, one JSON object per line
    assert log.path is not None and log.path.parent == tmp_path
    assert [json.loads(text) for text in log.path.read_text().splitlines()] == [line(1), line(2)]
    log.close()


def test_files_rotate_past_the_size_limit_and_old_ones_are_dropped(tmp_path: Path) -> None:
    # given a small size limit and two backups
    log = PredictionLog(tmp_path, max_bytes=200, backups=2, buffer_lines=1)
    # when many lines are written
    for index in range(40):
        log.write(line(index))
    log.close()
    # then there is the current file and at most two rotated ones, none far over the limit
    assert log.path is not None
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([log.path.name, f"{log.path.name}.1", f"{log.path.name}.2"])
    assert all(p.stat().st_size < 400 for p in tmp_path.iterdir())
    # and the newest line is kept while the oldest is gone
    kept = [json.loads(text) for p in tmp_path.iterdir() for text in p.read_text().splitlines()]
    assert line(39) in kept and line(0) not in kept


def test_sampling_is_reproducible_and_near_the_rate(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, sample=0.25)
    picks = [log.sampled(f"req-{i}", 0) for i in range(4000)]
    assert picks == [log.sampled(f"req-{i}", 0) for i in range(4000)]
    assert 0.2 < sum(picks) / len(picks) < 0.3


def test_the_environment_chooses_folder_stdout_or_off(tmp_path: Path) -> None:
    default = open_prediction_log({}, tmp_path)
    assert default is not None and default.folder == tmp_path / "predictions"
    assert open_prediction_log({"SCOREGATE_PREDICTION_LOG": "off"}, tmp_path) is None
    to_stdout = open_prediction_log({"SCOREGATE_PREDICTION_LOG": "-"}, tmp_path)
    assert to_stdout is not None and to_stdout.folder is None


def test_a_stream_log_writes_to_the_stream() -> None:
    stream = io.StringIO()
    log = PredictionLog(None, stream=stream)
    log.write(line(7))
    log.flush()
    assert json.loads(stream.getvalue()) == line(7)


def test_a_failing_write_drops_its_lines_and_the_next_one_starts_over(tmp_path: Path) -> None:
    # given a log between two files (its file closed, as after a rotation) whose folder is then replaced by a file
    # of the same name, so that opening the next file fails as a full or vanished disk would
    folder = tmp_path / "predictions"
    log = PredictionLog(folder, buffer_lines=1)
    log.write({"n": 1})
    log.close()
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    folder.write_text("not a folder", encoding="utf-8")
    # when lines are written, then nothing is raised to the scoring request and the lost lines are counted
    log.write({"n": 2})
    log.write({"n": 3})
    assert log.dropped_lines == 2
    # and once the folder can be made again, writing goes on in a fresh file
    folder.unlink()
    log.write({"n": 4})
    log.close()
    assert log.path is not None
    assert [json.loads(line)["n"] for line in log.path.read_text(encoding="utf-8").splitlines()] == [4]
