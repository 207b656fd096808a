"""``priorlab fit|validate|test|predict``: LightningCLI over every priorlab module and datamodule."""

from __future__ import annotations


def run_lightning_cli(args: list[str] | None) -> None:
    from pathlib import Path

    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    import priorlab.datamodules  # noqa: F401  (class paths resolvable by short name)
    import priorlab.lightning_modules  # noqa: F401
    from priorlab.core.errors import OutputExistsError
    from priorlab.lightning_modules.callbacks import run_dir

    class RunFolderSaveConfig(SaveConfigCallback):
        """``config.yaml`` in the run's own folder (:func:`run_dir`), beside its figures and checkpoints.

        Lightning's callback writes to ``trainer.log_dir``, which for wandb is the ``save_dir`` shared by all runs:
        the second run there stopped with "expected …/config.yaml to NOT exist".
        """

        def setup(self, trainer, pl_module, stage: str) -> None:
            if self.already_saved:
                return
            folder = trainer.strategy.broadcast(str(run_dir(trainer)) if trainer.is_global_zero else None)
            path = Path(folder) / self.config_filename
            if trainer.strategy.broadcast(path.is_file() if trainer.is_global_zero else False) and not self.overwrite:
                raise OutputExistsError(f"{path} exists: this run's folder holds another run's config; nothing is "
                                   f"overwritten (choose another logger version or save_dir)")
            if trainer.is_global_zero:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.parser.save(self.config, str(path), skip_none=False, overwrite=self.overwrite,
                                 multifile=self.multifile)
                self.already_saved = True
            self.already_saved = trainer.strategy.broadcast(self.already_saved)

    class PriorlabCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # The datamodule decides the channel count; the model follows it.
            parser.link_arguments("data.channels", "model.init_args.in_chans", apply_on="instantiate")

        def before_fit(self) -> None:
            # fast_dev_run replaces the loggers by a dummy and saves no checkpoints, except that ModelCheckpoint's
            # train-end hook still writes save_last's last.ckpt (Lightning 2.6), into ./checkpoints for want of a
            # logger folder: a smoke run must leave no files behind.
            if self.trainer.fast_dev_run:
                from lightning.pytorch.callbacks import ModelCheckpoint

                for cb in self.trainer.checkpoint_callbacks:
                    if isinstance(cb, ModelCheckpoint):
                        cb.save_last = False

        def before_predict(self) -> None:
            # predict writes what it predicts (PNGs in the run's folder) unless the config has its own writer
            from lightning.pytorch.callbacks import BasePredictionWriter

            from priorlab.lightning_modules import DenoiserModule, PredictionWriter

            if isinstance(self.model, DenoiserModule) and not any(
                    isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
                self.trainer.callbacks.append(PredictionWriter())

        def after_fit(self) -> None:
            if self.trainer.is_global_zero:
                message = next_steps(self.trainer)
                if message:
                    print(message, flush=True)

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
        save_config_callback=RunFolderSaveConfig,
    )


def next_steps(trainer) -> str:
    """Where a finished ``fit`` wrote its checkpoints, and the commands that use them ("" without checkpoints)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    lines, ckpt = [], None
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint):
            continue
        if cb.best_model_path:
            score = cb.best_model_score
            score = f", {cb.monitor} {float(score):.4g}" if cb.monitor and score is not None else ""
            lines.append(f"priorlab: best checkpoint {cb.best_model_path}{score}")
        if cb.last_model_path:
            lines.append(f"priorlab: last checkpoint {cb.last_model_path}")
        ckpt = ckpt or cb.last_model_path or cb.best_model_path
    if not ckpt:
        return ""
    net = getattr(trainer.lightning_module, "net", None)
    if hasattr(net, "log_prob"):  # an energy model: log-probabilities at the size it was calibrated for
        shape = getattr(net, "calibration_shape", None)
        size = f" --resolution {shape[-1]}" if shape else ""
        use = f"priorlab logp --prior {ckpt} --data folder:IMAGES{size}"
    else:
        use = f"priorlab denoise --ckpt {ckpt} --input IMG --sigma 25 --output OUT.png"
    return "\n".join([*lines, f"  use it:     {use}",
                      f"  publish it: priorlab export --ckpt {ckpt} --out exported/NAME --name NAME"])
