"""Linear measurement operators with orthonormal rows (algorithms.md §5.1, §5.3).

Notation. The paper writes the measurements as x_c = Mᵀx with M ∈ ℝ^{N×k} having orthonormal
columns. Here the two maps are named for what they do:

* ``measure(x)`` = Mᵀx: images (B, C, H, W) → measurements (B, *measurement_shape), k numbers each;
* ``embed(c)`` = M c: measurements → images, the adjoint of ``measure``.

Orthonormal rows of Mᵀ (MᵀM = I_k) give the two identities every operator is tested for:
``measure(embed(c)) = c`` (identity on ℝᵏ), and ``project(x) = embed(measure(x))`` = MMᵀx is the
orthogonal projection onto the measured subspace (symmetric and idempotent). ``project`` is also
the naive reconstruction (zero fill / block replication / low-pass) used to visualize a measurement.

Every operator is built for one image shape (C, H, W) and works on any batch size, device and
floating dtype; shapes are validated with messages that name the expected sizes.
"""

from __future__ import annotations

import math

import torch

from priorlab.core.protocols import check_image_shape

ImageShape = tuple[int, int, int]


class LinearOperator:
    """Base class: a linear map Mᵀ with orthonormal rows from images to k measurements.

    Subclasses implement ``_measure`` and ``_embed`` on validated tensors.

    Args:
        image_shape: (C, H, W) of the images the operator measures.
        measurement_shape: shape of one measurement vector (without the batch axis).
    """

    name = "linear"

    def __init__(self, image_shape: ImageShape, measurement_shape: tuple[int, ...]) -> None:
        self.image_shape: ImageShape = check_image_shape(image_shape)
        self.measurement_shape = tuple(int(s) for s in measurement_shape)
        self.num_measurements = math.prod(self.measurement_shape)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image_shape={self.image_shape}, "
                f"k={self.num_measurements} of N={math.prod(self.image_shape)})")

    @property
    def fraction(self) -> float:
        """k/N, the fraction of the image dimension that is measured."""
        return self.num_measurements / math.prod(self.image_shape)

    def check_image(self, x: torch.Tensor, name: str = "images") -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            raise ValueError(f"{name} must have shape (B, {c}, {h}, {w}) for this {self.name} operator, "
                             f"got {tuple(x.shape)}")

    def check_measurement(self, c: torch.Tensor, name: str = "measurement") -> None:
        if c.ndim != 1 + len(self.measurement_shape) or tuple(c.shape[1:]) != self.measurement_shape:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, self.measurement_shape))}) "
                             f"for this {self.name} operator, got {tuple(c.shape)}")

    def measure(self, x: torch.Tensor) -> torch.Tensor:
        """Mᵀx: images (B, C, H, W) → measurements (B, *measurement_shape)."""
        self.check_image(x)
        return self._measure(x)

    def embed(self, c: torch.Tensor) -> torch.Tensor:
        """M c, the adjoint of ``measure``: measurements (B, *measurement_shape) → images (B, C, H, W)."""
        self.check_measurement(c)
        return self._embed(c)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """MMᵀx, the orthogonal projection onto the measured subspace (B, C, H, W)."""
        return self.embed(self.measure(x))

    # The names of the math (algorithms.md §5, the 2021 code): Mᵀ measures an image, M embeds a measurement.
    def MT(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the matrix's name
        """Mᵀx; the same as :meth:`measure`."""
        return self.measure(x)

    def M(self, c: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the matrix's name
        """M c; the same as :meth:`embed`."""
        return self.embed(c)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _embed(self, c: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


# -- coordinate masks --------------------------------------------------------------------------------


class MaskOperator(LinearOperator):
    """Keep the image entries where ``mask`` is true; the measurement lists them in row-major order.

    Args:
        mask: boolean (C, H, W); at least one entry true.
    """

    name = "mask"

    def __init__(self, mask: torch.Tensor) -> None:
        if mask.ndim != 3 or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a boolean (C, H, W) tensor, got {mask.dtype} {tuple(mask.shape)}")
        index = mask.flatten().nonzero().squeeze(1)
        if index.numel() == 0:
            raise ValueError("the mask keeps no entry: nothing would be measured")
        super().__init__(tuple(mask.shape), (index.numel(),))
        self.mask = mask.cpu()
        self._index = index.cpu()

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, self._index.to(x.device)]

    def _embed(self, c: torch.Tensor) -> torch.Tensor:
        out = c.new_zeros(c.shape[0], math.prod(self.image_shape))
        out[:, self._index.to(c.device)] = c
        return out.view(c.shape[0], *self.image_shape)


def box_inpainting(image_shape: ImageShape, box: tuple[int, int, int, int] | None = None) -> MaskOperator:
    """Missing rectangle (all channels); every other pixel is measured.

    Args:
        image_shape: (C, H, W).
        box: (top, left, height, width) of the missing block in pixels; default a centred block of
            half the height and half the width (the paper's centred block).
    """
    c, h, w = check_image_shape(image_shape)
    if box is None:
        box = (h // 4, w // 4, max(h // 2, 1), max(w // 2, 1))
    if len(tuple(box)) != 4:
        raise ValueError(f"box must be (top, left, height, width), got {tuple(box)}")
    top, left, bh, bw = (int(v) for v in box)
    if bh < 1 or bw < 1 or top < 0 or left < 0 or top + bh > h or left + bw > w:
        raise ValueError(f"box (top={top}, left={left}, height={bh}, width={bw}) must lie inside the "
                         f"{h}x{w} image and be non-empty")
    if bh * bw == h * w:
        raise ValueError("the box covers the whole image: nothing would be measured")
    mask = torch.ones(c, h, w, dtype=torch.bool)
    mask[:, top:top + bh, left:left + bw] = False
    op = MaskOperator(mask)
    op.name = "inpainting"
    return op


def _check_fraction(fraction: float) -> float:
    if not 0 < fraction < 1:
        raise ValueError(f"fraction of measured values must be in (0, 1), got {fraction}")
    return float(fraction)


def random_pixels(image_shape: ImageShape, fraction: float, *, generator: torch.Generator | None = None,
                  per_channel: bool = False) -> MaskOperator:
    """Keep a random ``fraction`` of the pixels (exactly round(fraction·H·W) of them, at least one).

    Args:
        image_shape: (C, H, W).
        fraction: kept fraction in (0, 1).
        generator: randomness of the pixel choice (CPU generator).
        per_channel: choose the kept entries independently for each of the C·H·W values (the
            paper's Bernoulli mask per entry) instead of whole pixels (all channels together).
    """
    c, h, w = check_image_shape(image_shape)
    fraction = _check_fraction(fraction)
    n = c * h * w if per_channel else h * w
    k = min(max(round(fraction * n), 1), n)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=generator)[:k]] = True
    mask = keep.view(c, h, w) if per_channel else keep.view(1, h, w).expand(c, h, w).clone()
    op = MaskOperator(mask)
    op.name = "random-pixels"
    return op


def bayer_demosaic(image_shape: ImageShape) -> MaskOperator:
    """Bayer RGGB colour filter array: one colour per pixel, R at (even, even), G at (even, odd) and
    (odd, even), B at (odd, odd). Needs C = 3."""
    c, h, w = check_image_shape(image_shape)
    if c != 3:
        raise ValueError(f"demosaicing needs colour images (C = 3), got C = {c}")
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = torch.stack([(yy % 2 == 0) & (xx % 2 == 0), (yy + xx) % 2 == 1, (yy % 2 == 1) & (xx % 2 == 1)])
    op = MaskOperator(mask)
    op.name = "bayer"
    return op


def random_mosaic(image_shape: ImageShape, proportions: tuple[float, float, float] = (0.6, 0.3, 0.1), *,
                  generator: torch.Generator | None = None) -> MaskOperator:
    """Random cone-like mosaic: every pixel measures one colour, drawn independently with
    probabilities ``proportions`` for (R, G, B), like the L:M:S cone ratio of a human retina. Needs C = 3.

    ``proportions`` are relative weights, normalized to sum to 1: (0.6, 0.3, 0.1) and (6, 3, 1) are the same mosaic.
    """
    c, h, w = check_image_shape(image_shape)
    if c != 3:
        raise ValueError(f"demosaicing needs colour images (C = 3), got C = {c}")
    p = torch.as_tensor(proportions, dtype=torch.float64)
    if p.shape != (3,) or not torch.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"proportions must be three non-negative numbers, got {proportions}")
    cone = torch.multinomial(p / p.sum(), h * w, replacement=True, generator=generator).view(h, w)
    op = MaskOperator(torch.stack([cone == i for i in range(3)]))
    op.name = "cone-mosaic"
    return op


