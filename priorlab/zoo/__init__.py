"""Model zoo: architectures and their registry (also in timm's), published priors, export and the Hub.

``zoo.load(spec)`` is the one way to get a trained prior: a catalog name (``priorlab zoo list``),
``hf-hub:ORG/REPO[@REVISION]``, ``local-dir:PATH`` or a Lightning checkpoint path.
"""

from priorlab.zoo import architectures as _architectures  # noqa: F401  (registers the entry points)
from priorlab.zoo.artifact import build_config, load_folder, read_config, save_folder, sha256_file
from priorlab.zoo.catalog import PriorEntry, get_prior, list_priors, register_prior, unregister_prior
from priorlab.zoo.checkpoint import load_checkpoint
from priorlab.zoo.dncnn import DnCNN
from priorlab.zoo.energy_unet import EnergyNet
from priorlab.zoo.export import export_checkpoint
from priorlab.zoo.layers import BFBatchNorm2d, set_sync_batchnorm
from priorlab.zoo.priors import load
from priorlab.zoo.registry import build_from_config, create_model, get_spec, list_models, register_model
from priorlab.zoo.unet import UNet

__all__ = [
    "BFBatchNorm2d",
    "DnCNN",
    "EnergyNet",
    "PriorEntry",
    "UNet",
    "build_config",
    "build_from_config",
    "create_model",
    "export_checkpoint",
    "get_prior",
    "get_spec",
    "list_models",
    "list_priors",
    "load",
    "load_checkpoint",
    "load_folder",
    "read_config",
    "register_model",
    "register_prior",
    "save_folder",
    "set_sync_batchnorm",
    "sha256_file",
    "unregister_prior",
]
