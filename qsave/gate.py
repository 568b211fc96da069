"""The promotion gate: does a trained model beat its thresholds and not regress against the champion?

Pure decision logic on flat metrics keyed ``srcc_<dim>`` / ``plcc_<dim>`` (the keys of
:meth:`qsave.evaluation.Evaluation.flat` and the registry's model-version tags). A model passes when, for
every gated dimension, SRCC and PLCC are finite and at least their thresholds, **and** — when a champion
exists — neither drops more than ``max_regression`` below the champion's value on the same evaluation split.
The first model (no champion) is gated on thresholds only. :mod:`qsave.registry` applies the decision
(tags and aliases); the workflow's ``conditional`` reads :attr:`GateDecision.passed`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from qsave.schema import DIMENSIONS

GATED_METRICS = ("srcc", "plcc")


@dataclass(frozen=True)
class GateConfig:
    """Thresholds and tolerance. Defaults are production bars for a pretrained 8B assessor; the tiny
    offline model does not reach them (see DESIGN.md facts), so local runs pass lower ones."""

    min_srcc: float = 0.5
    min_plcc: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)
    """Per-key overrides, e.g. ``{"srcc_ta": 0.3}``; keys are ``<srcc|plcc>_<dim>``."""
    max_regression: float = 0.02
    """How far SRCC/PLCC may fall below the champion's on the same split before the gate fails."""
    dimensions: tuple[str, ...] = DIMENSIONS
    auto_promote: bool = False
    """Passing models become ``champion`` at once (otherwise ``challenger``, promoted by review)."""

    def threshold(self, key: str) -> float:
        if key in self.thresholds:
            return self.thresholds[key]
        return self.min_srcc if key.startswith("srcc_") else self.min_plcc

    def gated_keys(self) -> tuple[str, ...]:
        return tuple(f"{metric}_{dim}" for dim in self.dimensions for metric in GATED_METRICS)


@dataclass(frozen=True)
class GateDecision:
    """``passed`` and, when it did not, one human-readable reason per failed check."""

    passed: bool
    reasons: tuple[str, ...]
    champion_version: str | None = None

    def summary(self) -> str:
        against = f" (against champion v{self.champion_version})" if self.champion_version else ""
        if self.passed:
            return f"passed{against}"
        return f"failed{against}: " + "; ".join(self.reasons)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def decide(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    cfg: GateConfig,
    champion_version: str | None = None,
) -> GateDecision:
    """Gate ``candidate`` against the thresholds and, when given, the champion's metrics on the same split."""
    reasons: list[str] = []
    for key in cfg.gated_keys():
        value = candidate.get(key)
        if not _finite(value):
            reasons.append(f"{key} is {value} (not evaluated or undefined)")
            continue
        assert value is not None
        bar = cfg.threshold(key)
        if value < bar:
            reasons.append(f"{key} {value:.4f} < threshold {bar:.4f}")
        if champion is None:
            continue
        best = champion.get(key)
        if not _finite(best):
            continue  # the champion has no defined value here: nothing to regress against
        assert best is not None
        if value < best - cfg.max_regression:
            reasons.append(
                f"{key} {value:.4f} regresses {best - value:.4f} below champion's {best:.4f} "
                f"(tolerance {cfg.max_regression:.4f})"
            )
    return GateDecision(passed=not reasons, reasons=tuple(reasons), champion_version=champion_version)
