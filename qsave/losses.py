"""The dual-supervision loss: token cross-entropy on the answer plus a level-distribution term.

**Text term** (``ce``): next-token cross-entropy averaged over the labelled (assistant) tokens, the usual
causal-LM loss: the logits at position ``t`` predict the token at ``t + 1``.

**Score term** (``dist``): at each dimension's level slot, where the level word is predicted, the
probabilities ``pₖ`` of the five level tokens *over the whole vocabulary* are pulled towards a soft target
``t`` built from the MOS and the raters' spread: ``Σₖ tₖ (log tₖ − log pₖ)``, averaged over the slots that
have a target. It splits into ``KL(t ‖ q) − log M``: ``q`` is the 5-way *level distribution* (the softmax
over the five level logits only — the read-out of :mod:`qsave.scoring`), ``M = Σₖ pₖ`` the mass the model
puts on level words at the slot. The first part shapes the score; the second makes the model *write* a
level word there. (With the KL part alone the tiny model scored well but, its text term outweighed by
λ, put 3–9 % of the slot's mass on level words and wrote reason codes where levels belong when it
generated an answer; ``docs/learning.md``.) The target is a **discretised Gaussian** over the levels 1..5
(:func:`soft_level_targets`): ``N(MOS, σ²)`` with ``σ = max(rater std, σ_min)`` integrated over the bins
``[k − ½, k + ½]``, the two end bins absorbing the tails (``(−∞, 1.5]`` and ``[4.5, ∞)``), so the
probabilities sum to one and their mean tracks the MOS. ``σ_min`` keeps the target soft where raters
agreed perfectly (std 0) or no std is recorded (NaN). The paper names the loss but not its form; this is
ours, after DeQA-Score's distribution-based training.

``total = ce + λ · dist``; both terms are returned separately so they can be logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qsave.inputs import IGNORE_INDEX
from qsave.schema import LEVELS

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DualLoss:
    """The combined loss (what is back-propagated) and its two terms, as scalar tensors."""

    total: torch.Tensor
    ce: torch.Tensor
    dist: torch.Tensor


def soft_level_targets(mos: torch.Tensor, std: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """Discretised Gaussian over the five levels, shape ``mos.shape + (5,)`` (float32).

    ``σ = max(std, sigma_min)``; a NaN std counts as ``sigma_min``. Rows whose MOS is NaN give NaN targets
    (callers mark them as missing).
    """
    import torch

    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be positive, got {sigma_min}")
    mos = mos.float()
    sigma = torch.nan_to_num(std.float(), nan=sigma_min).clamp(min=sigma_min)
    inner = torch.arange(1.5, len(LEVELS), 1.0, dtype=torch.float32)  # 1.5, 2.5, 3.5, 4.5
    cdf = 0.5 * (1 + torch.erf((inner - mos[..., None]) / (sigma[..., None] * math.sqrt(2.0))))
    zeros = torch.zeros_like(cdf[..., :1])
    edges = torch.cat([zeros, cdf, zeros + 1], dim=-1)
    return edges[..., 1:] - edges[..., :-1]


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled tokens (``labels != -100``), float32."""
    import torch.nn.functional as F

    shifted = labels[:, 1:].reshape(-1)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    if not bool((shifted != IGNORE_INDEX).any()):
        raise ValueError("no labelled tokens in the batch: every answer was masked out")
    return F.cross_entropy(flat, shifted, ignore_index=IGNORE_INDEX)


def slot_level_logprobs(
    logits: torch.Tensor, level_positions: torch.Tensor, level_ids: tuple[int, ...]
) -> torch.Tensor:
    """Log-probabilities (over the whole vocabulary) of the five level tokens where each level word is
    predicted: (batch, dims, 5).

    ``level_positions`` (batch, dims) indexes the level-word tokens in the sequence ``logits`` covers
    (−1: no level there); the prediction is read at ``position − 1``. Missing slots read position 0
    (callers mask them).
    """
    import torch

    read_at = (level_positions - 1).clamp(min=0)
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
    picked = logits[rows, read_at].float()  # (batch, dims, vocab)
    return picked.log_softmax(dim=-1)[..., list(level_ids)]


def level_distribution_loss(
    level_logprobs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean over valid slots of ``Σₖ tₖ (log tₖ − log pₖ)`` with ``pₖ`` the level tokens' probabilities
    over the whole vocabulary: ``KL(target ‖ 5-way level softmax) − log(mass on the level tokens)``;
    zero when no slot is valid."""
    import torch

    safe_targets = torch.where(valid[..., None], targets, torch.ones_like(targets) / targets.shape[-1])
    kl = (torch.special.xlogy(safe_targets, safe_targets) - safe_targets * level_logprobs).sum(dim=-1)
    count = valid.sum()
    if int(count) == 0:
        return level_logprobs.sum() * 0.0
    return (kl * valid).sum() / count


def dual_supervision_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    level_positions: torch.Tensor,
    level_targets: torch.Tensor,
    level_ids: tuple[int, ...],
    lam: float,
) -> DualLoss:
    """``ce + lam · dist`` for a batch.

    ``logits`` (batch, seq, vocab) and ``labels`` (batch, seq) cover the same positions;
    ``level_positions`` (batch, dims) index into them (−1 = no slot); ``level_targets`` (batch, dims, 5) are
    soft targets (NaN rows = no target). A slot counts when it has both a position and a target.
    """
    import torch

    ce = token_cross_entropy(logits, labels)
    valid = (level_positions > 0) & ~torch.isnan(level_targets).any(dim=-1)
    targets = torch.nan_to_num(level_targets.to(logits.device).float(), nan=0.0)
    dist = level_distribution_loss(
        slot_level_logprobs(logits, level_positions, level_ids), targets, valid.to(logits.device)
    )
    return DualLoss(total=ce + lam * dist, ce=ce, dist=dist)
