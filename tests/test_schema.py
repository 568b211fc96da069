import pytest

from qsave import schema, taxonomy


def test_levels_map_to_scores_and_back():
    assert [schema.level_to_score(lv) for lv in schema.LEVELS] == [1, 2, 3, 4, 5]
    assert schema.level_to_score(" Good ") == 4
    assert [schema.score_to_level(s) for s in (0.2, 1.49, 2.5, 3.51, 4.5)] == [
        "bad",
        "bad",
        "fair",
        "good",
        "excellent",
    ]
    with pytest.raises(ValueError, match="unknown rating level 'great'"):
        schema.level_to_score("great")


def test_low_levels_are_bad_to_fair():
    assert schema.is_low(3.2) and schema.is_low(1.0)
    assert not schema.is_low(3.6)


def test_manifest_columns_cover_every_dimension():
    cols = schema.MANIFEST_COLUMNS
    assert len(cols) == len(set(cols))
    for dim in schema.DIMENSIONS:
        assert {f"mos_{dim}", f"std_{dim}", f"n_raters_{dim}"} <= set(cols)
    assert {f"reasons_{dim}" for dim in schema.REASON_DIMENSIONS} <= set(cols)
    assert "reasons_overall" not in cols


def test_taxonomy_has_described_reasons_for_each_reason_dimension():
    codes = [r.code for r in taxonomy.TAXONOMY]
    assert len(codes) == len(set(codes)), "reason codes must be unique"
    for dim in schema.REASON_DIMENSIONS:
        reasons = taxonomy.reasons_for(dim)
        assert len(reasons) >= 5
        assert all(r.description and r.code.isidentifier() for r in reasons)
    assert taxonomy.is_known("blur", "vq") and not taxonomy.is_known("blur", "mq")
    with pytest.raises(KeyError, match="unknown reason code"):
        taxonomy.get_reason("sparkles")
