"""The one training path, shared by Part A (scratch) and Part B (finetune).

    fastinat scratch --data data/digits --size 32 --epochs 5                        # CLI
    fastinat finetune --arch resnet50 --no-pretrained --data data/digits --size 64  # CLI
    fastinat.train_scratch(data="data/digits", size=32, epochs=5)                    # Python
    fastinat.train_finetune(arch="resnet50", weights="resnet50.safetensors")         # Python

data -> learner -> fit -> report: `train()` makes the run folder (`fastinat.run_folder`),
seeds everything, builds the loaders and the Learner through the part's recipe
(`learner.SCRATCH` or `learner.FINETUNE`), fits it with the fastinat callbacks (history,
best weights, early stop, resume checkpoint, progress, W&B), then evaluates the best
weights once on the validation and TEST sets and writes `metrics.json`. `--resume RUN`
rebuilds the same run from `RUN/config.json` and carries on from `RUN/checkpoint.pt`.
Every process of a distributed run takes the same path; rank 0 alone prints and writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .config import FinetuneConfig, TrainConfig
from .errors import FastinatError, Interrupted, UsageError, WriteError, plural
from .io import write_json
from .layout import guard_layout, layout_note
from .learner import FINETUNE, SCRATCH, Recipe, trainable_parameters
from .options import resolve
from .run_folder import (
    CARD,
    CHECKPOINT,
    CONFIG,
    HISTORY,
    METRICS,
    REPORT,
    SPLIT,
    WEIGHTS,
    check_run_name,
    device_name,
    load_run_config,
    new_run_dir,
    point_latest,
    versions,
)

# -- the training path -----------------------------------------------------------------------


def _precision(learn, precision: str, console: Console) -> str:
    import torch

    cuda = torch.cuda.is_available() and learn.dls.device is not None and learn.dls.device.type == "cuda"
    if precision == "auto":
        precision = "fp16" if cuda else "fp32"
    if precision == "fp16":
        if not cuda:
            raise UsageError("fp16 mixed precision needs a CUDA GPU; use --precision fp32 on a CPU.")
        learn.to_fp16()
    elif precision == "bf16":
        if not cuda:
            console.print("[yellow]bf16 autocast on a CPU is usually several times slower than fp32.[/]")
        learn.to_bf16()
    return precision


def configure_learner(learn, precision: str = "auto", console: Console | None = None) -> str:
    """What every fastinat run does to a Learner; returns the precision in use.

    fastprogress bars off (RichProgress prints instead: no \\r fragments in logs), channels_last
    (faster convolutions, on the CPU too; the layers oneDNN gets wrong that way on this CPU run
    NCHW, with one line saying so: `fastinat.layout`), mixed precision on CUDA, and free memory handed back
    before each epoch forks its loader workers (see fastinat.perf).
    """
    import torch
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.progress import ProgressCallback

    from .callbacks.memory import TrimBeforeFork

    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *a, **k: None
    precision = _precision(learn, precision, console or Console())
    learn.add_cbs([ChannelsLast(), TrimBeforeFork()])
    device = learn.dls.device
    if device is None or torch.device(device).type == "cpu":  # on a GPU every layer keeps channels_last
        note = layout_note(guard_layout(learn.model))
        if note:
            (console or Console()).print(note, highlight=False)
    return precision  # cuDNN's flags are the process owner's (fastinat.perf.tune_process)


def _summary(console: Console, run_dir: Path, metrics: dict, offline_wandb: bool) -> None:
    table = Table(title=f"Run {run_dir}", title_justify="left")
    table.add_column("split")
    for col in ("accuracy", "loss", "macro F1"):
        table.add_column(col, justify="right")
    for split, label in (("valid", "valid (from train/)"), ("test", "TEST (val/)")):
        table.add_row(label, f"{metrics[f'{split}_accuracy']:.4f}", f"{metrics[f'{split}_loss']:.4f}",
                      f"{metrics[f'{split}_f1']:.4f}")
        if f"{split}_accuracy_tta" in metrics:
            table.add_row(f"{label} TTA, {metrics['tta_views']} views", f"{metrics[f'{split}_accuracy_tta']:.4f}",
                          f"{metrics[f'{split}_loss_tta']:.4f}", f"{metrics[f'{split}_f1_tta']:.4f}")
    console.print(table)
    kept = ", chosen on the weights' moving average (--ema)" if metrics.get("weights") == "ema" else ""
    console.print(f"best epoch {metrics['best_epoch']} of {metrics['epochs_trained']}{kept}; "
                  f"weights: {run_dir / WEIGHTS}; TEST report: {run_dir / REPORT}", highlight=False)
    if offline_wandb:
        console.print(f"W&B run saved offline; upload it with: wandb sync {run_dir}/wandb/offline-run-*",
                      highlight=False)


def _open_run(cfg: TrainConfig | None, recipe: Recipe, resume, console: Console):
    """(cfg, saved config.json or {}, checkpoint or None) for a new or a resumed run."""
    if resume is None:
        cfg = cfg if cfg is not None else recipe.config_cls()
        cfg.data = str(Path(cfg.data).resolve()) if Path(cfg.data).exists() else cfg.data
        check_run_name(cfg)  # before the data is read; the folder itself is claimed later
        return cfg, {}, None
    from .callbacks.checkpoint import load_checkpoint

    run_dir = Path(resume)
    cfg, saved = load_run_config(run_dir, recipe.config_cls)
    if (run_dir / METRICS).exists():
        raise UsageError(f"The run {run_dir} has already finished ({METRICS} is there); "
                         "nothing to resume.")
    if not (run_dir / CHECKPOINT).exists():  # stopped (a full disk, Ctrl-C) before its first checkpoint
        console.print(f"Resuming {run_dir} from its start (no epoch of {cfg.total_epochs} had finished).",
                      highlight=False)
        return cfg, saved, None
    checkpoint = load_checkpoint(run_dir / CHECKPOINT)
    console.print(f"Resuming {run_dir} after epoch {checkpoint['epoch']} of {cfg.total_epochs}.",
                  highlight=False)
    return cfg, saved, checkpoint


def _announce(console: Console, cfg: TrainConfig, learn, run_dir: Path, precision: str) -> None:
    from .data.loaders import print_notices

    dls = learn.dls
    trainable, total = trainable_parameters(learn)
    arch = learn.card["arch"]
    name = f"{arch} (timm)" if learn.card["kind"] == "finetune" else type(learn.model).__name__
    console.print(f"[bold]{cfg.command}[/] -> {run_dir}", highlight=False)
    console.print("config: " + ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items()), highlight=False)
    if cfg.total_epochs != cfg.epochs:  # --freeze gradual: the head-only epochs come first
        console.print(f"epochs: {plural(cfg.total_epochs, 'epoch')} in all, {cfg.freeze_epochs} head-only "
                      f"then {cfg.epochs} unfrozen (--freeze-epochs, --epochs)", highlight=False)
    console.print(f"data: {len(dls.train_ds):,} train / {len(dls.valid_ds):,} valid / "
                  f"{len(dls.inat.test_files):,} TEST images, {len(dls.vocab)} classes, {cfg.size} px",
                  highlight=False)
    console.print(f"model: {name}, {total:,} parameters ({trainable:,} trainable); "
                  f"device {device_name()}, {precision}", highlight=False)
    if cfg.progressive:
        from .callbacks.progressive import plan

        console.print(f"progressive resizing: {plan(cfg.train_size, cfg.total_epochs)}", highlight=False)
    if getattr(dls, "feature_cache", None):
        console.print(f"training the head on cached backbone features: {dls.feature_cache}", highlight=False)
    print_notices(dls.inat.notices(run_dir), console)  # skipped files listed in RUN/skipped_files.txt


def _learning_rate(learn, cfg: TrainConfig, saved: dict, console: Console) -> float:
    """The peak lr: the resumed run's, the configured one, or lr_find's suggestion."""
    if saved.get("lr_used") is not None:
        return float(saved["lr_used"])
    if cfg.lr != "auto":
        return float(cfg.lr)
    lr = float(learn.lr_find(show_plot=False).valley)
    console.print(f"lr_find suggests lr={lr:.2e}; using it.", highlight=False)
    return lr


def train(cfg: TrainConfig | None, recipe: Recipe, *, resume: str | Path | None = None,
          cbs=(), console: Console | None = None) -> Path:
    """Train one run (or resume one) and return its folder: data -> learner -> fit -> report.

    Every process of a distributed run takes this same path; rank 0 alone prints and writes
    (the run folder, W&B, the report).

    Raises:
        UsageError / FastinatError: a bad option, dataset or run folder. Interrupted: Ctrl-C,
            with the command that resumes the run.
    """
    from .data.workers import close_all_workers
    from .perf import release_memory

    try:
        return _train(cfg, recipe, resume, cbs, console)
    finally:
        close_all_workers()  # no loader worker or pin-memory thread outlives the run,
        release_memory()  # nor its GPU memory (presets and sweep trials train in one process)


def _train(cfg: TrainConfig | None, recipe: Recipe, resume, cbs, console: Console | None) -> Path:
    from . import distributed
    from .callbacks.wandb import wandb_mode

    device = distributed.init()  # torchrun / accelerate launch: join the process group
    main = distributed.is_main()
    console = (console or Console(soft_wrap=True)) if main else Console(quiet=True)
    cfg, saved, checkpoint = _open_run(cfg, recipe, resume, console)

    # data -> learner: everything a user can get wrong fails before a run folder exists
    learn = _learner(cfg, recipe, resume, device, console)
    precision = configure_learner(learn, cfg.precision, console)
    run_dir = _run_folder(cfg, learn.dls, resume)
    if main:
        _announce(console, cfg, learn, run_dir, precision)
    learn.path, learn.model_dir = run_dir, "."  # lr_find's temporary weights go there, not to ./models
    lr = distributed.broadcast(_learning_rate(learn, cfg, saved, console) if main else None)

    try:
        # fit
        fit = _Fit(learn, cfg, run_dir, checkpoint, cbs, console)
        if main:
            fit.write(saved, lr, precision)
        seconds = fit.run(recipe, lr)

        # report
        if main:
            metrics = evaluate_run(learn, learn.dls, fit.best, fit.stop, run_dir, seconds, cfg)
            (run_dir / CHECKPOINT).unlink(missing_ok=True)
    except WriteError as e:  # a full disk, a read-only or vanished run folder: say how to carry on
        raise _write_failed(e, cfg, run_dir, new=resume is None) from None
    if main:
        _summary(console, run_dir, metrics, offline_wandb=fit.wandb is not None and wandb_mode() == "offline")
    return run_dir


def _write_failed(e: WriteError, cfg: TrainConfig, run_dir: Path, new: bool) -> WriteError:
    """`e`, saying how to carry on: resume the run (from its last checkpoint, or its start)
    once it can be written again; a new run without its config.json is removed, to start again."""
    import shutil

    if type(e) is not WriteError:
        return e
    resume = f"resume the run with: fastinat {cfg.command} --resume {run_dir}"
    if e.reason == "gone":
        return e.again(f"{resume} (or start it again)")
    if (run_dir / CONFIG).is_file():
        return e.again(resume)
    if new:  # it holds no more than its split: nothing to resume
        shutil.rmtree(run_dir, ignore_errors=True)
    return e.again("run the same command again")


def _learner(cfg: TrainConfig, recipe: Recipe, resume, device, console: Console):
    """The loaders and the part's Learner (rank 0 first: it fills the caches the others read)."""
    from fastai.torch_core import set_seed

    from . import distributed
    from .data.loaders import inat_dataloaders

    set_seed(cfg.seed)  # the RNGs only: cuDNN's flags are the process owner's (fastinat.perf)
    with distributed.rank0_first():  # checks, statistics, presized copies, features
        dls = inat_dataloaders(cfg.data, cfg, normalize=recipe.normalize(cfg),
                               split_file=None if resume is None else Path(resume) / SPLIT,
                               progress=distributed.is_main(), device=device, notify=False)
        return recipe.learner(dls, cfg, console)  # its .dls: cached features may replace the loaders


