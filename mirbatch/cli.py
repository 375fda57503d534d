"""The ``mirbatch`` command line: a thin click layer over the library.

Exit status of ``tag``: 0 every input tagged; 3 some inputs failed (see the ``error`` column);
4 every input failed; 1 the run itself failed; 2 bad usage.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["main", "EXIT_PARTIAL", "EXIT_ALL_FAILED"]

EXIT_PARTIAL = 3
EXIT_ALL_FAILED = 4

F = TypeVar("F", bound=Callable[..., Any])


def _example(text: str) -> str:
    """Help epilog with a usage example (kept verbatim by click's \\b marker)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in text.strip().splitlines())


def model_option(default_help: str) -> Callable[[F], F]:
    return click.option("--model", "model", default=None, metavar="NAME|PATH", help=default_help)


address_option = click.option(
    "--address",
    default=None,
    metavar="RAY_ADDRESS",
    help="Existing Ray cluster (e.g. auto or ray://head:10001); default: start a local Ray.",
)


data_option = click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Data-set folder (a folder per label); repeat to pool several.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mirbatch")
def main() -> None:
    """mirbatch: tag audio archives with instrument labels, on Ray, into Parquet."""


@main.command(
    epilog=_example("mirbatch tag examples/ --out labels/\nmirbatch tag 'archive/**/*.flac' --out labels/ --workers 2")
)
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output Parquet dataset folder.")
@click.option("--mode", type=click.Choice(["classify"]), default="classify", show_default=True, help="How to label.")
@model_option("Checkpoint path or bundled model name (default: the bundled cnn-default).")
@click.option(
    "--features", type=click.Choice(["mel", "scalogram"]), default=None, help="Feature kind (default: the model's)."
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Model actors.")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Patches per forward.")
@address_option
@click.option("--no-resume", is_flag=True, help="Discard earlier output in --out and start over.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Labels kept in top_labels.")
def tag(
    sources: tuple[str, ...],
    out: str,
    mode: str,
    model: str | None,
    features: str | None,
    workers: int,
    gpus_per_worker: float,
    batch_size: int,
    address: str | None,
    no_resume: bool,
    top_k: int,
) -> None:
    """Tag SOURCE... (files, folders, globs) with instrument labels into a Parquet dataset.

    Reruns with the same --out resume: files already in the dataset are skipped.
    """
    from mirbatch.pipeline import TagConfig, TagSummary, run_tag

    config = TagConfig(
        sources=sources,
        out=out,
        mode=mode,
        model=model,
        features=features,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        batch_size=batch_size,
        address=address,
        resume=not no_resume,
        top_k=top_k,
    )
    tty = sys.stderr.isatty()

    def progress(s: TagSummary, todo: int) -> None:
        done = s.files_ok + s.files_error
        line = (
            f"tagged {done}/{todo} files ({s.files_error} errors), "
            f"{s.audio_s / 3600:.3f} h of audio, {s.throughput:.1f} audio-s/s"
        )
        click.echo(f"\r{line}" if tty else line, err=True, nl=not tty)

    try:
        summary = run_tag(config, progress=progress)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # the library's typed errors (source, checkpoint) carry user-facing text
        if type(exc).__module__.startswith("mirbatch"):
            raise click.ClickException(str(exc)) from exc
        raise
    if tty:
        click.echo(err=True)
    click.echo(
        f"{summary.files_ok} ok, {summary.files_error} errors, {summary.files_skipped} already done; "
        f"{summary.audio_s / 3600:.3f} h of audio in {summary.wall_s:.1f} s "
        f"({summary.throughput:.1f} audio-s/s) -> {summary.out}"
    )
    for path, error in summary.errors[:10]:
        click.echo(f"  error: {path}: {error}", err=True)
    if len(summary.errors) > 10:
        click.echo(f"  ... and {len(summary.errors) - 10} more (status='error' rows in the output)", err=True)
    if summary.files_error and not summary.files_ok:
        sys.exit(EXIT_ALL_FAILED)
    if summary.files_error:
        sys.exit(EXIT_PARTIAL)


@main.command(epilog=_example("mirbatch show labels/\nmirbatch show labels/ --limit 0   # every row"))
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Rows to print; 0: all.")
def show(out: str, limit: int) -> None:
    """Print the labels of a tag output dataset as a table."""
    import pyarrow.dataset as ds

    table = ds.dataset(out, format="parquet").to_table(columns=["path", "status", "label", "confidence", "error"])
    rows = sorted(table.to_pylist(), key=lambda r: r["path"])
    shown = rows if limit == 0 else rows[:limit]
    width = max([len("path"), *(len(r["path"]) for r in shown)])
    click.echo(f"{'path':<{width}}  {'label':<16} confidence")
    for r in shown:
        if r["status"] == "ok":
            click.echo(f"{r['path']:<{width}}  {r['label']:<16} {r['confidence']:.3f}")
        else:
            click.echo(f"{r['path']:<{width}}  {'(error)':<16} {r['error']}")
    if len(shown) < len(rows):
        click.echo(f"... {len(rows) - len(shown)} more rows")


@main.command(
    epilog=_example(
        "mirbatch data render --soundfont fluidr3 --out data/fluidr3 --per-class 200 --seed 1\n"
        "mirbatch train --model cnn --data data/fluidr3 --data data/freepats --out models/cnn.safetensors\n"
        "mirbatch train --model cnn --data data/fluidr3 --out models/cnn.safetensors --workers 2 --resume\n"
        "mirbatch train --model cnn --data IRMAS-TrainingData --out irmas.safetensors --address auto --use-gpu"
    )
)
@click.option(
    "--model",
    "architecture",
    type=click.Choice(["cnn", "cnn-freq"]),
    default="cnn",
    show_default=True,
    help="cnn: the seed paper's CNN; cnn-freq: the same with batch norm and a frequency-aware head.",
)
@data_option
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@click.option("--labels", default=None, help="Comma-separated labels to train (default: every label found).")
@click.option("--features", type=click.Choice(["mel", "scalogram"]), default="mel", show_default=True)
@click.option(
    "--wavelet",
    type=click.Choice(["morse", "morlet"]),
    default="morse",
    show_default=True,
    help="Wavelet of --features scalogram.",
)
@click.option(
    "--augment",
    default="default",
    show_default=True,
    help="Audio augmentation: 'default', 'none', or 'default,-reverb,-mix' to leave some out "
    "(pitch, eq, reverb, noise, band_limit, mix).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Global batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option(
    "--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.15, show_default=True
)
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True, help="Early-stop patience.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Ray Train workers (DDP).")
@click.option("--use-gpu", is_flag=True, help="One GPU per worker.")
@address_option
@click.option(
    "--storage",
    default=None,
    metavar="PATH",
    help="Folder for per-epoch checkpoints and the feature cache, shared by all nodes (default: ./runs).",
)
@click.option("--name", default=None, help="Run name under --storage (default: the --out file's stem).")
@click.option("--resume", is_flag=True, help="Continue the run from its latest checkpoint.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Feature cache folder (default: STORAGE/feature-cache).",
)
def train(
    architecture: str,
    data: tuple[str, ...],
    out: str,
    labels: str | None,
    features: str,
    wavelet: str,
    augment: str,
    epochs: int,
    batch_size: int,
    lr: float,
    val_fraction: float,
    patience: int,
    seed: int,
    workers: int,
    use_gpu: bool,
    address: str | None,
    storage: str | None,
    name: str | None,
    resume: bool,
    cache: str | None,
) -> None:
    """Train a classifier on Ray Train (DDP) and save its best epoch as a checkpoint.

    Data sets are folders per label, IRMAS training data or NSynth (detected). Features are cached
    once; every epoch is checkpointed under --storage, and --resume continues an interrupted run.
    """
    from mirbatch.augment import AugmentConfig
    from mirbatch.features import FeatureConfig, MelConfig, ScalogramConfig
    from mirbatch.training import TrainConfig
    from mirbatch.training import train as run_training

    try:
        feature_config: FeatureConfig = ScalogramConfig(wavelet=wavelet) if features == "scalogram" else MelConfig()
        config = TrainConfig(
            data=data,
            architecture=architecture,
            labels=tuple(x.strip() for x in labels.split(",")) if labels else None,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            val_fraction=val_fraction,
            patience=patience,
            seed=seed,
            features=feature_config,
            augment=AugmentConfig.parse(augment),
            workers=workers,
            use_gpu=use_gpu,
        )
        path, result = run_training(
            config,
            Path(out),
            storage=storage,
            name=name,
            resume=resume,
            address=address,
            cache=Path(cache) if cache else None,
            log_line=click.echo,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    from mirbatch.plots import plot_training_curves

    curves = plot_training_curves(result["history"], Path(out).with_suffix(".curves.png"), Path(out).name)
    click.echo(
        f"saved {path} (best epoch {result['best_epoch']}, validation file accuracy "
        f"{result['val_file_accuracy']:.3f}); curves in {curves}"
    )


@main.command(
    name="eval",
    epilog=_example(
        "mirbatch eval --data data/timgm6mb\n"
        "mirbatch eval --model models/cnn.safetensors --data data/timgm6mb --report reports/timgm6mb"
    ),
)
@model_option("Checkpoint path or bundled model name (default: cnn-default).")
@data_option
@click.option("--report", type=click.Path(file_okay=False), default=None,
              help="Folder for report.json and confusion-matrix PNGs.")  # fmt: skip
def evaluate(model: str | None, data: tuple[str, ...], report: str | None) -> None:
    """Evaluate a classifier: accuracy, per-label precision/recall/F1, macro-F1, beside the MFCC-SVM baseline."""
    from mirbatch.evaluate import evaluate_classifier
    from mirbatch.models import DEFAULT_CLASSIFIER, CheckpointError

    try:
        result = evaluate_classifier(model or DEFAULT_CLASSIFIER, [Path(d) for d in data])
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.format())
    if report:
        for path in result.write(Path(report)):
            click.echo(f"wrote {path}")


