"""The Jacobian A_y = ∇_y x̂(y) of a denoiser at one input (algorithms.md §2.1, §3.1).

For a bias-free ReLU network in **eval mode** x̂(y) = A_y·y exactly (zero net bias), so A_y is the
adaptive linear filter the network applies at y. In training mode its batch norm divides by the
statistics of the batch, which breaks homogeneity and couples the images of a batch; every function
here therefore runs the denoiser in eval mode (see :func:`eval_mode`).

Two ways to get at A_y for an image of N = C·H·W values:

* **exact**: all N rows by batched vector-Jacobian products (the input is replicated k times, one
  backward pass returns k rows), N² × 4 bytes of memory; refused above ``max_bytes``.
* **matrix-free**: :class:`JacobianOperator` applies Aᵀu (VJP) and Av (JVP by the double-backward
  trick) to batches of vectors; traces and Frobenius norms by Hutchinson's estimator with
  Rademacher probes, leading eigenpairs of the symmetric part by subspace iteration.

Vectors are flattened images of length N in row-major (C, H, W) order.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from priorlab.core.protocols import Denoiser

DEFAULT_MAX_BYTES = 256 * 2**20  # an exact Jacobian above this size is refused (float32 N² entries)


@contextlib.contextmanager
def eval_mode(denoiser: Denoiser) -> Iterator[None]:
    """Run ``denoiser`` in eval mode inside the block, restoring its modes afterwards.

    Bias-free homogeneity x̂(αy) = αx̂(y) and x̂(y) = A_y·y hold only with the running statistics of
    eval mode (algorithms.md §13 trap 3). A module found in training mode is switched, with a warning.
    """
    modules = [m for m in denoiser.modules() if m.training] if isinstance(denoiser, nn.Module) else []
    if modules:
        warnings.warn(f"{type(denoiser).__name__} was in training mode; switched to eval mode for the "
                      "analysis (bias-free identities hold only with running statistics)", stacklevel=3)
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m in modules:
            m.training = True


def exact_jacobian_bytes(numel: int) -> int:
    """Memory of a dense float32 N×N Jacobian, in bytes."""
    return 4 * numel * numel


def check_exact_size(numel: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Raise a clear ValueError when an exact N×N Jacobian would exceed ``max_bytes``."""
    need = exact_jacobian_bytes(numel)
    if need > max_bytes:
        raise ValueError(f"an exact Jacobian of an image with N = {numel} values needs N² × 4 bytes = "
                         f"{need / 2**20:,.0f} MiB, above the limit of {max_bytes / 2**20:,.0f} MiB; use the "
                         "matrix-free mode (Hutchinson estimates and subspace iteration), a smaller crop, "
                         "or raise the limit")