def _run_folder(cfg: TrainConfig, dls, resume) -> Path:
    """The resumed folder, or a new one: rank 0 makes it; the other ranks learn its name."""
    from . import distributed

    if resume is not None:
        run_dir = Path(resume)
    else:
        run_dir = new_run_dir(cfg) if distributed.is_main() else None
        if run_dir is not None:
            point_latest(run_dir)
            try:
                dls.inat.save_split(run_dir / SPLIT)
            except WriteError as e:
                raise _write_failed(e, cfg, run_dir, new=True) from None
        run_dir = Path(distributed.broadcast(str(run_dir) if run_dir is not None else None))
    return run_dir


class _Fit:
    """The fit of one run: every rank's callbacks, plus rank 0's writers (`write`)."""

    def __init__(self, learn, cfg: TrainConfig, run_dir: Path, checkpoint, cbs, console: Console):
        from .callbacks.finite import FiniteLoss
        from .callbacks.record import EpochRecord
        from .callbacks.tracker import EarlyStop

        self.learn, self.cfg, self.run_dir, self.console = learn, cfg, run_dir, console
        self.checkpoint, self.done = checkpoint, checkpoint["epoch"] if checkpoint else 0
        self.stop, self.best, self.wandb = EarlyStop(cfg.patience), None, None
        self.stateful, self.finite = {"early_stop": self.stop}, FiniteLoss()
        self.callbacks = [EpochRecord(), self.finite, self.stop, *_recipe_cbs(learn, cfg, self.stateful),
                          *_distributed_cbs(learn), *cbs]

    def write(self, saved: dict, lr: float, precision: str) -> None:
        """Rank 0: config.json, W&B, and the callbacks that write the run folder."""
        from . import distributed
        from .callbacks.checkpoint import ResumeCheckpoint
        from .callbacks.history import CSVHistory, read_history
        from .callbacks.progress import RichProgress
        from .callbacks.tracker import BestModel
        from .callbacks.wandb import start_wandb

        learn, cfg, run_dir = self.learn, self.cfg, self.run_dir
        wandb_id = saved.get("wandb_id")
        if cfg.wandb:
            self.wandb, wandb_id = start_wandb(run_dir, cfg.to_dict(), project=cfg.project,
                                               entity=cfg.entity, name=run_dir.name, run_id=wandb_id)
            learn.gather_args = dict  # fastai's WandbCallback cannot log our transforms; wandb.init has the config
        write_json(run_dir / CONFIG, parents=False, data={
            "command": cfg.command, "config": cfg.to_dict(), "lr_used": lr, "versions": versions(),
            "device": device_name(), "precision": precision, "wandb_id": wandb_id,
            "processes": distributed.world_size(),
            "created": saved.get("created", datetime.now().isoformat(timespec="seconds"))})
        self.best = BestModel(run_dir / WEIGHTS, run_dir / CARD, learn.card,
                              module=getattr(learn, "saved_model", None))
        self.stateful["best"] = self.best
        history = [r for r in read_history(run_dir / HISTORY) if r["epoch"] <= self.done]
        self.callbacks += [CSVHistory(run_dir / HISTORY, history), self.best,
                           ResumeCheckpoint(run_dir / CHECKPOINT, self.stateful, resume=self.checkpoint),
                           RichProgress(self.console), *([self.wandb] if self.wandb else [])]

    def run(self, recipe: Recipe, lr: float) -> float:
        """Restore a resumed run's state, fit, and return the seconds it took.

        Raises:
            FastinatError: an epoch's training loss was not finite (`FiniteLoss`).
            Interrupted: Ctrl-C.
        """
        from .callbacks.finite import failure_message
        from .callbacks.history import read_history
        from .callbacks.wandb import finish_wandb
        from .data.workers import close_all_workers

        _restore(self.learn, self.checkpoint, self.stateful)
        start = time.perf_counter()
        try:
            recipe.fit(self.learn, self.cfg, lr, self.callbacks, self.done, self.console)
        except KeyboardInterrupt:
            finished = read_history(self.run_dir / HISTORY)
            last = finished[-1]["epoch"] if finished else 0
            hint = f"resume with: fastinat {self.cfg.command} --resume {self.run_dir}"
            if not last:
                hint += " (no epoch had finished: it starts again from the first)"
            raise Interrupted(f"Interrupted after epoch {last} of {self.cfg.total_epochs}; {hint}") from None
        finally:
            finish_wandb()
            close_all_workers()  # every loader's persistent workers: the report makes its own
        if self.finite.failed is not None:
            raise FastinatError(failure_message(self.finite.failed, lr, self.run_dir))
        return time.perf_counter() - start


