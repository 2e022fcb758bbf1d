"""The shared I/O kit: every bad input path or CSV shape is one located message and exit 2."""

from __future__ import annotations

import builtins

import numpy as np
import pandas as pd
import pytest

from riskdask import io
from riskdask.errors import InputError


def _csv(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_short_line_is_refused_with_its_row(tmp_path):
    path = _csv(tmp_path, "a,b,c\n1,2,3\n4,5\n6,7,8\n")
    with pytest.raises(InputError) as exc:
        io.read_table(path, what="portfolio")
    assert exc.value.row == 2 and exc.value.file == str(path)
    assert "2 fields, the header has 3" in str(exc.value)
    # pandas alone pads the line with NaN and says nothing: the check is ours
    assert pd.read_csv(path).iloc[1].isna().sum() == 1


def test_a_long_line_and_quoted_commas(tmp_path):
    with pytest.raises(InputError) as exc:
        io.read_table(_csv(tmp_path, "a,b\n1,2\n3,4,5\n"))
    assert exc.value.row == 2
    ok = io.read_table(_csv(tmp_path, 'a,b\n"x, y",2\n# comment\n\n3,4\n', "q.csv"))
    assert ok["a"].tolist() == ["x, y", "3"]


def _file(folder, name, data: bytes | None):
    path = folder / name
    if data is not None:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, data, words", [
    ("missing.csv", None, "not found"),
    ("", None, "is a directory"),
    ("x.xlsx", b"PK", "unsupported type '.xlsx'"),
    ("e.csv", b"", "is empty"),
    ("h.csv", b"a,b\n", "no data rows"),
    ("b.csv", b"a,b\n\xff\xfe,1\n", "not UTF-8"),
])
def test_bad_paths_name_the_file(tmp_path, name, data, words):
    path = _file(tmp_path, name, data) if name else tmp_path
    with pytest.raises(InputError) as exc:
        io.read_table(path, what="panel")
    assert words in str(exc.value) and str(path) in str(exc.value)


def test_an_unreadable_file(tmp_path, monkeypatch):
    path = _csv(tmp_path, "a\n1\n")
    real_open = builtins.open

    def deny(file, *args, **kw):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", deny)  # root reads any mode-000 file, so simulate
    with pytest.raises(InputError) as exc:
        io.read_table(path)
    assert "Permission denied" in str(exc.value) and exc.value.file == str(path)


def test_parquet_round_trip_and_required_columns(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1.5, 2.0]}).to_parquet(path)
    assert io.read_table(path)["a"].tolist() == [1.5, 2.0]
    with pytest.raises(InputError) as exc:
        io.read_table(path, required=["b"])
    assert exc.value.column == "b"


def test_to_numeric_locates_the_first_bad_cell():
    s = pd.Series(["1", " 2.5 ", "", "x"])
    with pytest.raises(InputError) as exc:
        io.to_numeric(s, file="f.csv", column="c")
    assert exc.value.row == 3 and "empty cell" in str(exc.value)
    with pytest.raises(InputError) as exc:
        io.to_numeric(s, file="f.csv", column="c", missing="nan")
    assert exc.value.row == 4 and "'x'" in str(exc.value)
    out = io.to_numeric(s[:3], file="f.csv", column="c", missing="nan")
    np.testing.assert_array_equal(out, [1.0, 2.5, np.nan])
    with pytest.raises(InputError) as exc:
        io.to_numeric(pd.Series([1.0, 2.5]), file="f", column="y", integer=True, rows=[7, 9])
    assert exc.value.row == 9 and "2.5" in str(exc.value) and "np." not in str(exc.value)


@pytest.mark.parametrize("job, key, suffix", [
    ("credit", "portfolio.path", "csv"), ("hazard", "data.path", "csv"),
    ("coup", "data.path", "csv"), ("credit", "matrix.path", "csv")])
def test_every_job_reads_through_the_kit(cli, tmp_path, job, key, suffix):
    """A truncated line, a directory, a wrong extension and an empty file: exit 2 naming the
    file (and the row), from ``validate`` and ``run`` alike, nothing written."""
    short = tmp_path / f"short.{suffix}"
    short.write_text("a,b,c\n1,2,3\n4,5\n")
    empty = tmp_path / f"empty.{suffix}"
    empty.write_text("")
    wrong = tmp_path / "data.xlsx"
    wrong.write_bytes(b"PK\x03\x04")
    for path, words in [(short, "row 2"), (tmp_path, "is a directory"),
                        (wrong, "unsupported type"), (empty, "is empty")]:
        for verb in ("validate", "run"):
            args = [verb, job, "--set", f"{key}={path}"]
            if verb == "run":
                args += ["--out", str(tmp_path / "runs")]
            res = cli(*args)
            assert res.code == 2, (verb, path, res.err)
            lines = res.err.strip().splitlines()
            assert len(lines) == 1 and str(path) in lines[0] and words in lines[0], res.err
    assert not list((tmp_path / "runs").rglob("*"))  # no run, no lock, no temporary folder


def test_coup_reads_parquet_as_it_reads_csv(tmp_path):
    """coup read CSV only; through the kit a Parquet copy of a REIGN file is the same panel."""
    from pathlib import Path

    from riskdask.coup.reign import read_reign_csv, validate_panel
    from riskdask.coup.schema import DEFAULT_NUMERIC_FEATURES

    csv_path = Path(__file__).parent / "data" / "coup_reign_excerpt.csv"
    pq_path = tmp_path / "reign.parquet"
    pd.read_csv(csv_path, low_memory=False).to_parquet(pq_path)
    panels = [validate_panel(read_reign_csv(p), source=str(p),
                             numeric_features=list(DEFAULT_NUMERIC_FEATURES))
              for p in (csv_path, pq_path)]
    pd.testing.assert_frame_equal(panels[0].frame, panels[1].frame)
    assert panels[0].exclusions == panels[1].exclusions and panels[0].n_rows_read == 300
