import numpy as np
import pytest
from scipy.stats import spearmanr

from qsave.raters import Rater, RaterPanelConfig, explain, make_panel, rate
from qsave.schema import DIMENSIONS, REASON_DIMENSIONS
from qsave.taxonomy import codes_for, get_reason

N_VIDEOS = 240


def _truth(seed: int = 0) -> tuple[np.ndarray, list[dict[str, float]]]:
    """True scores spread over 1–5 and, for low-VQ videos, a blur artefact that explains them."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(1.0, 5.0, (N_VIDEOS, len(DIMENSIONS)))
    severities = [{"blur": round(float((5.0 - s[0]) / 4.0), 3)} if s[0] < 3.0 else {} for s in scores]
    return scores, severities


def test_screening_removes_a_planted_random_rater_and_keeps_the_honest_ones():
    cfg = RaterPanelConfig(n_raters=10, raters_per_video=8, n_unreliable=0)
    rng = np.random.default_rng(1)
    panel = [*make_panel(cfg, rng), Rater("planted", np.zeros(len(DIMENSIONS)), 0.5, random_share=1.0)]
    scores, severities = _truth()
    result = rate(scores, severities, cfg, rng, panel=panel)
    assert result.kept.tolist() == [True] * 10 + [False]
    assert result.correlation[-1] < 0.3 < 0.7 < result.correlation[:-1].min()


def test_default_panel_screens_its_unreliable_raters():
    cfg = RaterPanelConfig()
    scores, severities = _truth(2)
    result = rate(scores, severities, cfg, np.random.default_rng(3))
    assert not result.kept[-cfg.n_unreliable :].any()
    assert result.kept[: -cfg.n_unreliable].all()


def test_mos_std_and_counts_are_well_formed_and_track_the_truth():
    cfg = RaterPanelConfig()
    scores, severities = _truth(4)
    result = rate(scores, severities, cfg, np.random.default_rng(5))
    assert result.mos.shape == result.std.shape == result.count.shape == (N_VIDEOS, len(DIMENSIONS))
    assert np.all((result.mos >= 1.0) & (result.mos <= 5.0))
    assert np.all(result.std >= 0.0)
    assert np.all((result.count >= 1) & (result.count <= cfg.raters_per_video))
    assert np.all(np.isin(result.ratings[~np.isnan(result.ratings)], [1, 2, 3, 4, 5]))
    for k in range(len(DIMENSIONS)):
        assert spearmanr(result.mos[:, k], scores[:, k])[0] > 0.8


def test_reasons_come_from_low_raters_and_mostly_match_the_true_artefacts():
    scores, severities = _truth(6)
    result = rate(scores, severities, RaterPanelConfig(), np.random.default_rng(7))
    hits = total = 0
    for mos, chosen, truth in zip(result.mos, result.reasons, severities):
        assert set(chosen) == set(REASON_DIMENSIONS)
        for dim in REASON_DIMENSIONS:
            assert set(chosen[dim]) <= set(codes_for(dim))
        if mos[0] >= 4.0:
            assert chosen["vq"] == []
        if truth and mos[0] <= 2.5:
            hits += "blur" in chosen["vq"]
            total += 1
        assert len([c for c in chosen["vq"] if c not in truth]) <= 1
    assert total > 20 and hits / total > 0.8


def test_explanation_names_levels_and_reasons_in_words():
    text = explain([1.8, 4.6, 3.0, 2.6], {"vq": ["blur", "noise"], "mq": [], "ta": []})
    assert text.startswith("Visual quality is poor (1.8/5): raters point to blur (")
    assert get_reason("noise").description in text
    assert "Motion quality is excellent (4.6/5)." in text
    assert "Text-video alignment is fair (3.0/5): raters did not agree on a single cause." in text
    assert text.endswith("Overall quality is fair (2.6/5).")


def test_rating_is_deterministic_for_a_seed():
    scores, severities = _truth(8)
    a = rate(scores, severities, RaterPanelConfig(), np.random.default_rng(9))
    b = rate(scores, severities, RaterPanelConfig(), np.random.default_rng(9))
    np.testing.assert_array_equal(a.mos, b.mos)
    assert a.reasons == b.reasons and a.explanations == b.explanations


def test_inconsistent_panel_settings_are_rejected():
    with pytest.raises(ValueError, match="raters_per_video"):
        RaterPanelConfig(n_raters=5, raters_per_video=6)
    with pytest.raises(ValueError, match="n_unreliable"):
        RaterPanelConfig(n_raters=5, raters_per_video=3, n_unreliable=5)