def _recipe_cbs(learn, cfg: TrainConfig, stateful: dict) -> list:
    """The accuracy recipes that act during the fit: MixUp/CutMix, EMA, progressive resizing."""
    cbs = []
    if cfg.mixup or cfg.cutmix:
        from .callbacks.mix import MixUpCutMix

        cbs.append(MixUpCutMix(cfg.mixup, cfg.cutmix))
    if cfg.ema:
        from .callbacks.ema import EMA

        stateful["ema"] = EMA(learn.model, cfg.ema)  # its average goes into the resume checkpoint
        cbs.append(stateful["ema"])
    if cfg.progressive:
        from .callbacks.progressive import ProgressiveResize
        from .data.augment import InatAugment

        augment = next(f for f in learn.dls.train.after_item.fs if isinstance(f, InatAugment))
        cbs.append(ProgressiveResize(cfg.train_size, augment))
    return cbs


def _distributed_cbs(learn) -> list:
    """DistributedTraining when launched by torchrun / accelerate (the model saved stays plain)."""
    from . import distributed

    if not distributed.is_distributed():
        return []
    if getattr(learn, "saved_model", None) is None:
        learn.saved_model = learn.model
    learn.to_detach = distributed.to_detach_local  # every rank validates everything: no gathering
    return [distributed.DistributedTraining(sync_bn=True, find_unused=learn.card["kind"] == "finetune")]


