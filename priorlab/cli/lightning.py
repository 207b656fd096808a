"""``priorlab fit|validate|test|predict``: LightningCLI over every priorlab module and datamodule."""

from __future__ import annotations


def run_lightning_cli(args: list[str] | None) -> None:
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    import priorlab.datamodules  # noqa: F401  (class paths resolvable by short name)
    import priorlab.lightning_modules  # noqa: F401

    class PriorlabCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # The datamodule decides the channel count; the model follows it.
            parser.link_arguments("data.channels", "model.init_args.in_chans", apply_on="instantiate")

    PriorlabCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": "runs", "name": "default"}},
        },
        args=args,
        auto_configure_optimizers=True,
    )
