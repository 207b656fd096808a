"""priorlab: probability densities of natural images through denoisers.

``import priorlab`` is deliberately light (torch only). Subpackages are imported on demand:
``from priorlab import zoo`` (architectures, registry), ``priorlab.datamodules``,
``priorlab.lightning_modules``, ``priorlab.cli``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