def _restore(learn, checkpoint: dict | None, stateful: dict) -> None:
    """Load a resume checkpoint's model, optimizer and callback states into a fresh Learner."""
    from .callbacks.checkpoint import load_opt_state

    done = checkpoint["epoch"] if checkpoint else 0
    if checkpoint is not None:
        learn.model.load_state_dict(checkpoint["model"])
        learn.create_opt()
        load_opt_state(learn.opt, checkpoint["opt"])
        for name, cb in stateful.items():
            cb.load_state(checkpoint["callbacks"][name])
    learn.resume_epoch = done


def evaluate_run(learn, dls, best, stop, run_dir: Path, seconds: float, cfg: TrainConfig) -> dict:
    """Valid and TEST metrics of the best weights (already loaded), written to metrics.json,
    and the TEST report (per-class numbers, confusion matrix, curves, grids) in RUN/report/.

    With `cfg.tta`, also the valid and TEST numbers with test-time augmentation (`_tta_metrics`,
    `cfg.bs` images per forward pass), as separate `*_tta` keys. metrics.json's `weights` says
    which weights were evaluated: "raw" (the trained ones) or "ema" (`--ema`'s average)."""
    from .callbacks.history import read_history
    from .data.loaders import test_dataloader
    from .data.workers import close_all_workers
    from .inference import EvalTransform
    from .report import write_report

    if len(dls.valid_ds):
        v_loss, v_acc, v_f1 = (float(v) for v in learn.validate(dl=dls.valid))
    else:
        v_loss = v_acc = v_f1 = math.nan
    test_dl = getattr(dls, "test_loader", None) or test_dataloader(dls)
    probs, targets = learn.get_preds(dl=test_dl)  # softmax probabilities, in test_files order
    close_all_workers()  # validate's and get_preds' pools (get_preds iterates a copy: `dl.new`)
    history = read_history(run_dir / HISTORY)
    with_tta = _tta_metrics(dls, run_dir, cfg.bs) if cfg.tta else {}
    report = write_report(run_dir / REPORT, probs, targets.long(), dls.inat.test_files, list(dls.vocab),
                          EvalTransform(learn.card).image, history=history,
                          extra={"split": "test", "data": str(dls.inat.root), "run": str(run_dir),
                                 **{k: v for k, v in with_tta.items() if not k.startswith("valid_")}},
                          parents=False)
    metrics = {
        "valid_accuracy": v_acc, "valid_loss": v_loss, "valid_f1": v_f1,
        "test_accuracy": report["accuracy"], "test_loss": report["loss"], "test_f1": report["macro_f1"],
        "best_epoch": best.best_epoch, "epochs_trained": history[-1]["epoch"] if history else 0,
        "early_stopped": stop.stopped_epoch, "train_seconds": round(seconds, 1),
        "n_test": len(dls.inat.test_files), "weights": "ema" if cfg.ema else "raw", **with_tta,
    }
    write_json(run_dir / METRICS, metrics, parents=False)
    return metrics