class JacobianOperator:
    """A_y = ∇_y x̂(y) at one input as a matrix-free linear operator.

    Args:
        denoiser: any :class:`~priorlab.core.Denoiser`; run in eval mode (see :func:`eval_mode`).
        y: the input, (C, H, W) or (1, C, H, W).
        sigma: passed through to the denoiser (blind networks ignore it), [0, 1] units.
        chunk: vectors per batched forward/backward pass (the input is replicated that many times);
            default min(64, 2²⁰ // N), which bounds the activations kept for the backward pass.

    Attributes:
        shape: (C, H, W); numel: N.
        denoised: x̂(y), (C, H, W), detached.
    """

    def __init__(self, denoiser: Denoiser, y: torch.Tensor, sigma: float | None = None, *,
                 chunk: int | None = None) -> None:
        if y.ndim == 4:
            if y.shape[0] != 1:
                raise ValueError(f"the Jacobian is taken at one image; got a batch of {y.shape[0]}")
            y = y[0]
        if y.ndim != 3:
            raise ValueError(f"y must have shape (C, H, W) or (1, C, H, W), got {tuple(y.shape)}")
        if not y.is_floating_point() or not torch.isfinite(y).all():
            raise ValueError("y must be a floating-point image without NaN or infinite values")
        if sigma is not None and not (math.isfinite(float(sigma)) and float(sigma) >= 0):
            raise ValueError(f"sigma must be a finite noise level >= 0 ([0, 1] units), got {sigma}")
        self.y = y.detach()
        self.denoiser, self.sigma = denoiser, sigma
        self.chunk = max(1, int(chunk) if chunk is not None else min(64, 2**20 // y.numel()))
        self.shape = tuple(y.shape)
        self.numel = y.numel()
        with torch.no_grad(), eval_mode(denoiser):
            self.denoised = denoiser(self.y[None], sigma)[0].detach()

    def _pass(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        inp = self.y.expand(k, *self.shape).clone().requires_grad_(True)
        return inp, self.denoiser(inp, self.sigma)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """Rows of products uᵢᵀA_y = (A_yᵀuᵢ)ᵀ for u of shape (k, N); returns (k, N)."""
        out = []
        with eval_mode(self.denoiser):
            for part in u.split(self.chunk):
                inp, den = self._pass(part.shape[0])
                (g,) = torch.autograd.grad(den, inp, part.reshape(den.shape).to(den.dtype))
                out.append(g.reshape(part.shape[0], -1).detach())
        return torch.cat(out)

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """Products A_y vᵢ for v of shape (k, N); returns (k, N).

        Double-backward trick: g(u) = A_yᵀu is linear in u, so ∂⟨g(u), v⟩/∂u = A_y v.
        """
        out = []
        with eval_mode(self.denoiser):
            for part in v.split(self.chunk):
                inp, den = self._pass(part.shape[0])
                u = torch.zeros_like(den, requires_grad=True)
                (g,) = torch.autograd.grad(den, inp, u, create_graph=True)
                (jv,) = torch.autograd.grad(g, u, part.reshape(g.shape).to(g.dtype))
                out.append(jv.reshape(part.shape[0], -1).detach())
        return torch.cat(out)

    def sym(self, v: torch.Tensor) -> torch.Tensor:
        """Products with the symmetric part ½(A_y + A_yᵀ), v (k, N) -> (k, N)."""
        return 0.5 * (self.jvp(v) + self.vjp(v))

    def rows(self, index: torch.Tensor, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Rows A_y[i, :] for flat indices ``index`` (k,), one VJP each; returns (k, N)."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        out = []
        for start in range(0, index.numel(), self.chunk):
            idx = index[start:start + self.chunk]
            basis = torch.zeros(idx.numel(), self.numel, dtype=self.y.dtype, device=self.y.device)
            basis[torch.arange(idx.numel()), idx.to(self.y.device)] = 1.0
            out.append(self.vjp(basis))
            if callback is not None:
                callback(start + idx.numel(), index.numel())
        return torch.cat(out)

    def matrix(self, *, max_bytes: int = DEFAULT_MAX_BYTES,
               callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """The exact Jacobian A_y, (N, N), row i = ∂x̂_i/∂y; refused above ``max_bytes`` (ValueError)."""
        check_exact_size(self.numel, max_bytes)
        return self.rows(torch.arange(self.numel), callback)


def rademacher(n: int, numel: int, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """n Rademacher probes (±1 with equal probability), (n, numel)."""
    bits = torch.randint(0, 2, (n, numel), generator=generator, device=device)
    return (2 * bits - 1).to(dtype)


def hutchinson(op: JacobianOperator, probes: int = 64, generator: torch.Generator | None = None,
               ) -> dict[str, tuple[float, float]]:
    """Unbiased Hutchinson estimates of tr A_y and ‖A_y‖_F², each as (mean, standard error).

    With Rademacher z: E[zᵀA z] = tr A and E‖Aᵀz‖² = ‖A‖_F² (E[zzᵀ] = I). Both use the same VJPs.
    """
    if probes < 2:
        raise ValueError(f"need at least 2 probes for a standard error, got {probes}")
    z = rademacher(probes, op.numel, generator, dtype=op.y.dtype, device=op.y.device)
    g = op.vjp(z)
    tr = (g * z).sum(1).double()
    fro = g.double().pow(2).sum(1)

    def stats(s: torch.Tensor) -> tuple[float, float]:
        return s.mean().item(), (s.std() / math.sqrt(s.numel())).item()

    return {"trace": stats(tr), "frobenius_sq": stats(fro)}


def leading_eigenpairs(op: JacobianOperator, k: int, *, iters: int = 20,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading k eigenpairs of the symmetric part S = ½(A + Aᵀ) by subspace iteration + Rayleigh-Ritz.

    Each iteration costs k JVPs and k VJPs. A denoiser's S has eigenvalues mostly in [0, 1], so the
    largest in magnitude are the leading ones.

    Returns:
        (eigenvalues (k,) descending, eigenvectors (k, N) orthonormal rows).
    """
    k = min(k, op.numel)
    q = torch.randn(k, op.numel, generator=generator, dtype=op.y.dtype, device=op.y.device)
    q = torch.linalg.qr(q.T.double())[0].T.to(op.y.dtype)
    for _ in range(iters):
        q = torch.linalg.qr(op.sym(q).T.double())[0].T.to(op.y.dtype)
    t = (q.double() @ op.sym(q).double().T)
    evals, evecs = torch.linalg.eigh(0.5 * (t + t.T))
    order = evals.abs().argsort(descending=True)
    return evals[order].to(op.y.dtype), (evecs[:, order].T.to(op.y.dtype) @ q)


@dataclass(frozen=True)
class JacobianAnalysis:
    """Measures of A_y = ∇_y x̂(y) at one input (algorithms.md §3.1).

    Attributes:
        exact: True when computed from the dense matrix, False for matrix-free estimates.
        sigma: the σ passed to the denoiser, [0, 1] units, or None.
        denoised: x̂(y), (C, H, W).
        trace: tr A_y (effective dimensionality, ICLR 2024 definition).
        trace_stderr: Hutchinson standard error (0 when exact).
        frobenius_sq: ‖A_y‖_F² = Σ s_k² (effective dimensionality, 2020 notebook definition).
        frobenius_sq_stderr: Hutchinson standard error (0 when exact).
        asymmetry: ‖A − Aᵀ‖_F / ‖A‖_F (estimated from the probes when not exact).
        net_bias_norm: ‖b(y)‖ with b(y) = x̂(y) − A_y·y (zero for bias-free nets in eval mode).
        denoised_norm: ‖x̂(y)‖, for a relative net bias.
        eigenvalues: eigenvalues of the symmetric part ½(A + Aᵀ): all N descending when exact,
            the leading k otherwise.
        eigenvectors: the leading k eigenvectors, (k, C, H, W) orthonormal (the adaptive basis).
        singular_values: all N singular values of A descending when exact, else None.
        matrix: the dense A_y (N, N) when exact and asked for, else None.
    """

    exact: bool
    sigma: float | None
    denoised: torch.Tensor
    trace: float
    trace_stderr: float
    frobenius_sq: float
    frobenius_sq_stderr: float
    asymmetry: float
    net_bias_norm: float
    denoised_norm: float
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    singular_values: torch.Tensor | None = None
    matrix: torch.Tensor | None = None


def analyze_jacobian(denoiser: Denoiser, y: torch.Tensor, sigma: float | None = None, *, mode: str = "auto",
                     num_eigen: int = 16, probes: int = 64, iters: int = 20,
                     generator: torch.Generator | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                     keep_matrix: bool = False, chunk: int | None = None,
                     callback: Callable[[int, int], None] | None = None) -> JacobianAnalysis:
    """Jacobian measures of ``denoiser`` at the input ``y`` (C, H, W) or (1, C, H, W).

    Args:
        mode: ``exact`` (dense N×N, refused above ``max_bytes``), ``matrix-free`` (Hutchinson with
            ``probes`` Rademacher probes, subspace iteration with ``iters`` steps), or ``auto`` (exact
            when it fits).
        num_eigen: how many leading eigenvectors of the symmetric part to return.
        generator: randomness of the probes and the starting subspace (matrix-free only).
        callback: ``callback(done, total)`` after each chunk of rows (exact mode).
    """
    if mode not in ("auto", "exact", "matrix-free"):
        raise ValueError(f"mode must be 'auto', 'exact' or 'matrix-free', got {mode!r}")
    if num_eigen < 1 or iters < 1:
        raise ValueError(f"num_eigen and iters must be >= 1, got {num_eigen} and {iters}")
    op = JacobianOperator(denoiser, y, sigma, chunk=chunk)
    exact = mode == "exact" or (mode == "auto" and exact_jacobian_bytes(op.numel) <= max_bytes)
    k = min(num_eigen, op.numel)
    yv, xh = op.y.reshape(-1), op.denoised.reshape(-1)
    if exact:
        a = op.matrix(max_bytes=max_bytes, callback=callback).double()
        fro = a.pow(2).sum().item()
        asym = (torch.linalg.matrix_norm(a - a.T) / max(math.sqrt(fro), 1e-300)).item()
        bias = (xh.double() - a @ yv.double()).norm().item()
        evals, evecs = torch.linalg.eigh(0.5 * (a + a.T))
        evals, evecs = evals.flip(0), evecs.flip(1)
        return JacobianAnalysis(
            exact=True, sigma=sigma, denoised=op.denoised, trace=a.trace().item(), trace_stderr=0.0,
            frobenius_sq=fro, frobenius_sq_stderr=0.0, asymmetry=asym, net_bias_norm=bias,
            denoised_norm=xh.norm().item(), eigenvalues=evals.float(),
            eigenvectors=evecs[:, :k].T.float().reshape(k, *op.shape),
            singular_values=torch.linalg.svdvals(a).float(), matrix=a.float() if keep_matrix else None)
    est = hutchinson(op, probes, generator)
    z = rademacher(probes, op.numel, generator, dtype=op.y.dtype, device=op.y.device)
    az, atz = op.jvp(z).double(), op.vjp(z).double()
    # E‖(A − Aᵀ)z‖² = ‖A − Aᵀ‖_F² and E‖Aᵀz‖² = ‖A‖_F² for Rademacher z.
    asym = math.sqrt((az - atz).pow(2).sum(1).mean().item() / max(atz.pow(2).sum(1).mean().item(), 1e-300))
    bias = (xh - op.jvp(yv[None])[0]).norm().item()
    evals, evecs = leading_eigenpairs(op, k, iters=iters, generator=generator)
    return JacobianAnalysis(
        exact=False, sigma=sigma, denoised=op.denoised, trace=est["trace"][0], trace_stderr=est["trace"][1],
        frobenius_sq=est["frobenius_sq"][0], frobenius_sq_stderr=est["frobenius_sq"][1], asymmetry=asym,
        net_bias_norm=bias, denoised_norm=xh.norm().item(), eigenvalues=evals,
        eigenvectors=evecs.reshape(k, *op.shape))
