"""Quality-aware analytic initialisation of the tiny model's vision tower.

A pretrained Qwen3-VL tower already responds to sharpness, noise, compression and motion. A randomly
initialised tiny one does not, and a few hundred clips of SFT do not teach it to: the tower's random
features hold little of the quality signal after its merger, and training the tower with the rest moves
it at random (``docs/learning.md``, runs L–R). So the ``local`` profile starts the tiny tower from an
analytic front end — the same Qwen3-VL modules and shapes, only other starting weights:

* **patch embedding** (a ``Conv3d`` over 2 frames × 16 × 16 px × RGB, one output per temporal patch):
  a filter bank in its first ``channels`` outputs — the three colour means (scaled by ``dc``, so
  brightness does not dominate each token's norm), their change between the two frames (flicker),
  differences across the 8-px block boundary (compression) and at an interior column (control), fine
  and mid high-pass filters (blur, noise, lost detail), temporal differences of smooth and of fine
  structure (motion, freezes, flickering detail) and colour-structure filters; the remaining outputs
  start at zero;
* **the first block's MLP**: for every filter channel after the colour means, a pair of GELU units
  ``(+g·x, −g·x)`` summed into a free residual channel: ``GELU(gx) + GELU(−gx) ≈ g|x|``, a local energy
  detector whose *mean over tokens* — what the language model's attention reads most easily — is a
  Laplacian-energy- or frame-difference-like statistic of the clip;
* **a constant channel**: the patch embedding's last output has bias ``norm_channel`` and no weights, so
  the LayerNorms after it (the first block's, and the merger's) divide every token by a nearly constant
  norm instead of its own: the detectors' absolute energies reach the projector, not only their ratios.

Every other weight keeps Qwen3-VL's random initialisation, and the recipe trains the projector (the
mergers) and the language model with this front end fixed (``vision_lr_multiplier = 0``). One more step
needs data, so stage 1 takes it on its training clips (:func:`calibrate_projector`): the projector's input
LayerNorms are set to standardise each channel, so the merger's random first layer sees the small
energy detectors at the same scale as the colour means. A ridge probe
on the mean of the merged visual tokens of the default corpus goes from held-out SRCC VQ 0.30 / MQ 0.17
(random tower) to 0.66 / 0.52 with this initialisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

LUMA = np.array([0.299, 0.587, 0.114])
COLOUR_MEANS = 6
"""Leading filters: three colour means and three colour changes between the two frames of a patch."""
STD_FLOOR = 0.05
"""Smallest standard deviation :func:`calibrate_projector` divides a channel by."""


@dataclass(frozen=True)
class QualityInit:
    """Shape of the analytic front end (see the module docstring)."""

    channels: int = 32
    """Filter-bank outputs of the patch embedding; the energy detectors use ``channels − 6`` more."""
    dc: float = 0.1
    """Scale of the six colour-mean filters relative to the unit-norm structure filters."""
    gain: float = 2.0
    """``g`` of the energy detectors' GELU pairs (≥ 2 makes them nonlinear on unit-scale inputs)."""
    norm_channel: float = 3.0
    """Bias of the constant last patch-embedding channel (0: none). Stage 1, held-out VQ / MQ / TA /
    overall, mean of seeds 0 and 1: 0.70 / 0.64 / 0.06 / 0.49 with 3, 0.65 / 0.65 / −0.05 / 0.46 without
    (``docs/learning.md``, runs CH, CJ, CK, CL)."""


