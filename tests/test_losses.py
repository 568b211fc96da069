"""Dual-supervision loss on hand-made logits: soft targets, cross-entropy, the score term at the level slots
(5-way KL plus the mass on level words), masking."""

from __future__ import annotations

import math

import pytest
import torch

from qsave.losses import (
    dual_supervision_loss,
    level_distribution_loss,
    slot_level_logprobs,
    soft_level_targets,
    token_cross_entropy,
)

LEVEL_IDS = (2, 3, 4, 5, 6)  # a vocabulary of 8 tokens; ids 2..6 are the five level words


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_soft_target_is_the_gaussian_integrated_over_level_bins() -> None:
    # MOS 3, σ 0.5: bin edges at ±1 and ±3 standard deviations from the mean.
    [target] = soft_level_targets(torch.tensor([3.0]), torch.tensor([0.5]), sigma_min=0.1).tolist()
    tail, shoulder = phi(-3), phi(-1) - phi(-3)
    assert target == pytest.approx([tail, shoulder, 1 - 2 * phi(-1), shoulder, tail], abs=1e-6)
    assert target == pytest.approx([0.0013499, 0.1573053, 0.6826895, 0.1573053, 0.0013499], abs=1e-6)


def test_soft_target_uses_sigma_min_for_zero_or_missing_std_and_end_bins_take_the_tails() -> None:
    targets = soft_level_targets(torch.tensor([5.0, 5.0]), torch.tensor([0.0, float("nan")]), sigma_min=0.25)
    for target in targets.tolist():
        # N(5, 0.25²): p(excellent) = P(x ≥ 4.5) includes everything above 5; p(good) = P(3.5 ≤ x < 4.5).
        assert target[4] == pytest.approx(1 - phi(-2), abs=1e-6)
        assert target[3] == pytest.approx(phi(-2) - phi(-6), abs=1e-6)
        assert sum(target) == pytest.approx(1.0, abs=1e-6)


def test_soft_target_rejects_a_non_positive_sigma_min() -> None:
    with pytest.raises(ValueError, match="sigma_min"):
        soft_level_targets(torch.tensor([3.0]), torch.tensor([0.5]), sigma_min=0.0)


def hand_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sequence of 3 tokens: position 0 predicts token 1 (uniform logits), position 1 predicts the
    level word ``fair`` (id 4) with logit ln 2 on it and 0 elsewhere."""
    logits = torch.zeros(1, 3, 8)
    logits[0, 1, 4] = math.log(2.0)
    labels = torch.tensor([[-100, 1, 4]])
    positions = torch.tensor([[2]])  # the level word sits at index 2; its logits are read at index 1
    return logits, labels, positions


def test_token_cross_entropy_by_hand() -> None:
    logits, labels, _ = hand_batch()
    # position 0: uniform over 8 → ln 8; position 1: p(4) = 2 / (7·1 + 2) → ln 4.5.
    expected = (math.log(8) + math.log(4.5)) / 2
    assert float(token_cross_entropy(logits, labels)) == pytest.approx(expected, abs=1e-6)


def test_token_cross_entropy_refuses_a_batch_without_labels() -> None:
    logits, _, _ = hand_batch()
    with pytest.raises(ValueError, match="no labelled tokens"):
        token_cross_entropy(logits, torch.full((1, 3), -100))


def test_level_logprobs_are_read_one_position_before_the_level_word_over_the_whole_vocabulary() -> None:
    logits, _, positions = hand_batch()
    read = slot_level_logprobs(logits, positions, LEVEL_IDS)
    assert read.shape == (1, 1, 5)
    # softmax over 8 logits, one of them ln 2: Z = 9
    assert read[0, 0].exp().tolist() == pytest.approx([1 / 9, 1 / 9, 2 / 9, 1 / 9, 1 / 9])


def test_dual_loss_by_hand() -> None:
    logits, labels, positions = hand_batch()
    # level softmax q = [1, 1, 2, 1, 1] / 6; target [¼, ¼, ½, 0, 0] → KL = ½ ln(¼·6) + ½ ln(½·3) = ln 1.5;
    # the level words hold M = 6/9 of the slot's mass → dist = KL − ln M = ln 1.5 + ln 1.5
    targets = torch.tensor([[[0.25, 0.25, 0.5, 0.0, 0.0]]])
    loss = dual_supervision_loss(logits, labels, positions, targets, LEVEL_IDS, lam=0.5)
    ce = (math.log(8) + math.log(4.5)) / 2
    assert float(loss.ce) == pytest.approx(ce, abs=1e-6)
    assert float(loss.dist) == pytest.approx(2 * math.log(1.5), abs=1e-6)
    assert float(loss.total) == pytest.approx(ce + 0.5 * 2 * math.log(1.5), abs=1e-6)


def test_score_term_is_zero_only_when_the_level_probabilities_equal_the_target() -> None:
    target = soft_level_targets(torch.tensor([[2.3]]), torch.tensor([[0.7]]), sigma_min=0.3)
    valid = torch.tensor([[True]])
    assert float(level_distribution_loss(target.log(), target, valid)) == pytest.approx(0.0, abs=1e-6)
    # the same level distribution with only half the mass on level words costs ln 2
    half = level_distribution_loss((target / 2).log(), target, valid)
    assert float(half) == pytest.approx(math.log(2.0), abs=1e-6)


def test_slots_without_position_or_target_are_left_out_of_the_mean() -> None:
    logits, labels, _ = hand_batch()
    positions = torch.tensor([[2, -1, 2]])  # the second slot is missing in the answer
    targets = torch.tensor(
        [[[0.25, 0.25, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [float("nan")] * 5]]  # third: no MOS
    )
    loss = dual_supervision_loss(logits, labels, positions, targets, LEVEL_IDS, lam=1.0)
    assert float(loss.dist) == pytest.approx(2 * math.log(1.5), abs=1e-6)


def test_no_valid_slot_gives_a_zero_score_term_that_still_backpropagates() -> None:
    logits, labels, _ = hand_batch()
    logits.requires_grad_(True)
    loss = dual_supervision_loss(
        logits, labels, torch.tensor([[-1]]), torch.full((1, 1, 5), 0.2), LEVEL_IDS, lam=1.0
    )
    assert float(loss.dist.detach()) == 0.0
    loss.total.backward()
    assert logits.grad is not None


def test_the_score_term_moves_only_the_logits_at_the_slot() -> None:
    logits, labels, positions = hand_batch()
    logits.requires_grad_(True)
    targets = torch.tensor([[[0.25, 0.25, 0.5, 0.0, 0.0]]])
    dual_supervision_loss(logits, labels, positions, targets, LEVEL_IDS, lam=1.0).dist.backward()
    assert logits.grad is not None
    grad = logits.grad[0]
    assert float(grad[0].abs().sum()) == 0.0 and float(grad[2].abs().sum()) == 0.0
    # d/d logit of −Σ t log p = p − t over the whole vocabulary (t = 0 off the level words): the level
    # logits move towards the target, every other logit at the slot down
    assert grad[1, list(LEVEL_IDS)].tolist() == pytest.approx(
        [1 / 9 - 0.25, 1 / 9 - 0.25, 2 / 9 - 0.5, 1 / 9, 1 / 9], abs=1e-6
    )
    others = [i for i in range(8) if i not in LEVEL_IDS]
    assert grad[1, others].tolist() == pytest.approx([1 / 9] * len(others), abs=1e-6)
