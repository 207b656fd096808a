"""The catalog of published priors: what ``priorlab zoo list`` shows and ``zoo.load(name)`` resolves.

Each entry pins where the weights live — inside the package (``bundled``) or in a Hub repository at a
40-hex commit — and the sha256 of ``model.safetensors``; a file whose hash differs is never loaded.
Names are lower-case words joined by ``-`` (``bf-dncnn-small-gray``); the same weights are reachable
from timm as ``<architecture>.<timm_tag>`` (ecosystem.md §3).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_NAME = re.compile(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class PriorEntry:
    """A published prior.

    Attributes:
        name: catalog name, e.g. ``bf-dncnn-small-gray``.
        kind: ``denoiser`` or ``energy``.
        architecture: registry architecture name (``bf_dncnn_small``).
        channels: 1 (gray) or 3 (RGB).
        params: number of parameters.
        data: training data, one line.
        sigma_range_255: training noise range on the 0–255 scale.
        headline: one headline metric, e.g. ``"BSD68 σ=25: 28.6 dB"``.
        sha256: sha256 of ``model.safetensors``.
        bundled: folder name under ``priorlab/zoo/bundled`` when the prior ships inside the package.
        hub_repo: ``org/name`` of the Hub repository, when published there.
        revision: the pinned 40-hex commit of ``hub_repo``.
        timm_tag: tag of the timm name ``<architecture>.<timm_tag>`` that loads these weights.
        description: one paragraph for ``zoo show``.
    """

    name: str
    kind: str
    architecture: str
    channels: int
    params: int
    data: str
    sigma_range_255: tuple[float, float]
    headline: str
    sha256: str
    bundled: str | None = None
    hub_repo: str | None = None
    revision: str | None = None
    timm_tag: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"prior name {self.name!r} must be lower-case words joined by '-'")
        if not _SHA256.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lower-case hex digits")
        if (self.bundled is None) == (self.hub_repo is None):
            raise ValueError(f"{self.name}: give exactly one of bundled= or hub_repo=")
        if self.hub_repo is not None and not (self.revision and _COMMIT.match(self.revision)):
            raise ValueError(f"{self.name}: a Hub prior must pin a 40-hex commit revision, got {self.revision!r}")

    @property
    def location(self) -> str:
        """Where the weights live, for tables: ``bundled`` or ``hf-hub:org/name@rev12``."""
        if self.bundled is not None:
            return "bundled"
        return f"hf-hub:{self.hub_repo}@{self.revision[:12]}"

    @property
    def timm_name(self) -> str | None:
        """``<architecture>.<tag>`` for ``timm.create_model(..., pretrained=True)``."""
        return f"{self.architecture}.{self.timm_tag}" if self.timm_tag else None

    def bundled_path(self) -> Path:
        """Folder of a bundled prior inside the installed package."""
        if self.bundled is None:
            raise ValueError(f"{self.name} is not bundled (it lives at {self.location})")
        return Path(str(resources.files("priorlab.zoo") / "bundled" / self.bundled))


BSD400_GRAY = "BSD400 (400 gray 180x180 Berkeley images, the bias-free paper's training set)"
PHOTOS_COLOR = ("built-in color photos + mate-backgrounds (21 photos: the 9 built-in color training photos and the 12 "
                "nature photos of Debian's mate-backgrounds)")
PHOTOS_COLOR_33 = ("built-in color + mate/plasma wallpapers (33 photos: the 9 built-in color training photos, the 12 "
                   "nature photos of Debian's mate-backgrounds and 12 photographs of Debian's "
                   "plasma-workspace-wallpapers)")

_ENTRIES: dict[str, PriorEntry] = {}


def register_prior(entry: PriorEntry, *, replace: bool = False) -> PriorEntry:
    """Add a prior to the catalog (``replace`` to redefine a name, e.g. in tests or private catalogs)."""
    if entry.name in _ENTRIES and not replace:
        raise ValueError(f"prior {entry.name!r} is already in the catalog")
    if entry.timm_tag is not None:
        for other in _ENTRIES.values():
            if other.name != entry.name and other.timm_name == entry.timm_name:
                raise ValueError(f"timm name {entry.timm_name!r} already belongs to {other.name!r}")
    _ENTRIES[entry.name] = entry
    return entry


def unregister_prior(name: str) -> None:
    """Remove a prior from the catalog (no error if absent)."""
    _ENTRIES.pop(name, None)


def list_priors(kind: str | None = None) -> list[PriorEntry]:
    """Catalog entries, sorted by name (optionally of one kind)."""
    return [e for _, e in sorted(_ENTRIES.items()) if kind is None or e.kind == kind]


def get_prior(name: str) -> PriorEntry:
    """The catalog entry of a prior name.

    Raises:
        KeyError: unknown name (the message lists the closest known names).
    """
    if name in _ENTRIES:
        return _ENTRIES[name]
    close = difflib.get_close_matches(name, list(_ENTRIES), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(sorted(_ENTRIES)) or "none"
    raise KeyError(f"unknown prior {name!r}.{hint} Known priors: {known} (priorlab zoo list). Other sources: "
                   "a checkpoint path (.ckpt), local-dir:PATH or hf-hub:ORG/REPO[@REVISION]")


def find_timm_tag(architecture: str, tag: str | None, channels: int | None = None) -> PriorEntry:
    """The prior behind ``timm.create_model("<architecture>[.<tag>]", pretrained=True)``.

    An empty tag picks the first catalog entry (by name) with weights for that architecture and, when
    ``channels`` is given, that many channels (``in_chans``; gray by default, as the architectures are).
    """
    matches = [e for e in list_priors() if e.architecture == architecture and e.timm_tag is not None]
    if tag:
        matches = [e for e in matches if e.timm_tag == tag]
    elif channels is not None:
        matches = [e for e in matches if e.channels == channels]
    if not matches:
        tags = sorted(e.timm_name for e in list_priors() if e.timm_tag)
        raise ValueError(f"no pretrained weights for {architecture}{'.' + tag if tag else ''}; pretrained tags: "
                         f"{', '.join(tags) or 'none'}")
    return matches[0]


register_prior(PriorEntry(
    name="bf-dncnn-small-gray",
    kind="denoiser",
    architecture="bf_dncnn_small",
    channels=1,
    params=74_560,
    data=BSD400_GRAY,
    sigma_range_255=(0.0, 100.0),
    headline="BSD68 σ=25: 27.79 dB",
    sha256="627c9bb626f4fbef6ae143df287027eb70036eea9639bcbbf239953a785cb00d",
    bundled="bf-dncnn-small-gray",
    timm_tag="bsd400_gray_cpu",
    description=("Blind bias-free DnCNN, 10 layers x 32 channels, trained on BSD400 for sigma in [0, 100]/255 on a "
                 "2-core CPU in 73 minutes (configs/bf_dncnn_small_bsd400_gray_cpu.yaml). Small and fast: the default "
                 "prior for trying samplers, solvers and analysis on a laptop. Gray images in [0, 1], any size. "
                 "Below BM3D; the paper-size bf-dncnn-gray needs a GPU run."),
))

register_prior(PriorEntry(
    name="bf-dncnn-small-gray-s10",
    kind="denoiser",
    architecture="bf_dncnn_small",
    channels=1,
    params=74_560,
    data=BSD400_GRAY,
    sigma_range_255=(0.0, 10.0),
    headline="BSD68 σ=100 (10x its range): 16.74 dB",
    sha256="65e67e1afb95de194317143cebec908f6565517f32a2356121674e458724ef2e",
    bundled="bf-dncnn-small-gray-s10",
    timm_tag="bsd400_gray_s10_cpu",
    description=("Blind bias-free DnCNN, 10 layers x 32 channels, trained on BSD400 for sigma in [0, 10]/255 only "
                 "(34 CPU-minutes). With its biased twin dncnn-small-gray-s10-biased it reproduces the bias-free "
                 "paper's generalization experiment: both are good inside [0, 10], only the bias-free one keeps "
                 "denoising above it (priorlab analyze noise-generalization)."),
))

register_prior(PriorEntry(
    name="dncnn-small-gray-s10-biased",
    kind="denoiser",
    architecture="dncnn_small",
    channels=1,
    params=75_105,
    data=BSD400_GRAY,
    sigma_range_255=(0.0, 10.0),
    headline="BSD68 σ=100 (10x its range): 10.35 dB",
    sha256="d4699298bacfd48d38530061233f354ebb6f6b4415b6bf7cd7304f73016c0bf4",
    bundled="dncnn-small-gray-s10-biased",
    timm_tag="bsd400_gray_s10_cpu",
    description=("The biased counterpart of bf-dncnn-small-gray-s10 (convolution biases, ordinary batch norm; same "
                 "data, recipe and seed): as good inside sigma in [0, 10]/255, useless above it. For the "
                 "generalization experiment, not for denoising."),
))

register_prior(PriorEntry(
    name="bf-dncnn-small-color",
    kind="denoiser",
    architecture="bf_dncnn_small",
    channels=3,
    params=75_712,
    data=PHOTOS_COLOR,
    sigma_range_255=(0.0, 100.0),
    headline="Set5 σ=25: 28.96 dB",
    sha256="901b05b1f83d2b1c8efb4c6eb2e74bfb2a4cdf450ef237a305cb6e662b31e1a6",
    bundled="bf-dncnn-small-color",
    timm_tag="photos_color_cpu",
    description=("Blind bias-free DnCNN for RGB images, 10 layers x 32 channels, sigma in [0, 100]/255, trained on a "
                 "2-core CPU in 32 minutes on 21 color photos (configs/bf_dncnn_small_photos_color_cpu.yaml). Lets "
                 "every color workflow run offline; weak: 2.5-4.8 dB below color BM3D on Set5/Set14, and worse "
                 "than the identity at sigma 5/255 on textured images. The paper-size bf-dncnn-color needs a GPU."),
))

register_prior(PriorEntry(
    name="bf-unet-small-gray",
    kind="denoiser",
    architecture="bf_unet_small",
    channels=1,
    params=479_424,
    data=BSD400_GRAY,
    sigma_range_255=(0.0, 100.0),
    headline="BSD68 σ=25: 27.36 dB",
    sha256="aa97a571f7fff2b52beb82db9e9566247da04902ba931b58774efd793baf2589",
    bundled="bf-unet-small-gray",
    timm_tag="bsd400_gray_cpu",
    description=("Blind bias-free UNet, 3 scales 16/32/64 with 128 channels in the middle, trained on BSD400 for "
                 "sigma in [0, 100]/255 on a 2-core CPU in 69 minutes (configs/bf_unet_small_bsd400_gray_cpu.yaml). "
                 "Its receptive field (92 pixels) sees across holes that the small DnCNN's 21 pixels cannot, so it "
                 "is the better small prior for inpainting and other inverse problems. As a denoiser: +1.8 dB over "
                 "bf-dncnn-small-gray on BSD68 at sigma 5/255, 0.1-0.4 dB behind it from 15/255 up; below BM3D."),
))

register_prior(PriorEntry(
    name="bf-unet-small-color",
    kind="denoiser",
    architecture="bf_unet_small",
    channels=3,
    params=480_000,
    data=PHOTOS_COLOR_33,
    sigma_range_255=(0.0, 100.0),
    headline="Set5 σ=25: 30.89 dB",
    sha256="f0fd97979554d79ef589169e52acd76fb89c123008b87bea870c7343a6383ee2",
    bundled="bf-unet-small-color",
    timm_tag="photos_color_cpu",
    description=("Blind bias-free UNet for RGB images, 3 scales 16/32/64 with 128 channels in the middle, sigma in "
                 "[0, 100]/255, trained on a 2-core CPU in 69 minutes on 21 color photos, then 49 more on those "
                 "and 12 photographs of plasma-workspace-wallpapers (configs/bf_unet_small_photos_color_cpu.yaml, "
                 "then ..._cpu_stage2.yaml). Its receptive field (92 pixels) lets it fill holes with the colors "
                 "around them, where the small DnCNN (21 pixels) cannot. 1.0-2.5 dB above bf-dncnn-small-color "
                 "as a denoiser, still 0.7-3.7 dB below color BM3D on Set5/Set14."),
))

register_prior(PriorEntry(
    name="dsm-energy-small-fashion-mnist",
    kind="energy",
    architecture="energy_unet_small",
    channels=1,
    params=204_064,
    data=("Fashion-MNIST train (59,000 of the 60,000 28x28 images, h-flips; the last 1,000 calibrate C), from "
          "Debian's dataset-fashion-mnist"),
    sigma_range_255=(0.008063808033429367, 8063.808033429367),
    headline="Fashion-MNIST test: 3.35 bits/dim",
    sha256="105d2cbf294eb249c82b07bd12af2ee6a92e9a553d41432397713e830f46b1da",
    bundled="dsm-energy-small-fashion-mnist",
    timm_tag="fashion_mnist_cpu",
    description=("Normalized energy model trained by dual score matching (energy_unet_small at CPU size: width 16, "
                 "2 convs per block), log10 t in [-9, 3], 30 CPU-minutes. log p(x) of a 28x28 gray image in one "
                 "forward pass (net.log_prob, priorlab logp): 3.35 bits/dim on the 10,000 test images (8-bit "
                 "convention, no dequantization). A working model, not a converged one; the GPU-trained "
                 "dsm-energy-fashion-mnist (full size) is the better denoiser."),
))

register_prior(PriorEntry(
    name="dsm-energy-fashion-mnist",
    kind="energy",
    architecture="energy_unet_small",
    channels=1,
    params=1_440_032,
    data=("Fashion-MNIST train (58,000 of the 60,000 28x28 images, h-flips; the last 2,000 calibrate C), from "
          "Debian's dataset-fashion-mnist"),
    sigma_range_255=(0.008063808033429367, 8063.808033429367),
    headline="Fashion-MNIST test: 3.34 bits/dim",
    sha256="efc5f56fd5f771278e2a79e131b9df43f023550853474b02c9a7e753b82dbabd",
    bundled="dsm-energy-fashion-mnist",
    timm_tag="fashion_mnist",
    description=("Normalized energy model trained by dual score matching (full-size energy_unet_small: 2 scales "
                 "48->192, 3 convs per block), log10 t in [-9, 3], 7.6 minutes on one H100 "
                 "(configs/dsm_energy_fashion_mnist_gpu.yaml, 5,474 steps of batch 128). log p(x) of a 28x28 gray "
                 "image in one forward pass: 3.34 bits/dim on the 10,000 test images (8-bit convention, no "
                 "dequantization); the probability-flow ODE of its score: 3.61 on the first 8. A better denoiser "
                 "than dsm-energy-small-fashion-mnist (+0.8 to +1.8 dB on the same test images); not converged."),
))
