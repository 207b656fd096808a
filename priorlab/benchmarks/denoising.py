"""Denoising quality: a denoiser and BM3D side by side on identical noisy images (algorithms.md §2.7).

Protocol (the 2020 paper's, with its choices stated):

* one noise realization per (image, σ₂₅₅), drawn on the CPU in float32 from a ``torch.Generator``
  seeded from (seed, image index, σ₂₅₅) by :func:`noise_seed`, so every method, device and run
  sees the same noisy image;
* the noisy input y = x + σz is **not** clipped to [0, 1] (``clip_input=True`` clips it, and the
  input PSNR is then that of the clipped image, as the 2020 repository's stored input PSNRs suggest);
* outputs are clamped to [0, 1] before the metrics; PSNR (peak 1) and SSIM (torchmetrics' Gaussian
  11×11 window, σ 1.5, ``data_range=1``) per image, in float64, then averaged over images.

Everything here is a pure function: no file I/O, no progress bars (a ``progress`` callback receives
each record), randomness only from the seed.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from priorlab.core.noise import sigma_from_255

Progress = Callable[["DenoisingRecord"], None]


@dataclass(frozen=True)
class DenoisingRecord:
    """Quality of one method on one image at one noise level.

    Attributes:
        method: who denoised (``BM3D``, a checkpoint name...).
        dataset: test-set name (``bsd68``...).
        image: image name within the dataset.
        index: position of the image in its dataset (part of the noise seed).
        sigma_255: noise standard deviation on the 0-255 scale.
        psnr_in: PSNR in dB of the input the method received (clipped only if ``clip_input``).
        psnr: PSNR in dB of the output clamped to [0, 1] (``inf`` for an exact reconstruction).
        ssim: SSIM of the clamped output.
        seconds: wall-clock denoising time for this image (a batch's time split evenly).
    """

    method: str
    dataset: str
    image: str
    index: int
    sigma_255: float
    psnr_in: float
    psnr: float
    ssim: float
    seconds: float


@dataclass(frozen=True)
class PublishedResult:
    """A published mean output PSNR curve, for side-by-side tables.

    Attributes:
        method: column label.
        dataset: test set the numbers are on.
        psnr: mean output PSNR in dB by σ₂₅₅.
        source: where the numbers come from.
        verified: whether they were checked against their source.
        psnr_in: the published input PSNRs by σ₂₅₅, where known.
        train_range_255: the σ₂₅₅ range the published network was trained on.
        biased: whether the published network has biases (the biased counterpart).
    """

    method: str
    dataset: str
    psnr: dict[float, float]
    source: str
    verified: bool = True
    psnr_in: dict[float, float] = field(default_factory=dict)
    train_range_255: tuple[float, float] = (0.0, 100.0)
    biased: bool = False


# algorithms.md §12.1: bias_free_denoising precomputed/dncnn/bias_free/0to100_metrics.p, Set68 = BSD68.
BF_DNCNN_BSD68 = PublishedResult(
    method="BF-DnCNN [0,100] (published)",
    dataset="bsd68",
    psnr={10: 33.65, 20: 30.13, 30: 28.29, 40: 27.09, 50: 26.20,
          60: 25.51, 70: 24.94, 80: 24.47, 90: 24.07, 100: 23.69},
    psnr_in={10: 28.27, 20: 22.35, 30: 18.97, 40: 16.64, 50: 14.91,
             60: 13.57, 70: 12.50, 80: 11.63, 90: 10.91, 100: 10.31},
    source="LabForComputationalVision/bias_free_denoising precomputed metrics (algorithms.md §12.1)",
)
# algorithms.md §12.2 "sanity anchor": attributed to Zhang et al. 2017, not checked against the paper.
DNCNN_B_BSD68 = PublishedResult(
    method="DnCNN-B (published, not verified)",
    dataset="bsd68",
    psnr={15: 31.61, 25: 29.16, 50: 26.23},
    source="attributed to Zhang et al. 2017 (DnCNN), NOT VERIFIED (algorithms.md §12.2)",
    verified=False,
    train_range_255=(0.0, 55.0),  # DnCNN-B: blind, biased, σ₂₅₅ ∈ [0, 55]
    biased=True,
)
PUBLISHED: tuple[PublishedResult, ...] = (BF_DNCNN_BSD68, DNCNN_B_BSD68)
# algorithms.md §12.1: the same files, nets trained on σ₂₅₅ ∈ [0, 10] only (the generalization experiment).
BF_DNCNN_S10_BSD68 = PublishedResult(
    method="BF-DnCNN [0,10] (published)",
    dataset="bsd68",
    psnr={10: 33.84, 20: 30.14, 30: 28.15, 40: 26.82, 50: 25.80,
          60: 24.99, 70: 24.31, 80: 23.74, 90: 23.25, 100: 22.83},
    psnr_in=BF_DNCNN_BSD68.psnr_in,
    source=BF_DNCNN_BSD68.source,
    train_range_255=(0.0, 10.0),
)
DNCNN_S10_BSD68 = PublishedResult(
    method="DnCNN [0,10] (published)",
    dataset="bsd68",
    psnr={10: 33.69, 20: 24.04, 30: 19.80, 40: 17.17, 50: 15.29,
          60: 13.87, 70: 12.73, 80: 11.82, 90: 11.07, 100: 10.45},
    psnr_in=BF_DNCNN_BSD68.psnr_in,
    source=BF_DNCNN_BSD68.source,
    train_range_255=(0.0, 10.0),
    biased=True,
)
PUBLISHED_ALL: tuple[PublishedResult, ...] = (*PUBLISHED, BF_DNCNN_S10_BSD68, DNCNN_S10_BSD68)


def published_like(dataset: str, config: dict) -> list[PublishedResult]:
    """:func:`published_for` the network a prior config describes: its ``sigma_range_255`` and its
    ``bias`` switch, read from ``init_args`` (a prior folder's config.json) or ``arch_config.init_args``
    (a checkpoint's). No range recorded: no published curve."""
    rng = config.get("sigma_range_255")
    init = config.get("init_args") or (config.get("arch_config") or {}).get("init_args") or {}
    return published_for(dataset, rng, bool(init.get("bias", False))) if rng else []


def published_for(dataset: str, train_range_255: Sequence[float], biased: bool) -> list[PublishedResult]:
    """The verified published curves of networks trained like a given one (same σ range and bias) on a test set."""
    key = tuple(float(v) for v in train_range_255)
    return [p for p in PUBLISHED_ALL if p.verified and p.dataset == dataset and p.train_range_255 == key
            and p.biased == biased]


# ---- noise -----------------------------------------------------------------------------------------
def noise_seed(seed: int, index: int, sigma_255: float) -> int:
    """Seed of the noise for image ``index`` at σ₂₅₅, independent of run order and device.

    A hash, not a sum: ``seed + index`` style formulas make image 1 at seed 0 share noise with
    image 0 at seed 1.
    """
    text = f"priorlab-denoise/{int(seed)}/{int(index)}/{float(sigma_255):.6g}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def benchmark_noise(shape: Sequence[int], sigma_255: float, *, seed: int, index: int) -> torch.Tensor:
    """The noise σ·z added to image ``index`` at σ₂₅₅: float32 on the CPU, shape ``shape``.

    Drawn on the CPU so that the realization does not depend on the accelerator.
    """
    g = torch.Generator().manual_seed(noise_seed(seed, index, sigma_255))
    z = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    return float(sigma_from_255(sigma_255)) * z


def noisy_image(clean: torch.Tensor, sigma_255: float, *, seed: int, index: int,
                clip: bool = False) -> torch.Tensor:
    """y = x + σz for one clean image (C, H, W) in [0, 1] (float32, CPU); clipped to [0, 1] if ``clip``."""
    noise = benchmark_noise(clean.shape, sigma_255, seed=seed, index=index)
    y = clean.detach().to("cpu", torch.float32) + noise
    return y.clamp(0, 1) if clip else y


# ---- metrics ---------------------------------------------------------------------------------------
def image_metrics(output: torch.Tensor, clean: torch.Tensor) -> tuple[list[float], list[float]]:
    """PSNR (dB, peak 1) and SSIM per image of ``output`` clamped to [0, 1] against ``clean``.

    Args:
        output: estimates (B, C, H, W), any range (clamped here, 2020 protocol).
        clean: references (B, C, H, W) in [0, 1].

    Returns:
        ``(psnr, ssim)``, one float per image each.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    # float64: PSNRs above ~50 dB lose digits in float32 MSEs.
    out = output.detach().to("cpu", torch.float64).clamp(0, 1)
    ref = clean.detach().to("cpu", torch.float64)
    psnr = peak_signal_noise_ratio(out, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(out, ref, data_range=1.0, reduction="none")
    return psnr.tolist(), ssim.reshape(-1).tolist()


def input_psnr(noisy: torch.Tensor, clean: torch.Tensor) -> float:
    """PSNR in dB (peak 1) of a noisy image (C, H, W) exactly as given (not clamped)."""
    mse = (noisy.double() - clean.double()).pow(2).mean().item()
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


# ---- evaluation ------------------------------------------------------------------------------------
def _names(images: Sequence[torch.Tensor], names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"{i:03d}" for i in range(len(images))]
    if len(names) != len(images):
        raise ValueError(f"got {len(names)} names for {len(images)} images")
    return list(names)


def _check(images: Sequence[torch.Tensor], sigmas_255: Sequence[float]) -> None:
    for i, x in enumerate(images):
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
            raise ValueError(f"image {i} must be a float tensor (C, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"image {i} has values outside [0, 1]; divide 8-bit images by 255")
    if any(s < 0 for s in sigmas_255):
        raise ValueError(f"noise levels must be >= 0, got {list(sigmas_255)}")


def _batches(images: Sequence[torch.Tensor], batch_size: int) -> Iterable[list[int]]:
    """Indices of consecutive images of equal shape, at most ``batch_size`` at a time."""
    batch: list[int] = []
    for i, x in enumerate(images):
        if batch and (len(batch) == batch_size or images[batch[0]].shape != x.shape):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.inference_mode()
def evaluate_denoiser(denoiser: Callable[..., torch.Tensor], images: Sequence[torch.Tensor],
                      sigmas_255: Sequence[float], *, names: Sequence[str] | None = None,
                      method: str = "model", dataset: str = "", seed: int = 0, clip_input: bool = False,
                      batch_size: int = 1, device: str | torch.device = "cpu",
                      progress: Progress | None = None) -> list[DenoisingRecord]:
    """Denoise every image at every noise level and measure PSNR/SSIM (protocol in the module docstring).

    Args:
        denoiser: a ``Denoiser`` (``denoiser(y, sigma=σ) -> x̂``, y of shape (B, C, H, W)), already on
            ``device`` and in eval mode; blind networks ignore ``sigma`` (σ in [0, 1] units).
        images: clean images (C, H, W) in [0, 1], any sizes.
        sigmas_255: noise levels on the 0-255 scale.
        names: one name per image (default ``000``, ``001``...).
        method: label of the records.
        dataset: test-set name of the records.
        seed: noise seed (see :func:`noise_seed`).
        clip_input: clip the noisy input to [0, 1] before denoising.
        batch_size: images per forward pass (only consecutive images of equal size are batched).
        device: where the denoiser runs.
        progress: called with each record as it is made.

    Returns:
        One record per (σ, image), σ-major in the order given.
    """
    _check(images, sigmas_255)
    names = _names(images, names)
    device = torch.device(device)
    records: list[DenoisingRecord] = []
    for s255 in sigmas_255:
        sigma = float(sigma_from_255(s255))
        for batch in _batches(images, max(1, batch_size)):
            clean = torch.stack([images[i].to("cpu", torch.float32) for i in batch])
            noisy = torch.stack([noisy_image(images[i], s255, seed=seed, index=i, clip=clip_input)
                                 for i in batch])
            y = noisy.to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            out = denoiser(y, sigma=sigma)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = (time.perf_counter() - start) / len(batch)
            if out.shape != y.shape:
                raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(y.shape)}")
            psnr, ssim = image_metrics(out, clean)
            for k, i in enumerate(batch):
                rec = DenoisingRecord(method=method, dataset=dataset, image=names[i], index=i,
                                      sigma_255=float(s255), psnr_in=input_psnr(noisy[k], clean[k]),
                                      psnr=psnr[k], ssim=ssim[k], seconds=seconds)
                records.append(rec)
                if progress is not None:
                    progress(rec)
    return records


def _bm3d_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bm3d")
    except PackageNotFoundError:
        return "unknown"


def image_digest(x: torch.Tensor) -> str:
    """Short content hash of an image (so a cache entry dies with the image it was made from)."""
    data = x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha1(data + str(tuple(x.shape)).encode()).hexdigest()[:16]


def bm3d_cache_key(dataset: str, name: str, index: int, sigma_255: float, seed: int, clean: torch.Tensor,
                   *, clip_input: bool = False, profile: str = "np") -> str:
    """Key of one BM3D result in a cache: everything the result depends on, including bm3d's version."""
    return (f"bm3d={_bm3d_version()}|profile={profile}|dataset={dataset}|image={name}|index={index}|"
            f"sigma255={float(sigma_255):.6g}|seed={seed}|clip={int(clip_input)}|"
            f"channels={clean.shape[0]}|digest={image_digest(clean)}")


_BM3D_PROFILES = {"np": "BM3DProfile", "refilter": "BM3DProfileRefilter", "vn": "BM3DProfileVN",
                  "high": "BM3DProfileHigh", "vn_old": "BM3DProfileVNOld", "deb": "BM3DProfileDeb"}


def _bm3d_denoise(z: Any, sigma: float, profile: str, num_threads: int) -> Any:
    """BM3D on one noisy image, (H, W) or (H, W, 3) float64, with the true σ ([0, 1] units)."""
    import bm3d
    from bm3d import profiles

    pro = getattr(profiles, _BM3D_PROFILES[profile])()
    pro.num_threads = num_threads
    if z.ndim == 3:
        # bm3d_rgb: opponent colour transform, block matching on its luminance, σ per channel scaled inside.
        return bm3d.bm3d_rgb(z, sigma, profile=pro)
    return bm3d.bm3d(z, sigma_psd=sigma, profile=pro)


def evaluate_bm3d(images: Sequence[torch.Tensor], sigmas_255: Sequence[float], *,
                  names: Sequence[str] | None = None, dataset: str = "", seed: int = 0,
                  clip_input: bool = False, profile: str = "np", num_threads: int = 0,
                  cache: MutableMapping[str, dict[str, Any]] | None = None,
                  progress: Progress | None = None, method: str = "BM3D") -> list[DenoisingRecord]:
    """BM3D (the ``bm3d`` package) with the true σ, on exactly the noisy images of :func:`evaluate_denoiser`.

    Gray images (1 channel) go through ``bm3d.bm3d``, colour ones (3 channels) through
    ``bm3d.bm3d_rgb``. BM3D takes seconds per 481×321 image, so ``cache`` (any mutable mapping,
    e.g. a dict the caller loads from and saves to JSON) skips results already known; its keys come
    from :func:`bm3d_cache_key` and its values are the records' fields.

    Args:
        images: clean images (C, H, W) in [0, 1], C = 1 or 3.
        sigmas_255: noise levels on the 0-255 scale.
        names: one name per image (default ``000``, ``001``...).
        dataset: test-set name (records and cache keys).
        seed: noise seed (see :func:`noise_seed`).
        clip_input: clip the noisy input to [0, 1] before denoising.
        profile: BM3D profile: ``np`` (the package default), ``refilter``, ``vn``, ``high``,
            ``vn_old`` or ``deb``.
        num_threads: BM3D's own worker threads; 0 (the package default) = all cores. Results with
            more than one thread may differ in the last digits from run to run (the package's note:
            the summation order of its aggregation changes), far below the 0.01 dB reported.
        cache: results by key, read and updated in place.
        progress: called with each record as it is made.
        method: label of the records.

    Returns:
        One record per (σ, image), σ-major in the order given.

    Raises:
        ImportError: the ``bm3d`` package is not installed (``pip install priorlab[bench]``).
        ValueError: an image with a channel count other than 1 or 3, or an unknown profile.
    """
    try:
        import bm3d  # noqa: F401  (fail before any work)
    except ImportError as err:
        raise ImportError("evaluate_bm3d needs the bm3d package: pip install 'priorlab[bench]'") from err
    if profile not in _BM3D_PROFILES:
        raise ValueError(f"unknown BM3D profile {profile!r}; choose one of {sorted(_BM3D_PROFILES)}")
    _check(images, sigmas_255)
    names = _names(images, names)
    for i, x in enumerate(images):
        if x.shape[0] not in (1, 3):
            raise ValueError(f"BM3D needs gray or RGB images; image {i} has {x.shape[0]} channels")

    records: list[DenoisingRecord] = []
    fields = [k for k in DenoisingRecord.__dataclass_fields__ if k != "method"]
    for s255 in sigmas_255:
        for i, x in enumerate(images):
            key = bm3d_cache_key(dataset, names[i], i, s255, seed, x, clip_input=clip_input, profile=profile)
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                rec = DenoisingRecord(method=method, **{k: hit[k] for k in fields})
            else:
                clean = x.to("cpu", torch.float32)
                noisy = noisy_image(clean, s255, seed=seed, index=i, clip=clip_input)
                z = noisy.double().numpy()
                z = z[0] if z.shape[0] == 1 else z.transpose(1, 2, 0)
                start = time.perf_counter()
                out = _bm3d_denoise(z, float(sigma_from_255(s255)), profile, num_threads)
                seconds = time.perf_counter() - start
                out_t = torch.as_tensor(out, dtype=torch.float64)
                out_t = out_t.permute(2, 0, 1) if out_t.ndim == 3 else out_t[None]
                psnr, ssim = image_metrics(out_t[None], clean[None])
                rec = DenoisingRecord(method=method, dataset=dataset, image=names[i], index=i,
                                      sigma_255=float(s255), psnr_in=input_psnr(noisy, clean),
                                      psnr=psnr[0], ssim=ssim[0], seconds=seconds)
                if cache is not None:
                    cache[key] = {k: getattr(rec, k) for k in fields}
            records.append(rec)
            if progress is not None:
                progress(rec)
    return records


# ---- reporting -------------------------------------------------------------------------------------
SummaryKey = tuple[str, str, float]


def summarize(records: Iterable[DenoisingRecord]) -> dict[SummaryKey, dict[str, float]]:
    """Means over images by (method, dataset, σ₂₅₅): ``psnr``, ``ssim``, ``psnr_in``, ``seconds``, ``n``."""
    groups: dict[SummaryKey, list[DenoisingRecord]] = defaultdict(list)
    for r in records:
        groups[(r.method, r.dataset, float(r.sigma_255))].append(r)
    out: dict[SummaryKey, dict[str, float]] = {}
    for key, recs in groups.items():
        n = len(recs)
        out[key] = {"psnr": sum(r.psnr for r in recs) / n, "ssim": sum(r.ssim for r in recs) / n,
                    "psnr_in": sum(r.psnr_in for r in recs) / n, "seconds": sum(r.seconds for r in recs) / n,
                    "n": float(n)}
    return out


def format_markdown_table(summary: dict[SummaryKey, dict[str, float]], *,
                          published: Sequence[PublishedResult] = PUBLISHED,
                          datasets: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                          show_psnr_in: bool = True) -> str:
    """A markdown table: one row per σ₂₅₅, one column per (dataset, method), cells ``PSNR / SSIM``.

    Published curves (PSNR only) get a column on their dataset when they have a value at one of the
    table's σ; empty cells read ``—``. Column titles name the dataset only when there are several
    (pass ``datasets=[name]`` for one table per dataset).

    Args:
        summary: output of :func:`summarize`.
        published: published curves to show beside the measured ones.
        datasets: column order of datasets (default: order of first appearance).
        methods: column order of methods within a dataset (default: order of first appearance).
        show_psnr_in: add a mean input-PSNR column per dataset.

    Returns:
        The table, ending with a newline.
    """
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(k[1] for k in summary))
    methods = list(methods) if methods is not None else list(dict.fromkeys(k[0] for k in summary))
    sigmas = sorted({k[2] for k in summary if k[1] in datasets})

    def title(ds: str, what: str) -> str:
        # With one dataset the columns need not repeat its name.
        return f"{ds} · {what}" if len(datasets) > 1 and ds else what

    header, columns = ["σ₂₅₅"], []
    for ds in datasets:
        ms = [m for m in methods if any((m, ds, s) in summary for s in sigmas)]
        if show_psnr_in and ms:
            header.append(title(ds, "input PSNR"))
            columns.append(("in", ds, ms[0]))
        for m in ms:
            header.append(title(ds, m))
            columns.append(("measured", ds, m))
        for pub in published:
            if pub.dataset == ds and any(float(s) in pub.psnr for s in sigmas):
                header.append(title(ds, pub.method))
                columns.append(("published", ds, pub))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in sigmas:
        cells = [f"{s:g}"]
        for kind, ds, what in columns:
            if kind == "published":
                v = what.psnr.get(s)
                cells.append("—" if v is None else f"{v:.2f}")
                continue
            row = summary.get((what, ds, s))
            if row is None:
                cells.append("—")
            elif kind == "in":
                cells.append(f"{row['psnr_in']:.2f}")
            else:
                cells.append(f"{row['psnr']:.2f} / {row['ssim']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def describe_machine(device: str | torch.device | None = None) -> dict[str, Any]:
    """Where a benchmark ran: OS, CPU, core count, Python/torch versions and, on CUDA, the GPU name."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:  # platform.processor() is empty or just "x86_64" on Linux
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__}
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    return info