def _tta_metrics(dls, run_dir: Path, bs: int) -> dict:
    """Valid and TEST numbers with test-time augmentation (`fastinat.report.tta_numbers`) of the
    best weights as saved, through `fastinat evaluate --tta`'s path (`load_model`, `predict_batches`)."""
    from .inference import load_model
    from .report import tta_evaluate

    model = load_model(run_dir).to(getattr(dls, "device", None) or "cpu")
    root = dls.inat.root
    out = tta_evaluate(model, root, dls.inat.valid_files, "valid", bs) if dls.inat.valid_files else {}
    return {**out, **tta_evaluate(model, root, dls.inat.test_files, "test", bs)}


def _train_options(recipe: Recipe, config_file, resume, cbs, console, options: dict,
                   prepare: Callable | None = None) -> Path:
    """Options as the CLI passes them (None = not given) -> `train`; with `resume`, none allowed."""
    if resume is not None:
        given = sorted(k for k, v in options.items() if v is not None)
        if given or config_file:
            raise UsageError("--resume continues a run with its saved options; drop "
                             + ", ".join(f"--{k.replace('_', '-')}" for k in given or ["config"]) + ".")
        return train(None, recipe, resume=resume, cbs=cbs, console=console)
    from .presets import find_config

    cfg = resolve(recipe.config_cls, find_config(config_file) if config_file else None, options)
    if prepare is not None:
        prepare(cfg)
    return train(cfg, recipe, cbs=cbs, console=console)


