"""Model zoo: bias-free architectures and their registry (also registered in timm's registry)."""

from priorlab.zoo import architectures as _architectures  # noqa: F401  (registers the entry points)
from priorlab.zoo.checkpoint import load_checkpoint
from priorlab.zoo.dncnn import DnCNN
from priorlab.zoo.layers import BFBatchNorm2d, set_sync_batchnorm
from priorlab.zoo.priors import load
from priorlab.zoo.registry import build_from_config, create_model, get_spec, list_models, register_model
from priorlab.zoo.unet import UNet

__all__ = [
    "BFBatchNorm2d",
    "DnCNN",
    "UNet",
    "build_from_config",
    "create_model",
    "get_spec",
    "list_models",
    "load",
    "load_checkpoint",
    "register_model",
    "set_sync_batchnorm",
]
