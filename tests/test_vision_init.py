"""The analytic quality-aware front end of the tiny vision tower."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from qsave.inputs import build_inputs
from qsave.modeling import TinyModelConfig, build_tiny, load_model
from qsave.slowfast import Pathway
from qsave.vision_init import (
    COLOUR_MEANS,
    STD_FLOOR,
    QualityInit,
    apply_quality_init,
    calibrate_projector,
    filter_bank,
    projector_norms,
)


def test_filter_bank_is_deterministic_unit_norm_and_structured() -> None:
    bank = filter_bank(32, 16, seed=0)
    assert bank.shape == (32, 3, 2, 16, 16)
    np.testing.assert_allclose(np.linalg.norm(bank.reshape(32, -1), axis=1), 1.0)
    np.testing.assert_array_equal(bank, filter_bank(32, 16, seed=0))
    assert not np.array_equal(bank, filter_bank(32, 16, seed=1))
    # after the colour means, every filter ignores a flat patch (zero response to a constant colour)
    flat = np.ones((3, 2, 16, 16))
    responses = (bank * flat).reshape(32, -1).sum(axis=1)
    assert np.all(np.abs(responses[COLOUR_MEANS:]) < 1e-9)
    assert np.all(np.abs(responses[:3]) > 1.0)
    with pytest.raises(ValueError, match="at least"):
        filter_bank(8, 16, seed=0)


def _first_block_output(model: Any, processor: Any, frames: np.ndarray) -> torch.Tensor:
    """Residual stream after the first vision block for one clip of ``(T, H, W, 3)`` uint8 frames, fed
    through the project's one input path (:func:`qsave.inputs.build_inputs`)."""
    n = frames.shape[0]
    segment = Pathway(
        frames, np.arange(n), np.arange(n) / 8.0, 8.0, 8.0, n // 2 * (frames.shape[1] // 32) ** 2
    )
    batch = build_inputs(processor, [segment], [""])
    captured: dict[str, torch.Tensor] = {}
    visual = model.model.visual
    hook = visual.blocks[0].register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out))
    with torch.no_grad():
        visual(batch.model_kwargs["pixel_values_videos"], grid_thw=batch.model_kwargs["video_grid_thw"])
    hook.remove()
    return captured["out"]


def test_energy_detectors_see_detail_and_change(tmp_path: Any) -> None:
    model, processor = load_model(str(build_tiny(TinyModelConfig(), tmp_path / "quality")))
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    sharp = np.repeat(texture, 4, axis=0)
    from scipy.ndimage import uniform_filter

    blurred = uniform_filter(sharp.astype(float), size=(1, 5, 5, 1)).round().astype(np.uint8)
    moving = np.stack([np.roll(texture[0], 3 * i, axis=1) for i in range(4)])
    channels = QualityInit().channels
    detectors = slice(channels, 2 * channels - COLOUR_MEANS)

    def energy(frames: np.ndarray) -> float:
        return float(_first_block_output(model, processor, frames)[:, detectors].mean())

    assert energy(sharp) > energy(blurred) + 0.05
    assert energy(moving) > energy(sharp) + 0.05


def test_random_init_is_qwen3_vl_default_and_unknown_init_fails(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="vision_init"):
        TinyModelConfig(vision_init="pretrained")
    random_model, _ = load_model(str(build_tiny(TinyModelConfig(vision_init="random"), tmp_path / "r")))
    weight = random_model.model.visual.patch_embed.proj.weight
    assert bool((weight.abs().sum(dim=(1, 2, 3, 4)) > 0).all())  # no zeroed channel
    assert TinyModelConfig(vision_init="random").config_hash() != TinyModelConfig().config_hash()


def test_quality_init_refuses_a_tower_too_narrow(tmp_path: Any) -> None:
    model, _ = load_model(str(build_tiny(TinyModelConfig(vision_init="random"), tmp_path / "narrow")))
    hidden = model.config.vision_config.hidden_size  # filters + as many energy channels > hidden
    with pytest.raises(ValueError, match="hidden size"):
        apply_quality_init(model, QualityInit(channels=hidden // 2 + 8), seed=0)


def test_the_constant_channel_holds_its_bias_for_every_patch(tmp_path: Any) -> None:
    """The last patch-embedding output is ``norm_channel`` whatever the pixels (no weights, only the
    bias), so the LayerNorms after it divide by a nearly constant norm; 0 turns it off."""
    model, _ = load_model(str(build_tiny(TinyModelConfig(), tmp_path / "quality")))
    proj = model.model.visual.patch_embed.proj
    patches = torch.randn(5, proj.in_channels, *proj.kernel_size)
    with torch.no_grad():
        last = proj(patches).flatten(1)[:, -1]
    assert torch.allclose(last, torch.full_like(last, QualityInit().norm_channel))
    assert QualityInit().norm_channel > 0
    off, _ = load_model(str(build_tiny(TinyModelConfig(vision_init="random"), tmp_path / "off")))
    apply_quality_init(off, QualityInit(norm_channel=0.0), seed=0)
    assert float(off.model.visual.patch_embed.proj.bias.abs().max()) == 0.0


def test_calibrate_projector_standardises_every_merger_input(tmp_path: Any) -> None:
    """After calibration the projector's LayerNorms give mean 0 and std 1 per channel on the clips they
    were calibrated on (the constant channels, below the floor, are only centred)."""
    model, processor = load_model(str(build_tiny(TinyModelConfig(), tmp_path / "quality")))
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8) for _ in range(3)]
    segments = [Pathway(c, np.arange(4), np.arange(4) / 8.0, 8.0, 8.0, 8) for c in clips]
    batches = [build_inputs(processor, [s], [""]).model_kwargs for s in segments]
    norms = projector_norms(model.model.visual)
    assert len(norms) == 1 + len(model.model.visual.deepstack_merger_list) == 2
    outputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(norms))}
    for i, norm in enumerate(norms):
        norm.register_forward_hook(lambda _m, _i, out, i=i: outputs[i].append(out.reshape(-1, out.shape[-1])))

    tokens = calibrate_projector(model, batches)
    assert tokens == 3 * 2 * (64 // 16) ** 2  # clips × temporal patches × 16-px patches per frame
    raw = {i: torch.cat(v) for i, v in outputs.items()}
    for values in outputs.values():
        values.clear()
    with torch.no_grad():
        for batch in batches:
            model.model.visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"])
    for i, before in raw.items():
        after = torch.cat(outputs[i])
        varying = before.std(0, unbiased=False) >= STD_FLOOR
        assert varying.sum() > 10
        torch.testing.assert_close(after.mean(0), torch.zeros_like(after[0]), atol=1e-4, rtol=0)
        std = after.std(0, unbiased=False)
        torch.testing.assert_close(std[varying], torch.ones_like(std[varying]), atol=1e-3, rtol=0)
        assert bool((std[~varying] < 1).all())
    with pytest.raises(ValueError, match="no visual tokens"):
        calibrate_projector(model, [])