def train_scratch(*, config_file: str | Path | None = None, resume: str | Path | None = None,
                  cbs=(), console: Console | None = None, **options) -> Path:
    """Part A: train the scratch CNN; options as `ScratchConfig` fields (None = default).

    With `resume`, every other option comes from the run's saved config.
    """
    return _train_options(SCRATCH, config_file, resume, cbs, console, options)


def _prepare_finetune(cfg: FinetuneConfig) -> None:
    from .models.backbones import check_arch, default_size, pretrained_cfg

    check_arch(cfg.arch)
    if cfg.progressive and pretrained_cfg(cfg.arch).get("fixed_input_size"):
        raise UsageError(f"{cfg.arch} takes one input size (its position embeddings are built for "
                         "it), so it cannot train with --progressive; drop that option.")
    if cfg.weights and Path(cfg.weights).exists():  # a resumed run finds it from any folder
        cfg.weights = str(Path(cfg.weights).resolve())
    if cfg.size is None:
        cfg.size = default_size(cfg.arch)
    if cfg.cache_features:  # the cached features are those of the backbone exactly as loaded
        cfg.train_bn = False


def train_finetune(*, config_file: str | Path | None = None, resume: str | Path | None = None,
                   cbs=(), console: Console | None = None, **options) -> Path:
    """Part B: fine-tune a timm backbone; options as `FinetuneConfig` fields (None = default).

    `size` defaults to the backbone's pretrained input size; `cache_features` trains the
    head on cached backbone features (backbone batch norm frozen). With `resume`, every
    other option comes from the run's saved config.
    """
    return _train_options(FINETUNE, config_file, resume, cbs, console, options, _prepare_finetune)
