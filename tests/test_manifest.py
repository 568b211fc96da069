import math

import pandas as pd
import pytest

from qsave.manifest import ManifestError, dataset_version, normalize, read_manifest, write_manifest
from qsave.schema import MANIFEST_COLUMNS


def _rows():
    return pd.DataFrame(
        {
            "video_id": ["a", "b"],
            "video_path": ["a.mp4", "b.mp4"],
            "prompt": ["a red circle", "two blue squares"],
            "mos_vq": [3.5, None],
            "reasons_vq": ["blur, noise", None],
            "reasons_ta": [["wrong_color"], []],
            "custom": [1, 2],
        }
    )


def test_normalize_adds_columns_keeps_rows_and_extras():
    df = normalize(_rows())
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert list(df["custom"]) == [1, 2]
    assert df.loc[0, "reasons_vq"] == ["blur", "noise"] and df.loc[1, "reasons_vq"] == []
    assert math.isnan(df.loc[1, "mos_vq"]) and math.isnan(df.loc[0, "mos_mq"])
    assert df["n_raters_vq"].tolist() == [0, 0]


def test_normalize_requires_identity_columns():
    with pytest.raises(ManifestError, match="video_path"):
        normalize(pd.DataFrame({"video_id": ["a"], "prompt": ["p"]}))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_roundtrip(tmp_path, suffix):
    path = write_manifest(_rows(), tmp_path / f"m{suffix}")
    back = read_manifest(path)
    assert back["video_id"].tolist() == ["a", "b"]
    assert back.loc[0, "reasons_ta"] == ["wrong_color"]
    assert back.loc[0, "mos_vq"] == 3.5


def test_unsupported_format_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("x")
    with pytest.raises(ManifestError, match="unsupported format"):
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.parquet")


def test_dataset_version_tracks_rows_and_video_bytes(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"one")
    df = _rows()
    v1 = dataset_version(df, tmp_path)
    assert v1 == dataset_version(df.iloc[::-1], tmp_path), "row order does not matter"
    (tmp_path / "a.mp4").write_bytes(b"two")
    v2 = dataset_version(df, tmp_path)
    (tmp_path / "b.mp4").write_bytes(b"now present")
    v3 = dataset_version(df, tmp_path)
    df.loc[0, "prompt"] = "changed"
    v4 = dataset_version(df, tmp_path)
    assert len({v1, v2, v3, v4}) == 4
