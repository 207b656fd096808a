"""Library side of the benchmarks: pure functions that measure; the scripts in ``benchmarks/`` report."""

from priorlab.benchmarks.denoising import (
    BF_DNCNN_BSD68,
    DNCNN_B_BSD68,
    PUBLISHED,
    DenoisingRecord,
    PublishedResult,
    benchmark_noise,
    bm3d_cache_key,
    describe_machine,
    evaluate_bm3d,
    evaluate_denoiser,
    format_markdown_table,
    image_metrics,
    noise_seed,
    noisy_image,
    summarize,
)

__all__ = [
    "BF_DNCNN_BSD68",
    "DNCNN_B_BSD68",
    "PUBLISHED",
    "DenoisingRecord",
    "PublishedResult",
    "benchmark_noise",
    "bm3d_cache_key",
    "describe_machine",
    "evaluate_bm3d",
    "evaluate_denoiser",
    "format_markdown_table",
    "image_metrics",
    "noise_seed",
    "noisy_image",
    "summarize",
]