@main.group()
def data() -> None:
    """Build training data sets."""


@data.command(
    epilog=_example(
        "mirbatch data render --soundfont fluidr3 --out data/fluidr3 --per-class 200 --seed 1\n"
        "mirbatch data render --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2 --out data/timgm --per-class 40"
    )
)
@click.option(
    "--soundfont",
    required=True,
    metavar="NAME|PATH",
    help="fluidr3, timgm6mb, freepats, or a .sf2 SoundFont / TiMidity++ .cfg path.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (a folder per label).")
@click.option("--per-class", type=click.IntRange(min=1), default=100, show_default=True, help="Clips per label.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--labels", default=None, help="Comma-separated labels (default: the 18-label taxonomy).")
@click.option(
    "--phrase-fraction",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of clips that are phrases rather than single notes.",
)
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Synthesizers run at once.")
def render(
    soundfont: str, out: str, per_class: int, seed: int, labels: str | None, phrase_fraction: float, jobs: int
) -> None:
    """Render the taxonomy from a GM sample library: notes and phrases, a folder per label."""
    from mirbatch.datasets.render import RenderConfig, RenderError, render_dataset
    from mirbatch.taxonomy import DEFAULT_LABELS

    chosen = tuple(x.strip() for x in labels.split(",")) if labels else DEFAULT_LABELS
    config = RenderConfig(soundfont, per_class, seed, phrase_fraction=phrase_fraction, labels=chosen)
    try:
        plans = render_dataset(config, Path(out), jobs=jobs)
    except (RenderError, KeyError) as exc:
        raise click.ClickException(str(exc).strip('"')) from exc
    rendered = sorted({p.label for p in plans})
    missing = sorted(set(chosen) - set(rendered))
    click.echo(f"rendered {len(plans)} clips of {len(rendered)} labels to {out}")
    if missing:
        click.echo(f"the library has no program for: {', '.join(missing)}", err=True)


if __name__ == "__main__":
    main()
