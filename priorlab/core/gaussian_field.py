"""Stationary Gaussian random fields with a power-law spectrum: an image prior with exact answers.

A field x ~ N(μ·1, Σ) on a periodic H×W grid whose covariance Σ is circulant (stationary with
wrap-around), so the orthonormal 2-D DFT F diagonalizes it: Σ = Fᴴ diag(λ) F. The eigenvalues
λ_k are the power spectrum, λ(f) ∝ 1/|f|^α. Channels are independent copies with the same spectrum.

Everything that is hard for natural images is closed-form here (algorithms.md §7.8), which makes
the field the reference for tests and the limit in benchmarks:

* optimal (MMSE) denoiser: Wiener filter X̂_k = μ̂_k + λ_k/(λ_k + σ²)·(Y_k − μ̂_k);
* exact log-density of clean images, and of noisy ones y = x + σz (spectrum λ + σ²);
* the expected MSE of the optimal denoiser, (1/N)·Σ_k λ_k σ²/(λ_k + σ²).

Conventions: ``fft2(..., norm="ortho")`` is unitary, so Parseval holds coefficient by coefficient
and ‖x‖² = Σ_k |X_k|². We use the full complex ``fft2`` rather than ``rfft2``: λ is symmetric under
k → −k, so filtering a real image by λ gives a real image (up to round-off, dropped with ``.real``)
and no bookkeeping of the half-spectrum's doubled terms is needed.

Samples are **not** confined to [0, 1] (a Gaussian has unbounded support); they are never clipped,
because clipping would break every exact formula above.
"""

from __future__ import annotations

import math

import torch


