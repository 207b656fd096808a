"""Lightning shell: modules that train zoo networks with core losses, and their callbacks."""

from priorlab.lightning_modules.callbacks import DenoiseFigure, PredictionWriter
from priorlab.lightning_modules.denoiser import DenoiserModule
from priorlab.lightning_modules.dual_score import DualScoreModule
from priorlab.lightning_modules.ema import EMA

__all__ = ["EMA", "DenoiseFigure", "DenoiserModule", "DualScoreModule", "PredictionWriter"]
