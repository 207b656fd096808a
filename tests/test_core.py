import math

import pytest
import torch

from priorlab.core import (
    Denoiser,
    add_noise,
    check_images,
    denoising_loss,
    psnr_in_from_sigma,
    sample_sigmas,
    sigma_from_255,
    sigma_to_255,
    sigma_to_variance,
)


def test_unit_conversions_round_trip():
    assert sigma_from_255(25.0) == pytest.approx(25 / 255)
    assert sigma_to_255(sigma_from_255(37.5)) == pytest.approx(37.5)
    assert sigma_to_variance(0.1) == pytest.approx(0.01)
    # algorithms.md §1.3 table: σ255 = 25 -> PSNR_in 20.17 dB
    assert psnr_in_from_sigma(25 / 255) == pytest.approx(20.17, abs=0.01)


@pytest.mark.parametrize("schedule", ["uniform", "log_uniform", "quadratic"])
def test_sample_sigmas_in_range_and_reproducible(schedule):
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = sample_sigmas(10_000, 0.01, 0.4, schedule=schedule, generator=g1)
    s2 = sample_sigmas(10_000, 0.01, 0.4, schedule=schedule, generator=g2)
    assert torch.equal(s1, s2)
    assert s1.min() >= 0.01 - 1e-7 and s1.max() <= 0.4 + 1e-7


def test_sigma_schedules_have_their_shape():
    g = torch.Generator().manual_seed(0)
    uni = sample_sigmas(50_000, 0.0, 1.0, schedule="uniform", generator=g)
    quad = sample_sigmas(50_000, 0.0, 1.0, schedule="quadratic", generator=g)
    logu = sample_sigmas(50_000, 1e-3, 1.0, schedule="log_uniform", generator=g)
    assert uni.median().item() == pytest.approx(0.5, abs=0.01)
    assert quad.median().item() == pytest.approx(0.25, abs=0.01)  # σ = U², median 0.5² (§2.6)
    assert logu.log().median().item() == pytest.approx(0.5 * math.log(1e-3), abs=0.05)


def test_sample_sigmas_rejects_bad_ranges():
    with pytest.raises(ValueError):
        sample_sigmas(2, 0.5, 0.1)
    with pytest.raises(ValueError):
        sample_sigmas(2, 0.0, 0.1, schedule="log_uniform")
    with pytest.raises(ValueError):
        sample_sigmas(2, 0.0, 0.1, schedule="cosine")


def test_add_noise_has_requested_std_per_image():
    x = torch.zeros(3, 1, 64, 64)
    sigma = torch.tensor([0.0, 0.1, 0.3])
    y, noise = add_noise(x, sigma, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, noise)
    stds = noise.flatten(1).std(dim=1)
    assert stds[0] == 0
    assert stds[1:].tolist() == pytest.approx([0.1, 0.3], rel=0.05)
    with pytest.raises(ValueError):
        add_noise(x, torch.tensor([0.1, 0.2]))


def test_denoising_loss_is_per_sample_mse():
    a, b = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    b[1] = 2.0
    loss = denoising_loss(a, b)
    assert loss.shape == (2,)
    assert loss.tolist() == [0.0, 4.0]
    with pytest.raises(ValueError):
        denoising_loss(a, b[:, :, :3])


def test_check_images_errors():
    ok = torch.rand(1, 3, 8, 8)
    assert check_images(ok, channels=3) is ok
    with pytest.raises(TypeError):
        check_images(ok.to(torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        check_images(ok[0])
    with pytest.raises(ValueError, match="channel"):
        check_images(ok, channels=1)
    with pytest.raises(ValueError, match="minimum size"):
        check_images(ok, min_size=16)
    bad = ok.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_images(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_images(ok * 2, check_range=True)


def test_denoiser_protocol_is_structural():
    assert isinstance(lambda y, sigma=None: y, Denoiser)