# -- block averaging ---------------------------------------------------------------------------------


class BlockAverage(LinearOperator):
    """Super-resolution by block averaging with factor s, per channel.

    Mᵀ is a stride-s convolution with an s×s kernel of value 1/s (unit-norm rows, trap §13.10: the
    plain mean 1/s² would break MᵀM = I); a measurement is s × (block mean), shape (C, H/s, W/s).
    M c spreads c/s over each block, so MMᵀ replaces every block by its mean.

    Args:
        image_shape: (C, H, W); s must divide H and W.
        factor: s ≥ 2.
    """

    name = "super-resolution"

    def __init__(self, image_shape: ImageShape, factor: int) -> None:
        c, h, w = check_image_shape(image_shape)
        if int(factor) != factor or factor < 2:
            raise ValueError(f"super-resolution factor must be an integer >= 2, got {factor}")
        if factor > min(h, w):
            raise ValueError(f"super-resolution factor {factor} is larger than the {h}x{w} image")
        if h % factor or w % factor:
            raise ValueError(f"super-resolution factor {factor} must divide the image size {h}x{w}; "
                             f"crop the image to {h - h % factor}x{w - w % factor}")
        super().__init__(image_shape, (c, h // factor, w // factor))
        self.factor = int(factor)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, self.factor) * self.factor

    def _embed(self, c: torch.Tensor) -> torch.Tensor:
        s = self.factor
        return (c / s).repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


# -- real orthonormal Fourier basis ------------------------------------------------------------------


class _RealFourier:
    """The real orthonormal basis of ℝ^{H×W} built from the unitary 2-D DFT.

    With X = fft2(x, norm="ortho") of a real image, frequencies come in conjugate pairs
    X_{−k} = conj(X_k) except the self-conjugate ones (k = −k mod (H, W): DC and the Nyquist
    rows/columns of even sizes), whose X_k are real. The coefficients
    {X_k (self-conjugate)} ∪ {√2·Re X_k, √2·Im X_k (one representative k per pair)}
    are the coordinates of x in an orthonormal real basis (Parseval), N of them in total.
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        ky, kx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        flat = (ky * width + kx).flatten()
        mirror = (((-ky) % height) * width + ((-kx) % width)).flatten()
        self.selfconj = flat[flat == mirror]
        self.rep = flat[flat < mirror]  # one representative per conjugate pair
        self.mirror_of_rep = mirror[flat < mirror]
        self.mirror = mirror

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Real coefficients (…, N) of real images (…, H, W): [self-conjugate | √2 Re | √2 Im]."""
        spec = torch.fft.fft2(x, norm="ortho").flatten(-2)
        pair = spec[..., self.rep.to(x.device)] * math.sqrt(2)
        return torch.cat([spec[..., self.selfconj.to(x.device)].real, pair.real, pair.imag], dim=-1)

    def image(self, coef: torch.Tensor) -> torch.Tensor:
        """Inverse of ``coefficients``: (…, N) → real images (…, H, W)."""
        n_self, n_pair = self.selfconj.numel(), self.rep.numel()
        a, re, im = coef.split([n_self, n_pair, n_pair], dim=-1)
        cdtype = torch.complex128 if coef.dtype == torch.float64 else torch.complex64
        spec = torch.zeros(*coef.shape[:-1], self.height * self.width, dtype=cdtype, device=coef.device)
        pair = torch.complex(re, im) / math.sqrt(2)
        spec[..., self.selfconj.to(coef.device)] = a.to(cdtype)
        spec[..., self.rep.to(coef.device)] = pair
        spec[..., self.mirror_of_rep.to(coef.device)] = pair.conj()
        return torch.fft.ifft2(spec.view(*coef.shape[:-1], self.height, self.width), norm="ortho").real

    def order(self) -> torch.Tensor:
        """Flat frequency index (k_y·W + k_x) of every coefficient, in ``coefficients`` order."""
        return torch.cat([self.selfconj, self.rep, self.rep])


class FourierSubset(LinearOperator):
    """Measure a chosen subset of the real orthonormal Fourier coefficients of every channel,
    optionally after flipping the signs of the pixels by a fixed random ±1 pattern.

    Args:
        image_shape: (C, H, W).
        keep: boolean (C, N) over the coefficients of ``_RealFourier`` (N = H·W per channel).
        signs: optional ±1 tensor (C, H, W) applied to the image first (an orthogonal map).
    """

    name = "fourier"

    def __init__(self, image_shape: ImageShape, keep: torch.Tensor, signs: torch.Tensor | None = None) -> None:
        c, h, w = check_image_shape(image_shape)
        if keep.shape != (c, h * w) or keep.dtype != torch.bool:
            raise ValueError(f"keep must be a boolean ({c}, {h * w}) tensor, got {keep.dtype} {tuple(keep.shape)}")
        if not keep.any():
            raise ValueError("no Fourier coefficient kept: nothing would be measured")
        if signs is not None and (signs.shape != (c, h, w) or not bool((signs.abs() == 1).all())):
            raise ValueError(f"signs must be a ({c}, {h}, {w}) tensor of +1 and -1 (an orthogonal map), got shape "
                             f"{tuple(signs.shape)}" + ("" if signs.shape != (c, h, w) else " with other values"))
        super().__init__(image_shape, (int(keep.sum()),))
        self._basis = _RealFourier(h, w)
        self._index = keep.flatten().nonzero().squeeze(1)
        self._signs = signs

    @property
    def kept(self) -> torch.Tensor:
        """Boolean (C, H·W): which coefficients of :meth:`coefficients` are measured, in their order."""
        keep = torch.zeros(math.prod(self.image_shape), dtype=torch.bool)
        keep[self._index] = True
        return keep.view(self.image_shape[0], -1)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """All N = C·H·W coordinates (B, C, H·W) of images (B, C, H, W) in the operator's orthonormal
        basis (signs, then the real Fourier basis); the measurement is the subset :attr:`kept`."""
        if self._signs is not None:
            x = x * self._signs.to(x)
        return self._basis.coefficients(x).flatten(2)

    def image(self, coef: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`coefficients`: (B, C, H·W) → images (B, C, H, W) (an orthogonal map)."""
        x = self._basis.image(coef)
        return x * self._signs.to(x) if self._signs is not None else x

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return self.coefficients(x).flatten(1)[:, self._index.to(x.device)]

    def _embed(self, c: torch.Tensor) -> torch.Tensor:
        full = c.new_zeros(c.shape[0], math.prod(self.image_shape))
        full[:, self._index.to(c.device)] = c
        return self.image(full.view(c.shape[0], self.image_shape[0], -1))


def spectral_lowpass(image_shape: ImageShape, fraction: float, *, shape: str = "square") -> FourierSubset:
    """Spectral super-resolution ("deblurring"): keep the lowest-frequency fraction of every channel.

    The kept set is conjugate-symmetric by construction (it depends on |f| only), so MMᵀ is an exact
    orthogonal projection, unlike the reference code's mask (trap §13.9). ``fraction`` is the kept
    fraction of the H·W real coefficients per channel: the round(fraction·H·W) lowest frequencies
    by the chosen norm (ties broken by the other norm, then by frequency index, which keeps the
    real and imaginary parts of a conjugate pair together), plus one where that count would split a pair.

    Args:
        image_shape: (C, H, W).
        fraction: kept fraction in (0, 1).
        shape: "square" (max(|f_y|, |f_x|), the paper's corner blocks) or "disk" (Euclidean |f|,
            the support of a Gaussian blur's transfer function above a threshold).
    """
    c, h, w = check_image_shape(image_shape)
    fraction = _check_fraction(fraction)
    if shape not in ("square", "disk"):
        raise ValueError(f"shape must be 'square' or 'disk', got {shape!r}")
    basis = _RealFourier(h, w)
    fy = torch.fft.fftfreq(h, dtype=torch.float64).abs()
    fx = torch.fft.fftfreq(w, dtype=torch.float64).abs()
    square = torch.maximum(fy[:, None], fx[None, :]).flatten()
    disk = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).flatten()
    primary, secondary = (square, disk) if shape == "square" else (disk, square)
    freq = basis.order()
    k = min(max(round(fraction * h * w), 1), h * w)
    # Lexicographic order (primary, secondary, frequency index) by stable sorts, last key first.
    order = torch.arange(freq.numel())
    for key in (freq.to(torch.float64), secondary[freq], primary[freq]):
        order = order[key[order].sort(stable=True).indices]
    # Keep whole frequencies: where the cut falls between the real and imaginary parts of one frequency
    # (they are adjacent in this order), keep both, so the band depends on |f| only and MMᵀ commutes
    # with circular shifts; the kept fraction is then one coefficient above fraction·H·W.
    keep = torch.isin(freq, freq[order[:k]])
    keep = keep.expand(c, -1).clone()
    op = FourierSubset(image_shape, keep)
    op.name = "spectral-lowpass"
    return op


class GaussianDeblur(FourierSubset):
    """Deblurring a circular Gaussian blur, in the orthonormal-rows form Algorithm 2 needs.

    A blur b = h * x is not a projection, but it is diagonal in the Fourier basis with the real, symmetric
    transfer function H(f) = exp(−2π²s²|f|²) (s = blur std in pixels). Where H ≥ ``threshold`` the blurred
    image determines the Fourier coefficient exactly (divide by H); below it the information is treated as
    lost. So the measurement is the set of Fourier coefficients with H ≥ threshold — a disk of low
    frequencies, an exact orthogonal projection — and :meth:`measurement_from_blurred` computes it from the
    blurred image. Noise in the blurred image is amplified by at most 1/threshold on the kept coefficients.

    Args:
        image_shape: (C, H, W).
        blur_sigma: std of the Gaussian blur in pixels (> 0).
        threshold: smallest transfer-function value that counts as measured, in (0, 1).
    """

    name = "gaussian-deblur"

    def __init__(self, image_shape: ImageShape, blur_sigma: float, threshold: float = 0.1) -> None:
        if not blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0 pixels, got {blur_sigma}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        c, h, w = check_image_shape(image_shape)
        self.blur_sigma, self.threshold = float(blur_sigma), float(threshold)
        fy = torch.fft.fftfreq(h, dtype=torch.float64)
        fx = torch.fft.fftfreq(w, dtype=torch.float64)
        self._transfer = torch.exp(-2 * math.pi**2 * self.blur_sigma**2 * (fy[:, None] ** 2 + fx[None, :] ** 2))
        per_coef = self._transfer.flatten()[_RealFourier(h, w).order()]  # H of each real coefficient's frequency
        super().__init__(image_shape, (per_coef >= threshold).expand(c, -1).clone())
        self._gain = per_coef.expand(c, -1).flatten()[self._index]

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """The circular Gaussian blur of images (B, C, H, W) (to simulate observations)."""
        self.check_image(x)
        spec = torch.fft.fft2(x.to(torch.float64)) * self._transfer.to(x.device)
        return torch.fft.ifft2(spec).real.to(x.dtype)

    def measurement_from_blurred(self, b: torch.Tensor) -> torch.Tensor:
        """The measurement Mᵀx (B, M) of the sharp images, from their blurred images b (B, C, H, W)."""
        self.check_image(b, "blurred images")
        return self._measure(b) / self._gain.to(b)


def compressive_sensing(image_shape: ImageShape, fraction: float, *, generator: torch.Generator | None = None,
                        dense_max: int = 4096) -> LinearOperator:
    """Compressive sensing with k = round(fraction·N) random orthonormal projections.

    For N = C·H·W ≤ ``dense_max``: the Q factor of the QR decomposition of an N×k Gaussian matrix
    (the paper's random basis, §5.3). Larger images use a fast structured transform: random ±1
    signs on the pixels, then a random subset of k of the N real orthonormal Fourier coefficients
    (O(N log N), no N×k matrix).

    Args:
        image_shape: (C, H, W).
        fraction: k/N in (0, 1).
        generator: randomness of the projections (CPU generator).
        dense_max: largest N that uses the dense QR basis.
    """
    c, h, w = check_image_shape(image_shape)
    fraction = _check_fraction(fraction)
    n = c * h * w
    k = min(max(round(fraction * n), 1), n)
    if n <= dense_max:
        # float64 QR: orthonormality to ~1e-15, then stored in float32 rows (orthonormal to ~1e-7).
        q, _ = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
        op: LinearOperator = MatrixOperator(q.T.contiguous(), image_shape)
    else:
        signs = torch.randint(0, 2, (c, h, w), generator=generator).to(torch.float32) * 2 - 1
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=generator)[:k]] = True
        op = FourierSubset(image_shape, keep.view(c, h * w), signs=signs)
    op.name = "compressive-sensing"
    return op


# -- user-supplied matrix ----------------------------------------------------------------------------


class MatrixOperator(LinearOperator):
    """A user-supplied measurement matrix A (k, N) with orthonormal rows (A Aᵀ = I_k), N = C·H·W.

    Pixels are flattened in (C, H, W) row-major order. Orthonormality is validated (float64).

    Args:
        matrix: A, shape (k, N).
        image_shape: (C, H, W).
        atol: tolerance on max |A Aᵀ − I|.
    """

    name = "matrix"

    def __init__(self, matrix: torch.Tensor, image_shape: ImageShape, *, atol: float = 1e-5) -> None:
        n = math.prod(image_shape)
        if matrix.ndim != 2 or matrix.shape[1] != n:
            raise ValueError(f"measurement matrix must have shape (k, {n}) for images {tuple(image_shape)}, "
                             f"got {tuple(matrix.shape)}")
        k = matrix.shape[0]
        if not 1 <= k <= n:
            raise ValueError(f"measurement matrix must have between 1 and {n} rows, got {k}")
        if not torch.isfinite(matrix).all():
            raise ValueError("measurement matrix has NaN or infinite entries")
        a = matrix.to(torch.float64)
        err = (a @ a.T - torch.eye(k, dtype=torch.float64, device=a.device)).abs().max().item()
        if not err <= atol:
            raise ValueError(f"measurement matrix rows are not orthonormal (max |A Aᵀ − I| = {err:.2e} > "
                             f"{atol:g}); orthonormalize them, e.g. with torch.linalg.qr(A.T).Q.T")
        super().__init__(image_shape, (k,))
        self.matrix = matrix.detach().cpu()

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.matrix.to(x).T

    def _embed(self, c: torch.Tensor) -> torch.Tensor:
        return (c @ self.matrix.to(c)).view(c.shape[0], *self.image_shape)
