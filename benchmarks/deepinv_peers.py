"""deepinv's DPS, DiffPIR and DDRM driven by a priorlab denoiser and priorlab's measurement operators.

Conventions, checked against the installed deepinv 0.5.0 source (deepinv/sampling/diffusion.py,
diffusion_sde.py, noisy_datafidelity.py, models/wrapper.py, physics/forward.py) and by
tests/test_inverse_peers.py:

* Denoiser. deepinv calls ``denoiser(x, sigma)`` with x in [0, 1] and sigma the noise std in the same
  [0, 1] units (a float, a 0-d tensor or a [B] tensor) and expects the denoised image back — exactly
  priorlab's ``net(y, sigma)`` contract (protocols.py), so the wrapper passes both through unchanged.
  The samplers do their own range conversions around that call: DiffPIR keeps its state in [-1, 1] and
  calls ``model(x/(2√ᾱ) + 1/2, σ/2)``; DPS (a ``PosteriorDiffusion``, ``minus_one_one=True`` by
  default) wraps the denoiser in ``MinusOneOneDenoiserWrapper``, which maps [-1, 1] → [0, 1] and σ → σ/2,
  and evaluates its data term on (x/s + 1)/2 ∈ [0, 1]; DDRM works in [0, 1] directly
  (``denoiser(V x̄, σ_t)``, y = A x of a [0, 1] image). So none of them wants a [-1, 1] denoiser, and
  adding a conversion here would apply it twice.
* Physics. DPS and DiffPIR only need A and Aᵀ: ``linear_physics`` is a ``LinearPhysics`` with
  A = ``op.measure`` (Mᵀ) and Aᵀ = ``op.embed`` (M), so y is our measurement vector c unchanged.
  DiffPIR's data step is ``LinearPhysics.prox_l2`` (conjugate gradients); AᵀA = MMᵀ is a projection,
  so CG is exact after two iterations.
* DDRM needs an SVD, A = U diag(s) Vᵀ. Our Mᵀ has orthonormal rows, so s ∈ {0, 1} and Vᵀ is any
  orthogonal change of basis whose first k coordinates are the measurements: ``decomposable_physics``
  builds it exactly for every operator the benchmark uses (identity for masks, an orthonormal DCT per
  s×s block for block averaging, the real orthonormal Fourier basis for spectral masks, the QR
  completion of the rows for a dense matrix). deepinv's decomposable measurement lives in Vᵀ-space
  (image shaped, zero where s = 0); ``ddrm_measurement`` builds it from c alone.
* Noise. Our measurements are noiseless and the physics carry deepinv's ``ZeroNoise`` (no ``sigma``),
  so each peer falls back to its own default: DDRM assumes σ_y = 0.01, DiffPIR its constructor default
  σ = 0.05 (which sets its ρ_t schedule).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from deepinv.models import Denoiser as DeepinvDenoiser
from deepinv.optim.data_fidelity import L2
from deepinv.physics import DecomposablePhysics, LinearPhysics
from deepinv.sampling import DDRM, DPS, DiffPIR

from priorlab.solvers import BlockAverage, FourierSubset, LinearOperator, MaskOperator, MatrixOperator

PEERS = ("DPS", "DiffPIR", "DDRM")
# DPS guidance variants run on the calibration crops only, to show how much DPS depends on its weight.
DPS_VARIANTS = {"DPS norm λ=1": dict(guidance="norm", weight=1.0),
                "DPS norm λ=300": dict(guidance="norm", weight=300.0)}
# The peers' settings, recorded in the report. DPS: its full 1000-step DDPM schedule with the "annealed"
# guidance at λ = 1, which deepinv's DPSDataFidelity docstring calls the natural choice; its constructor
# default (guidance "norm", λ = 1) is documented there to need λ "typically in the hundreds" and, on our
# noiseless measurements, leaves the samples nearly unconditional (see DPS_VARIANTS and the report).
# DiffPIR and DDRM: their deepinv defaults.
PEER_SETTINGS = {
    "DPS": "VP schedule, DDPM solver, 1000 steps, guidance 'annealed', weight λ = 1 (otherwise deepinv defaults)",
    "DiffPIR": "deepinv defaults: 100 steps, ζ = 0.1, λ = 7, σ = 0.05 (no noise model on the physics)",
    "DDRM": "deepinv defaults: 100 σ levels linspace(1, 0), η = 0.85, η_b = 1, σ_y = 0.01 (no noise model)",
}


class PriorlabDenoiser(DeepinvDenoiser):
    """A priorlab denoiser in deepinv's convention: ``forward(x, sigma)`` → x̂, both in [0, 1] units.

    Gradients flow through it (DPS differentiates the denoiser with respect to its input).
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        # Blind priorlab networks ignore sigma; σ-conditional ones take it in the same [0, 1] units.
        return self.net(x, sigma=sigma)


def linear_physics(op: LinearOperator) -> LinearPhysics:
    """deepinv ``LinearPhysics`` with A = Mᵀ (``op.measure``) and Aᵀ = M (``op.embed``)."""
    return LinearPhysics(A=lambda x, **kw: op.measure(x), A_adjoint=lambda y, **kw: op.embed(y),
                         img_size=op.image_shape)


