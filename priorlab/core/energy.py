"""Normalized energy models: scores by autograd, the normalization constant, log-probabilities (algorithms.md §7).

An energy U(y, t) ≈ −log p(y, t) + const, with t = σ² the noise variance, gives

* its scores by autograd: ∇_y U (data score) and ∂_t U (time score, derivative in the variance t);
* its denoiser D(y, t) = y − t∇_y U(y, t) (Miyasawa, §1.5), which satisfies the ``Denoiser`` contract;
* a normalized log-density of clean images, log p(x) = −(U(x, 0) + C), once the single constant C is
  fixed at a large noise level t_max where p(·, t_max) ≈ N(μ, t_max·I) (§7.4):
  C = (d/2)·ln(2πe·t_max) − E_y[U(y, t_max)]. C depends on d = C·H·W, so it is recorded with the image
  shape it was calibrated for, and ``log_prob`` refuses other shapes (the denoiser takes any valid size).

:class:`NormalizedEnergy` is a mixin for ``nn.Module`` energies that implement ``energy(y, t)``; the
learned network (``priorlab.zoo.energy_unet.EnergyNet``) and the analytic :class:`GaussianEnergy` share
this one code path, so exact tests of the analytic energy test the network's normalization too.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from priorlab.core.gaussian_field import GaussianField
from priorlab.core.protocols import check_image_shape

DEFAULT_T_MAX = 1e3  # PSNR_in = −30 dB, data variance ≈ 0.07 ≪ t_max (algorithms.md §7.4)


def energy_denoiser(model, *, differentiable: bool = False) -> Callable[..., torch.Tensor]:
    """The denoiser of any ``EnergyModel``: x̂(y) = y − t∇_y U(y, t) with t = σ² (algorithms.md §1.5).

    The gradient is taken with autograd (``torch.enable_grad`` inside, so it also works under
    ``no_grad``); σ (a float or one per image, (B,)) is required.

    Args:
        model: anything with ``energy(y, t) -> (B,)``.
        differentiable: keep the graph (``create_graph=True``), so that the output can be
            differentiated again in y, e.g. for the divergence of the probability-flow ODE; otherwise
            the output is detached.
    """

    if not callable(getattr(model, "energy", None)):
        raise TypeError(f"energy_denoiser needs an energy model (with energy(y, t)), got {type(model).__name__}; "
                        "a denoiser network is used as it is")

    def denoise(y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        if sigma is None:
            raise ValueError("an energy model's denoiser needs the noise level sigma")
        if isinstance(sigma, (int, float)) and not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"the noise level sigma must be finite and >= 0, got {sigma}")
        t = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).expand(y.shape[0]) ** 2
        with torch.enable_grad():
            yy = y if (differentiable and y.requires_grad) else y.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(model.energy(yy, t).sum(), yy, create_graph=differentiable)
        out = yy - t.view(-1, 1, 1, 1) * grad
        return out if differentiable else out.detach()

    return denoise


@dataclass(frozen=True)
class Calibration:
    """Result of fixing the normalization constant C (algorithms.md §7.4).

    Attributes:
        log_norm_const: C in nats, added to U(x, 0) to give −log p(x).
        stderr: Monte-Carlo standard error of C in nats (it enters every log-probability).
        t_max: noise variance at which the Gaussian limit was taken.
        num_images: number of noisy images in the average E_y[U(y, t_max)].
    """

    log_norm_const: float
    stderr: float
    t_max: float
    num_images: int


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """float32 without TF32 and without autocast, for energies and log-probabilities (ecosystem.md §7).

    TF32 convolutions shift per-image energies by ~1e-2 nats and bf16 autocast by nats; evaluation
    therefore switches both off and restores the caller's settings afterwards.
    """
    if _NEW_TF32_API:
        # torch >= 2.9: the per-backend fp32_precision flags. Reading the legacy flags (allow_tf32,
        # get_float32_matmul_precision) raises once a user has set these, so only these are touched.
        # cuDNN and CUDA matmuls (TF32), and oneDNN on the CPU (bf16 matmuls/convolutions when enabled).
        mkldnn = [getattr(torch.backends.mkldnn, k, None) for k in ("matmul", "conv", "rnn")]
        flags = (torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul,
                 *(f for f in mkldnn if hasattr(f, "fp32_precision")))
        saved = [f.fp32_precision for f in flags]
        try:
            for f in flags:
                f.fp32_precision = "ieee"
            with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
                yield
        finally:
            for f, value in zip(flags, saved, strict=True):
                f.fp32_precision = value
        return
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    matmul_precision = torch.get_float32_matmul_precision()
    try:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        torch.set_float32_matmul_precision(matmul_precision)


_NEW_TF32_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision") and hasattr(
    torch.backends.cuda.matmul, "fp32_precision")


def tf32_enabled() -> bool:
    """Whether the flags that :func:`full_precision` switches off allow TF32 for cuDNN convolutions or CUDA
    matmuls now (the per-backend ``fp32_precision`` flags on torch >= 2.9, else the legacy ``allow_tf32``)."""
    if _NEW_TF32_API:
        return "tf32" in (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


def gaussian_entropy(dims: int, t: float) -> float:
    """Differential entropy (d/2)·ln(2πe·t) in nats of N(μ, t·I) in d dimensions."""
    return 0.5 * dims * math.log(2.0 * math.pi * math.e * t)


def log_norm_const_from_energies(energies: torch.Tensor, dims: int, t_max: float) -> tuple[float, float]:
    """C = (d/2)·ln(2πe·t_max) − mean(U(y, t_max)) and its standard error (algorithms.md §7.4).

    Args:
        energies: U(y, t_max) of noisy images, shape (n,), nats.
        dims: d = C·H·W.
        t_max: the noise variance of those images.

    Returns:
        (C, standard error of C), both in nats.
    """
    u = energies.detach().double().flatten()
    if u.numel() == 0:
        raise ValueError("no energies to calibrate with")
    if not torch.isfinite(u).all():
        raise ValueError("energies at t_max contain NaN or infinity; the model cannot be normalized")
    stderr = float(u.std(unbiased=True)) / math.sqrt(u.numel()) if u.numel() > 1 else float("nan")
    return gaussian_entropy(dims, t_max) - float(u.mean()), stderr


def check_quantized(x: torch.Tensor, levels: int = 256, *, name: str = "images") -> torch.Tensor:
    """Require images on the grid k/(levels − 1) in [0, 1] (the 8-bit convention of bits/dim, §7.4).

    Raises:
        ValueError: values outside [0, 1] or off the grid (e.g. already noisy, or 16-bit data).
    """
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name} must lie in [0, 1] for {levels}-level bits/dim, got "
                         f"[{x.min().item():.3g}, {x.max().item():.3g}]")
    scaled = x.double() * (levels - 1)
    err = (scaled - scaled.round()).abs().max().item()
    if err > 1e-3:
        raise ValueError(f"{name} are not {levels}-level data (values k/{levels - 1}; largest deviation "
                         f"{err:.3g} levels): bits/dim with +log2({levels}) assumes {math.log2(levels):g}-bit "
                         "images; pass levels=None to report the continuous density instead")
    return x


def _t_column(t: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """t as a (B,) tensor of ``like``'s dtype and device (a float broadcasts)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a float or have shape ({batch},), got {tuple(t.shape)}")
    return t


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class NormalizedEnergy:
    """Mixin for ``nn.Module`` energies: scores, denoiser, calibration and ``log_prob``.

    The class mixing it in implements ``energy(y, t) -> (B,)`` in nats and calls
    :meth:`_init_normalization` in its constructor, which registers two buffers (saved in the state dict, so
    in Lightning checkpoints and in ``model.safetensors``):

    * ``log_norm_const``: C in nats, float64, NaN until :meth:`calibrate` sets it;
    * ``log_norm_shape``: the image shape (C, H, W) that C was calibrated for, int64, zeros when unknown.
      C holds for one dimension d = C·H·W only (§7.4), so ``log_prob`` refuses other shapes.

    State dicts written before ``log_norm_shape`` existed still load (strictly otherwise): the shape is then
    unknown, and :attr:`calibration_shape` falls back to a ``calibration_shape`` key of the attached
    ``prior_config`` (the prior's config.json), as the bundled priors carry.
    """

    log_norm_const: torch.Tensor
    log_norm_shape: torch.Tensor

    def _init_normalization(self, shape: tuple[int, int, int] | None = None) -> None:
        assert isinstance(self, nn.Module)
        self.register_buffer("log_norm_const", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("log_norm_shape", torch.zeros(3, dtype=torch.int64))
        if shape is not None:
            self.calibration_shape = shape

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        key = prefix + "log_norm_shape"
        legacy = key not in state_dict
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,  # type: ignore[misc]
                                      unexpected_keys, error_msgs)
        if legacy:  # written before the shape was recorded: load, with the shape unknown
            if key in missing_keys:
                missing_keys.remove(key)
            self.log_norm_shape.zero_()

    @property
    def calibration_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the images the normalization constant was calibrated for, or None if unknown.

        Read from the ``log_norm_shape`` buffer; for older priors without it, from ``prior_config``'s
        ``calibration_shape`` (config.json). Assign a shape to declare it (e.g. for an old checkpoint whose
        card names its training size), or None to forget it.
        """
        shape = tuple(int(v) for v in self.log_norm_shape.tolist())
        if all(v > 0 for v in shape):
            return shape  # type: ignore[return-value]
        config = getattr(self, "prior_config", None)
        declared = config.get("calibration_shape") if isinstance(config, dict) else None
        return check_image_shape(declared, "prior_config['calibration_shape']") if declared is not None else None

    @calibration_shape.setter
    def calibration_shape(self, shape: tuple[int, int, int] | list[int] | None) -> None:
        if shape is None:
            self.log_norm_shape.zero_()
            return
        self.log_norm_shape.copy_(torch.tensor(check_image_shape(shape, "calibration_shape"), dtype=torch.int64))

    def energy(self, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, y: torch.Tensor) -> None:
        """Hook for input validation (shape, channels); raises ``ValueError``."""

    # ---- scores -----------------------------------------------------------------------------------
    def scores(self, y: torch.Tensor, t: torch.Tensor | float, *, create_graph: bool = False,
               time_score: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """U(y, t), ∇_y U and ∂_t U by one autograd call (algorithms.md §7.1).

        With ``create_graph=True`` the scores stay differentiable in the parameters (the double
        backward of dual score matching); ∂_t U is taken with respect to the variance t fed to the
        network. Works under ``torch.no_grad`` (gradients are enabled inside).

        Args:
            y: noisy images (B, C, H, W).
            t: noise variance per image, (B,) or a float.
            create_graph: keep the graph of the scores (training).
            time_score: also return ∂_t U (otherwise ``None``).

        Returns:
            (U (B,) nats, ∇_y U (B, C, H, W), ∂_t U (B,) or None).
        """
        self.check_input(y)
        if torch.is_inference_mode_enabled():
            raise RuntimeError("an energy model's scores and denoiser are gradients of U, which torch.inference_mode "
                               "forbids: use torch.no_grad() instead (gradients are enabled inside)")
        t = _t_column(t, y.shape[0], y)
        with torch.enable_grad():
            yy = y if (create_graph and y.requires_grad) else y.detach().requires_grad_(True)
            tt = t if (create_graph and t.requires_grad) else t.detach()
            if time_score and not tt.requires_grad:
                tt = tt.requires_grad_(True)
            u = self.energy(yy, tt)
            inputs = (yy, tt) if time_score else (yy,)
            grads = torch.autograd.grad(u.sum(), inputs, create_graph=create_graph)
        if not create_graph:
            u, grads = u.detach(), tuple(g.detach() for g in grads)
        return u, grads[0], grads[1] if time_score else None

    def denoise(self, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """D(y, t) = y − t∇_y U(y, t) (Miyasawa; algorithms.md §7.1), detached. Shape of ``y``."""
        _, grad, _ = self.scores(y, t, time_score=False)
        return y - _t_column(t, y.shape[0], y).view(-1, 1, 1, 1) * grad

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """The ``Denoiser`` contract: x̂(y) = y − σ²∇_y U(y, σ²); σ (float or (B,), [0, 1] units) is required.

        Differentiable like any module when gradients are enabled: ∇_y U is then taken with
        ``create_graph=True`` (a double backward), so autograd Jacobians of x̂ (analysis, deepinv's DPS) are
        y − t∇²U and gradients reach the parameters. Under ``torch.no_grad`` (samplers, solvers, validation) the
        graph is not kept and the output is detached. ``torch.inference_mode`` is refused (no autograd there).
        """
        if sigma is None:
            raise ValueError("an energy model's denoiser needs the noise level sigma (its std, [0, 1] units); "
                             "blind use is not possible because U depends on t = sigma**2")
        s = _t_column(sigma, y.shape[0], y)
        t = s * s
        if not torch.is_grad_enabled():
            return self.denoise(y, t)
        _, grad, _ = self.scores(y, t, create_graph=True, time_score=False)
        return y - t.view(-1, 1, 1, 1) * grad  # Miyasawa (algorithms.md §7.1)

    # ---- normalization ----------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, images: torch.Tensor, t_max: float = DEFAULT_T_MAX, *,
                  generator: torch.Generator | None = None, batch_size: int = 256) -> Calibration:
        """Fix C from noisy images at t_max and store it in ``log_norm_const`` (algorithms.md §7.4).

        C = (d/2)·ln(2πe·t_max) − E_y[U(y, t_max)], y = x + √t_max·z: at t_max the noisy density is
        the Gaussian N(μ, (Σ + t_max)I) ≈ N(μ, t_max·I), whose entropy equals its expected energy. The
        error of the approximation is tr(Σ)/(2·t_max) nats (5e-5 bits/dim for natural images).
        Evaluated in float32 (or the images' float64) with TF32 and autocast off.

        Args:
            images: clean images (N, C, H, W), [0, 1]; held-out data, not the training set.
            t_max: the large noise variance (1e3 in the paper).
            generator: randomness of the noise (on the images' device).
            batch_size: images per forward pass.

        Returns:
            :class:`Calibration`; C and the images' shape (C, H, W) are also written into the module's
            buffers ``log_norm_const`` and ``log_norm_shape``: ``log_prob`` then takes images of that shape only.
        """
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"calibration needs a batch (N >= 2, C, H, W) of images, got {tuple(images.shape)}")
        if t_max <= 0:
            raise ValueError(f"t_max must be > 0, got {t_max}")
        if not images.is_floating_point():
            raise TypeError(f"calibrate takes float images in [0, 1], got {images.dtype}; divide 8-bit data by 255")
        if not torch.isfinite(images).all():
            raise ValueError("calibration images contain NaN or infinite values")
        if images.abs().max() > 1.5:
            raise ValueError(f"calibration images should lie in [0, 1], but reach {float(images.abs().max()):.4g}; "
                             "divide 8-bit data by 255")
        energies = []
        with full_precision():
            for chunk in images.split(batch_size):
                x = chunk.float() if chunk.dtype != torch.float64 else chunk
                y = x + math.sqrt(t_max) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                energies.append(self.energy(y, t_max))
        dims = images[0].numel()
        c, stderr = log_norm_const_from_energies(torch.cat(energies), dims, t_max)
        self.log_norm_const.fill_(c)
        self.calibration_shape = tuple(images.shape[1:])
        return Calibration(log_norm_const=c, stderr=stderr, t_max=float(t_max), num_images=images.shape[0])

    @property
    def is_calibrated(self) -> bool:
        """Whether ``log_norm_const`` holds a calibrated C."""
        return bool(torch.isfinite(self.log_norm_const))

    def check_log_prob_shape(self, x: torch.Tensor) -> None:
        """Refuse images whose shape is not the one C was calibrated for (ValueError); warn if it is unknown."""
        if x.ndim != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(x.shape)}")
        expected, given = self.calibration_shape, tuple(x.shape[1:])
        if expected is None:
            warnings.warn("this energy model does not record the image shape (C, H, W) its normalization constant "
                          "was calibrated for (saved before priorlab recorded it, or C set by hand), so log p of "
                          f"these {_shape_text(given)} images is only normalized if that was their shape: declare it "
                          "with model.calibration_shape = (C, H, W) (see the model's card), or recalibrate with "
                          "model.calibrate(held_out_images)", UserWarning, stacklevel=4)
            return
        if given != expected:
            c, h, w = expected
            raise ValueError(f"this energy model's normalization constant C was calibrated for {_shape_text(expected)} "
                             f"images (C, H, W; d = {c * h * w}) but the images are {_shape_text(given)}: C depends "
                             f"on d, so log p would be wrong by an unknown amount. Resize or crop the images to "
                             f"{h}x{w} with {c} channel(s), or recalibrate C at the new size with "
                             "model.calibrate(held_out_images) (then only as good as the model's time score at a size "
                             "it was not trained on). The denoiser model(y, sigma) works at any valid size.")

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized log-density of clean images, log p(x) = −(U(x, 0) + C), in nats (algorithms.md §7.4).

        One network evaluation per image at t = 0 (networks with a ``min_variance`` embed it as their smallest
        training variance), in float32 (float64 for float64
        input) with TF32 and autocast off.

        Args:
            x: clean images (B, C, H, W) in [0, 1].

        Returns:
            log p(x), shape (B,), float64, nats.

        Raises:
            RuntimeError: C was never calibrated.
            ValueError: images of another shape than the one C was calibrated for (C depends on d = C·H·W), or
                NaN/infinite values.

        Warns:
            UserWarning: the calibration shape is unknown (a prior written before it was recorded, or C set by
                hand), so the shape of ``x`` cannot be checked.
        """
        if not self.is_calibrated:
            raise RuntimeError("this energy model has no normalization constant yet (log_norm_const is NaN): call "
                               "model.calibrate(held_out_images) first, or train it with DualScoreModule, which "
                               "calibrates on the validation images and stores C in the checkpoint")
        self.check_log_prob_shape(x)
        if not x.is_floating_point():
            raise TypeError(f"log_prob takes float images in [0, 1], got {x.dtype}; divide 8-bit data by 255")
        if not torch.isfinite(x).all():
            raise ValueError("images contain NaN or infinite values")
        with full_precision():
            xf = x if x.dtype == torch.float64 else x.float()
            u0 = self.energy(xf, 0.0)
        return -(u0.double() + self.log_norm_const.to(u0.device))


class GaussianEnergy(NormalizedEnergy, nn.Module):
    """Exact energy of a :class:`GaussianField` plus an arbitrary offset, for tests and references (§7.8).

    U(y, t) = ½ Σ_k |Y_k − μ̂_k|²/(λ_k + t) + (C_ch/2)·Σ_k ln(λ_k + t) + (d/2)·ln 2π + offset, i.e.
    −log p(y, t) + offset; an energy network is likewise normalized only up to an unknown constant,
    which :meth:`calibrate` must recover (C = −offset up to the Gaussian-limit and Monte-Carlo errors).
    Computed in float64 and differentiable in y and t (unlike ``GaussianField.energy``, which goes
    through σ = √t and has no finite ∂_t at t = 0).

    Args:
        field: the Gaussian field.
        offset: constant added to the energy, nats.
        spectrum_scale: multiplies λ (1 is exact; other values give a wrong model for loss tests).
    """

    def __init__(self, field: GaussianField, offset: float = 0.0, spectrum_scale: float = 1.0) -> None:
        super().__init__()
        self.field = field
        self.offset = float(offset)
        self.register_buffer("spectrum", field.spectrum() * spectrum_scale)
        self._init_normalization((field.channels, field.height, field.width))

    def check_input(self, y: torch.Tensor) -> None:
        expected = (self.field.channels, self.field.height, self.field.width)
        if y.ndim != 4 or tuple(y.shape[1:]) != expected:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), got {tuple(y.shape)}")

    def energy(self, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """U(y, t) per image, (B,), float64, nats (algorithms.md §7.8)."""
        self.check_input(y)
        t = _t_column(t, y.shape[0], y.double()).view(-1, 1, 1, 1)
        eig = self.spectrum.to(y.device) + t  # (B, 1, H, W): spectrum of Σ + tI
        power = torch.fft.fft2(y.double() - self.field.mean, norm="ortho").abs().pow(2)
        quad = (power / eig).sum(dim=(1, 2, 3))
        log_det = self.field.channels * torch.log(eig).flatten(1).sum(1)
        return 0.5 * (quad + log_det + self.field.num_pixels * math.log(2 * math.pi)) + self.offset