def power_law_spectrum(height: int, width: int, alpha: float, variance: float) -> torch.Tensor:
    """Covariance eigenvalues λ of a stationary field with spectrum ∝ 1/|f|^α, in float64.

    The frequency of DFT index (k_y, k_x) is f = (fftfreq(H)[k_y], fftfreq(W)[k_x]) in cycles per
    pixel. The DC term (f = 0, where 1/|f|^α diverges for α > 0) is set to the value at the
    smallest nonzero |f| = 1/max(H, W): the mean brightness of an image then fluctuates like its
    coarsest oscillation, instead of infinitely (improper) or not at all (a singular covariance).
    The spectrum is scaled so that the per-pixel variance (1/N)·Σ_k λ_k equals ``variance``.

    Args:
        height: H in pixels.
        width: W in pixels.
        alpha: spectral exponent α ≥ 0 (0 is white noise, 2 is the classic natural-image slope
            of the power spectrum).
        variance: per-pixel variance of the field, [0, 1]² units.

    Returns:
        λ of shape (H, W), float64, all positive, symmetric under k → −k.
    """
    if height < 1 or width < 1:
        raise ValueError(f"field size must be positive, got {height}x{width}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if variance <= 0:
        raise ValueError(f"variance must be > 0, got {variance}")
    fy = torch.fft.fftfreq(height, dtype=torch.float64)
    fx = torch.fft.fftfreq(width, dtype=torch.float64)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    f_min = 1.0 / max(height, width)
    # float64: λ spans many decades for large α and the normalization sums N of them.
    spectrum = torch.where(radius > 0, radius, torch.full_like(radius, f_min)) ** (-alpha)
    return spectrum * (variance * height * width / spectrum.sum())


def _sigma_column(sigma: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """σ as a float64 (B, 1, 1, 1) tensor, from a float or a (B,) / 0-d tensor."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=device)
    if s.ndim == 0:
        s = s.expand(batch)
    if s.shape != (batch,):
        raise ValueError(f"sigma must be a float or have shape ({batch},), got {tuple(s.shape)}")
    if (s < 0).any():
        raise ValueError("sigma must be >= 0")
    return s.view(batch, 1, 1, 1)


class GaussianField:
    """Stationary Gaussian images with constant mean μ and covariance spectrum λ(f) ∝ 1/|f|^α.

    Args:
        size: H = W, or (H, W), in pixels.
        alpha: spectral exponent α of the covariance eigenvalues λ(f) ∝ 1/|f|^α.
        variance: per-pixel variance of the field, [0, 1]² units (0.01 is a std of 0.1).
        channels: C, independent channels with identical spectra.
        mean: constant mean μ of every pixel.

    Attributes:
        height, width, channels, alpha, variance, mean: as given.
        num_pixels: N = C·H·W, the dimension of one image.
    """

    def __init__(self, size: int | tuple[int, int], alpha: float = 2.0, variance: float = 0.01,
                 channels: int = 1, mean: float = 0.0) -> None:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.height, self.width = int(height), int(width)
        self.channels = int(channels)
        self.alpha, self.variance, self.mean = float(alpha), float(variance), float(mean)
        self.num_pixels = self.channels * self.height * self.width
        self._spectrum = power_law_spectrum(self.height, self.width, self.alpha, self.variance)

    def __repr__(self) -> str:
        return (f"GaussianField(size=({self.height}, {self.width}), alpha={self.alpha}, "
                f"variance={self.variance}, channels={self.channels}, mean={self.mean})")

    def spectrum(self) -> torch.Tensor:
        """Eigenvalues λ of the per-channel covariance in the orthonormal DFT basis, (H, W) float64."""
        return self._spectrum.clone()

    def covariance(self) -> torch.Tensor:
        """Dense per-channel covariance Σ = Fᴴ diag(λ) F, (H·W, H·W) float64 (small grids only).

        Row-major pixel order (index = i·W + j). Built by filtering the identity, so it costs
        O(N² log N); meant for tests and inspection.
        """
        n = self.height * self.width
        basis = torch.eye(n, dtype=torch.float64).view(n, 1, self.height, self.width)
        return self._filter(basis, self._spectrum).reshape(n, n)

    # -- internal -------------------------------------------------------------------------------------

    def _check(self, x: torch.Tensor, name: str) -> None:
        expected = (self.channels, self.height, self.width)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")

    @staticmethod
    def _filter(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """Fᴴ diag(gain) F x for real x (…, H, W); gain (H, W) or broadcastable, symmetric in k → −k."""
        spec = torch.fft.fft2(x, norm="ortho") * gain
        return torch.fft.ifft2(spec, norm="ortho").real

    def _gaussian_log_prob(self, x: torch.Tensor, eig: torch.Tensor) -> torch.Tensor:
        """log N(x; μ, Fᴴ diag(eig) F) per image, (B,), for eig (H, W) or (B, 1, H, W)."""
        # float64: the quadratic form and the log-determinant are sums of N terms of very
        # different sizes that nearly cancel in differences of log-probabilities.
        centered = x.to(torch.float64) - self.mean
        power = torch.fft.fft2(centered, norm="ortho").abs().pow(2)  # |X_k|², Parseval-exact
        quad = (power / eig).sum(dim=(1, 2, 3))
        log_det = self.channels * torch.log(eig).flatten(-2).sum(-1).reshape(-1)
        out = -0.5 * (quad + log_det + self.num_pixels * math.log(2 * math.pi))
        return out.to(x.dtype)

    # -- public API -----------------------------------------------------------------------------------

    def sample(self, n: int, generator: torch.Generator | None = None, *,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Draw exact samples x = μ + Σ^{1/2} w with w ~ N(0, I).

        Σ^{1/2} = Fᴴ diag(√λ) F is the symmetric square root, applied by FFT.

        Args:
            n: number of images.
            generator: source of randomness (must live on ``device``).
            device: where to draw and return the images.
            dtype: floating dtype of the result (the filtering runs in float64).

        Returns:
            Images (n, C, H, W); values are not confined to [0, 1].
        """
        white = torch.randn(n, self.channels, self.height, self.width, generator=generator,
                            device=device, dtype=torch.float64)
        x = self._filter(white, self._spectrum.to(white.device).sqrt()) + self.mean
        return x.to(dtype)

    def wiener_denoise(self, y: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        """Exact MMSE denoiser E[x | y] for y = x + σz (the Wiener filter, algorithms.md §7.8).

        x̂ = μ + Fᴴ diag(λ/(λ + σ²)) F (y − μ), equivalently y − σ²(Σ + σ²I)⁻¹(y − μ).
        This is the non-blind oracle: unlike a blind network it needs σ. It follows the
        ``Denoiser`` call signature ``(y, sigma)``.

        Args:
            y: noisy images (B, C, H, W).
            sigma: noise std, a float or a (B,) tensor, [0, 1] units. Required.

        Returns:
            x̂ of the shape and dtype of ``y``.
        """
        if sigma is None:
            raise ValueError("the Wiener denoiser is an oracle and needs the noise level sigma")
        self._check(y, "y")
        s2 = _sigma_column(sigma, y.shape[0], y.device) ** 2
        eig = self._spectrum.to(y.device)
        gain = eig / (eig + s2)  # (B, 1, H, W)
        x_hat = self._filter(y.to(torch.float64) - self.mean, gain) + self.mean
        return x_hat.to(y.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of clean images in nats.

        log p(x) = −½ Σ_k |X_k − μ̂_k|²/λ_k − (C/2) Σ_k log λ_k − (N/2) log 2π, N = C·H·W.

        Args:
            x: images (B, C, H, W).

        Returns:
            log p(x) per image, shape (B,), dtype of ``x`` (computed in float64).
        """
        self._check(x, "x")
        return self._gaussian_log_prob(x, self._spectrum.to(x.device))

    def log_prob_noisy(self, y: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact log-density of noisy images y = x + σz, whose spectrum is λ + σ².

        Args:
            y: noisy images (B, C, H, W).
            sigma: noise std, a float or a (B,) tensor, [0, 1] units.

        Returns:
            log p_σ(y) per image, shape (B,), dtype of ``y``.
        """
        self._check(y, "y")
        s2 = _sigma_column(sigma, y.shape[0], y.device) ** 2
        return self._gaussian_log_prob(y, self._spectrum.to(y.device) + s2)

    def energy(self, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Energy U(y, t) = −log p_t(y) with t = σ² the noise variance (``EnergyModel`` contract).

        Args:
            y: noisy images (B, C, H, W).
            t: noise variance, a float or a (B,) tensor.

        Returns:
            U per image, shape (B,), in nats.
        """
        t = torch.as_tensor(t, dtype=torch.float64, device=y.device)
        return -self.log_prob_noisy(y, t.clamp_min(0).sqrt())

    def mmse(self, sigma: float | torch.Tensor) -> float | torch.Tensor:
        """Expected per-pixel squared error of the Wiener denoiser, E‖x̂ − x‖²/N.

        Per frequency the posterior variance is λσ²/(λ + σ²); the channels share the spectrum.

        Args:
            sigma: noise std, a float or a tensor of any shape, [0, 1] units.

        Returns:
            The MSE, a float for a float ``sigma``, else a float64 tensor of ``sigma``'s shape.
        """
        s2 = torch.as_tensor(sigma, dtype=torch.float64) ** 2
        eig = self._spectrum.flatten().to(s2.device)
        mse = (eig * s2[..., None] / (eig + s2[..., None])).mean(-1)
        return float(mse) if not isinstance(sigma, torch.Tensor) else mse