def _uniform(x: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    from scipy.ndimage import uniform_filter

    return np.asarray(uniform_filter(x, size=size, mode="wrap"), dtype=np.float64)


def filter_bank(channels: int, patch: int, seed: int) -> NDArray[np.float64]:
    """``(channels, 3, 2, patch, patch)`` unit-norm filters, in the order the module docstring lists."""
    if channels < COLOUR_MEANS + 4:
        raise ValueError(f"the filter bank needs at least {COLOUR_MEANS + 4} channels, got {channels}")
    rng = np.random.default_rng(seed)
    ones = np.ones((patch, patch))
    filters: list[NDArray[np.float64]] = []

    def add(first: NDArray[np.float64], second: NDArray[np.float64], colour: NDArray[np.float64]) -> None:
        w = np.einsum("c,thw->cthw", colour, np.stack([first, second]))
        filters.append(w / np.linalg.norm(w))

    for colour in np.eye(3):
        add(ones, ones, colour)
    for colour in np.eye(3):
        add(-ones, ones, colour)
    for column in (patch // 2, patch // 4):  # the 8-px block boundary, then an interior control
        edge = np.zeros((patch, patch))
        edge[:, column], edge[:, column - 1] = 1.0, -1.0
        add(edge, edge, LUMA)
        add(edge.T, edge.T, LUMA)

    def high_pass(size: int) -> NDArray[np.float64]:
        x = rng.standard_normal((patch, patch))
        return x - _uniform(x, size)

    def smooth() -> NDArray[np.float64]:
        x = _uniform(rng.standard_normal((patch, patch)), 4)
        return x - x.mean()

    while len(filters) < channels:
        kind = len(filters) % 5
        if kind == 0:  # fine detail and noise, each frame on its own
            add(high_pass(3), high_pass(3), LUMA)
        elif kind == 1:  # mid-frequency detail, static
            mid = high_pass(5)
            add(mid, mid, LUMA)
        elif kind == 2:  # change of smooth structure between the frames: motion
            s = smooth()
            add(-s, s, LUMA)
        elif kind == 3:  # change of fine structure: frozen frames have none, flickering detail much
            fine = high_pass(3)
            add(-fine, fine, LUMA)
        else:  # colour structure
            s = smooth()
            add(s, s, rng.standard_normal(3))
    return np.stack(filters[:channels])


def apply_quality_init(model: Any, init: QualityInit, seed: int) -> None:
    """Overwrite the patch embedding and the first vision block's MLP of a Qwen3-VL ``model`` in place
    (the random filters are drawn from ``seed``)."""
    import torch

    visual = model.model.visual
    proj = visual.patch_embed.proj
    hidden = int(proj.weight.shape[0])
    mlp = visual.blocks[0].mlp
    units = int(mlp.linear_fc1.weight.shape[0])
    detectors = init.channels - COLOUR_MEANS
    needed = init.channels + detectors + int(init.norm_channel != 0)
    if needed > hidden or 2 * detectors > units:
        raise ValueError(
            f"QualityInit(channels={init.channels}) needs a vision hidden size of at least {needed} and "
            f"{2 * detectors} MLP units; the tower has {hidden} and {units}"
        )
    bank = filter_bank(init.channels, int(proj.weight.shape[-1]), seed)
    bank[:COLOUR_MEANS] *= init.dc
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.zero_()
        proj.weight[: init.channels] = torch.from_numpy(bank).to(proj.weight.dtype)
        proj.bias[-1] = init.norm_channel
        fc1, fc2 = mlp.linear_fc1, mlp.linear_fc2
        fc2.weight[:, : 2 * detectors] = 0.0
        for k in range(detectors):
            source, target = COLOUR_MEANS + k, init.channels + k
            for unit, sign in ((2 * k, 1.0), (2 * k + 1, -1.0)):
                fc1.weight[unit].zero_()
                fc1.weight[unit, source] = sign * init.gain
                fc1.bias[unit] = 0.0
                fc2.weight[target, unit] = 1.0


def vision_tower(model: Any) -> Any:
    """The Qwen3-VL vision tower of ``model`` (unwrapping a peft model)."""
    return (model.get_base_model() if hasattr(model, "get_base_model") else model).model.visual


def projector_norms(visual: Any) -> list[Any]:
    """The LayerNorms at the input of the vision projector: the merger's and each deepstack merger's."""
    return [visual.merger.norm, *(merger.norm for merger in visual.deepstack_merger_list)]


def calibrate_projector(model: Any, batches: Iterable[Mapping[str, Any]], floor: float = STD_FLOOR) -> int:
    """Set the affine of each projector LayerNorm (:func:`projector_norms`) so that its output has mean 0
    and standard deviation 1 per channel over the visual tokens of ``batches`` (model inputs with
    ``pixel_values_videos`` and ``video_grid_thw``, e.g. collated training examples); returns the number
    of patch tokens the merger's LayerNorm saw.

    A data-dependent initialisation of an untrained projector, as LSUV or a BatchNorm's first statistics:
    after the analytic front end the merger's inputs range over a factor of ~20 in scale (the colour means
    dominate, the energy detectors that carry motion and alignment cues are small), and its random
    ``linear_fc1`` sees them at those scales. A channel whose standard deviation is below ``floor`` (the
    constant ones) is divided by ``floor``, not by nearly zero.
    """
    import torch

    visual = vision_tower(model)
    norms = projector_norms(visual)
    weight = next(visual.parameters())
    sums = [torch.zeros(2, int(n.weight.shape[0]), dtype=torch.float64) for n in norms]
    counts = [0] * len(norms)

    def collect(index: int) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            flat = output.detach().reshape(-1, sums[index].shape[1]).double()
            sums[index] += torch.stack([flat.sum(0), (flat * flat).sum(0)])
            counts[index] += flat.shape[0]

        return hook

    hooks = [norm.register_forward_hook(collect(i)) for i, norm in enumerate(norms)]
    try:
        with torch.no_grad():
            for batch in batches:
                pixels = batch["pixel_values_videos"].to(weight.device, weight.dtype)
                visual(pixels, grid_thw=batch["video_grid_thw"].to(weight.device))
    finally:
        for hook in hooks:
            hook.remove()
    if not counts[0]:
        raise ValueError("calibrate_projector got no visual tokens: pass batches with videos")
    with torch.no_grad():
        for norm, (total, squares), count in zip(norms, sums, counts, strict=True):
            mean = total / count
            std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(floor)
            gain, shift = norm.weight.double(), norm.bias.double()
            norm.weight.copy_((gain / std).to(norm.weight.dtype))
            norm.bias.copy_(((shift - mean) / std).to(norm.bias.dtype))
    return counts[0]