def _dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n, n), rows = basis vectors; row 0 is the constant 1/√n."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def decomposable_physics(op: LinearOperator) -> DecomposablePhysics:
    """An exact SVD form of ``op`` for DDRM: U = I, s = 1 on the measured coordinates, V orthogonal.

    ``A(x) = mask ⊙ Vᵀx`` (image shaped), so ``A_adjoint(A(x)) = op.project(x)`` and the nonzero
    entries of ``A(x)`` are the entries of ``op.measure(x)`` in some order.

    Raises:
        NotImplementedError: an operator type without a known orthogonal completion.
    """
    c, h, w = op.image_shape
    if isinstance(op, MaskOperator):  # already diagonal in the pixel basis (deepinv's Inpainting)
        return DecomposablePhysics(mask=op.mask[None].float(), img_size=op.image_shape)

    if isinstance(op, BlockAverage):
        # Per s×s block, a 2-D orthonormal DCT; its (0, 0) coefficient is Σ block / s = our measurement.
        s = op.factor
        d64 = _dct_matrix(s)

        def to_blocks(x):  # (B, C, H, W) -> (B, C, H/s, W/s, s, s)
            return x.reshape(x.shape[0], c, h // s, s, w // s, s).permute(0, 1, 2, 4, 3, 5)

        def from_blocks(b):
            return b.permute(0, 1, 2, 4, 3, 5).reshape(b.shape[0], c, h, w)

        def v_adjoint(x):
            d = d64.to(x)
            return from_blocks(d @ to_blocks(x) @ d.T)

        def v(z):
            d = d64.to(z)
            return from_blocks(d.T @ to_blocks(z) @ d)

        mask = torch.zeros(1, c, h, w)
        mask[..., ::s, ::s] = 1.0  # the DC coefficient sits at the top-left of its block
        return DecomposablePhysics(V_adjoint=v_adjoint, V=v, mask=mask, img_size=op.image_shape)

    if isinstance(op, FourierSubset):
        # The operator's own real orthonormal Fourier basis (after its optional ±1 signs) is V.
        keep = op.kept.float()

        def v_adjoint(x):
            return op.coefficients(x).reshape(x.shape[0], c, h, w)

        def v(z):
            return op.image(z.reshape(z.shape[0], c, h * w))

        return DecomposablePhysics(V_adjoint=v_adjoint, V=v, mask=keep.view(1, c, h, w), img_size=op.image_shape)

    if isinstance(op, MatrixOperator):
        # V = [Aᵀ | an orthonormal basis of the null space], from the complete QR of Aᵀ (float64).
        a = op.matrix.to(torch.float64)
        k, n = a.shape
        q = torch.linalg.qr(a.T, mode="complete").Q
        vmat = torch.cat([a.T, q[:, k:]], dim=1).to(torch.float32)  # (N, N), columns orthonormal

        def v_adjoint(x):
            return (x.flatten(1) @ vmat.to(x)).view(x.shape[0], c, h, w)

        def v(z):
            return (z.flatten(1) @ vmat.to(z).T).view(z.shape[0], c, h, w)

        mask = torch.zeros(n)
        mask[:k] = 1.0
        return DecomposablePhysics(V_adjoint=v_adjoint, V=v, mask=mask.view(1, c, h, w), img_size=op.image_shape)

    raise NotImplementedError(f"no exact SVD form for {type(op).__name__}; DDRM is skipped for it")


def ddrm_measurement(physics: DecomposablePhysics, op: LinearOperator, c: torch.Tensor) -> torch.Tensor:
    """deepinv's measurement A x for the decomposable physics, computed from our measurement c only:
    A(Mc) = mask ⊙ Vᵀ M c equals A(x) because A kills the null space of Mᵀ."""
    return physics.A(op.embed(c))


def run_peer(name: str, net: torch.nn.Module, op: LinearOperator, c: torch.Tensor,
             seed: int) -> tuple[torch.Tensor, float]:
    """Reconstruct from c = op.measure(x) with one peer; returns (image (B, C, H, W), seconds).

    Each call re-seeds the global torch RNG (DDRM and DiffPIR draw from it; DDRM's own ``seed``
    argument is ignored when it is 0) and gives DPS its own generator, so runs are reproducible.
    The physics build (a dense QR for compressive sensing) is counted in the seconds.
    """
    denoiser = PriorlabDenoiser(net)
    shape = (c.shape[0], *op.image_shape)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    if name == "DPS" or name in DPS_VARIANTS:
        guidance = DPS_VARIANTS.get(name, dict(guidance="annealed", weight=1.0))
        model = DPS(denoiser, num_steps=1000, rng=torch.Generator().manual_seed(seed), **guidance)
        out = model(c, linear_physics(op), x_init=shape, seed=seed)
    elif name == "DiffPIR":
        model = DiffPIR(denoiser, data_fidelity=L2())
        out = model(c, linear_physics(op))
    elif name == "DDRM":
        physics = decomposable_physics(op)
        out = DDRM(denoiser)(ddrm_measurement(physics, op, c), physics)
    else:
        raise ValueError(f"unknown peer {name!r}; choose from {PEERS + tuple(DPS_VARIANTS)}")
    return out.detach().to(c.dtype), time.perf_counter() - t0
