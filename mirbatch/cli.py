"""The ``mirbatch`` command line: a thin click layer over the library.

Exit status of ``tag``: 0 every input tagged; 3 some inputs failed (see the ``error`` column);
4 every input failed; 1 the run itself failed; 2 bad usage.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mirbatch.aggregate import AGGREGATIONS, DEFAULT_AGGREGATION
from mirbatch.precision import PRECISIONS, TRAINING_PRECISIONS
from mirbatch.wording import counted, duration

if TYPE_CHECKING:
    import pyarrow as pa

    from mirbatch.pipeline import TagConfig

__all__ = ["main", "EXIT_PARTIAL", "EXIT_ALL_FAILED", "EXIT_INTERRUPTED"]

EXIT_PARTIAL = 3
EXIT_ALL_FAILED = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

F = TypeVar("F", bound=Callable[..., Any])


def _example(text: str) -> str:
    """Help epilog with a usage example (kept verbatim by click's \\b marker)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in text.strip().splitlines())


def _semitones(text: str) -> tuple[int, ...]:
    """``"-12,0,12"`` -> ``(-12, 0, 12)``; a bad list is a usage error naming the option."""
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of whole semitones, e.g. -12,0,12",
                                 param_hint="--support-shifts") from None  # fmt: skip


def model_option(default_help: str) -> Callable[[F], F]:
    return click.option("--model", "model", default=None, metavar="NAME|PATH", help=default_help)


def precision_option(choices: tuple[str, ...], what: str) -> Callable[[F], F]:
    """``--precision`` (default fp32): ``what`` says what runs at the chosen precision."""
    return click.option(
        "--precision",
        type=click.Choice(choices),
        default="fp32",
        show_default=True,
        help=f"{what}; bf16 pays on GPUs and on CPUs with AVX512-BF16 or AMX.",
    )


address_option = click.option(
    "--address",
    default=None,
    metavar="RAY_ADDRESS",
    help="Existing Ray cluster (e.g. auto or ray://head:10001); default: start a local Ray.",
)


s3_endpoint_option = click.option(
    "--s3-endpoint",
    default=None,
    metavar="URL",
    help="Endpoint of an S3-compatible store (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, or AWS). "
    "Credentials come from the standard AWS chain.",
)


data_option = click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Data-set folder (a folder per label); repeat to pool several.",
)


aggregate_option = click.option(
    "--aggregate",
    "aggregation",
    type=click.Choice(AGGREGATIONS),
    default=DEFAULT_AGGREGATION,
    show_default=True,
    help="How a file's patches make its scores: power (each patch weighed by its power against the "
    "loudest, so a ringing note's attack outweighs its tail) or mean (every sounding patch alike, the "
    "seed paper's rule).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mirbatch")
def main() -> None:
    """mirbatch: tag audio archives with instrument labels, on Ray, into Parquet."""


@main.command(
    epilog=_example(
        "mirbatch tag examples/ --out labels/\n"
        "mirbatch tag 'archive/**/*.flac' --out labels/ --workers 2\n"
        "mirbatch tag archive/ --out labels/ --unknown-threshold 0.7   # 'unknown' where less sure\n"
        "mirbatch tag archive/ --out matched/ --mode match --support my-instruments/\n"
        "mirbatch tag s3://bucket/audio/ bundle.zip --out s3://bucket/labels/ --s3-endpoint http://127.0.0.1:9000\n"
        "mirbatch tag --files-from catalogue-export.txt --out labels/   # one path or s3:// URI per line"
    )
)
@click.argument("sources", nargs=-1)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output Parquet dataset folder.")
@click.option(
    "--files-from",
    metavar="LIST",
    default=None,
    help="Also tag the sources listed in LIST, one per line (a file, folder, glob, s3:// URI or archive, "
    "as SOURCE; relative to here): a local file, an s3:// object, or - for standard input. Blank lines and "
    "lines starting with # are skipped. A listed file that is not there gets an error row instead of "
    "stopping the run.",
)
@click.option(
    "--mode",
    type=click.Choice(["classify", "match"]),
    default="classify",
    show_default=True,
    help="classify: the taxonomy's labels; match: the labels of a support library (--support).",
)
@model_option("Checkpoint path or bundled model name (default: cnn-default, or siamese-default in match mode).")
@click.option(
    "--support",
    type=click.Path(file_okay=False),
    default=None,
    metavar="LIB",
    help="Support library for --mode match (see 'mirbatch support add').",
)
@click.option(
    "--unknown-threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Files and segments whose best score is below it are labelled 'unknown' (top_labels still name the "
    "candidates). Default: in match mode calibrated, stored in the model; in classify mode none, every file gets "
    "a label ('mirbatch eval' shows how often answers over each confidence are right).",
)
@click.option(
    "--features", type=click.Choice(["mel", "scalogram"]), default=None, help="Feature kind (default: the model's)."
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Model actors.")
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="GPUs each model actor reserves (0.5: two actors share one); features and model then run on it.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Patches per forward.")
@precision_option(PRECISIONS, "Arithmetic of the model's forward (fp16 pays on GPUs only); scores move by about 0.01")
@address_option
@click.option("--no-resume", is_flag=True, help="Discard earlier output in --out and start over.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the sources and say how many inputs the run would tag and how many --out already holds; "
    "load no model, start no Ray, write nothing.",
)
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Labels kept in top_labels.")
@aggregate_option
@click.option(
    "--part-seconds",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Write a Parquet part at least this often: the most work a killed driver can lose.",
)
@s3_endpoint_option
def tag(
    sources: tuple[str, ...],
    out: str,
    files_from: str | None,
    mode: str,
    model: str | None,
    support: str | None,
    unknown_threshold: float | None,
    features: str | None,
    workers: int,
    gpus_per_worker: float,
    batch_size: int,
    precision: str,
    address: str | None,
    no_resume: bool,
    dry_run: bool,
    top_k: int,
    aggregation: str,
    part_seconds: float,
    s3_endpoint: str | None,
) -> None:
    """Tag SOURCE... (files, folders, globs, s3:// prefixes, zip/tar archives), and those listed in
    --files-from, into a Parquet dataset.

    Reruns with the same --out resume: files already in the dataset are skipped.
    """
    from mirbatch.pipeline import TagConfig, TagInterrupted, TagSummary, run_tag

    if not sources and files_from is None:
        raise click.UsageError("name at least one SOURCE, or a list of them with --files-from")
    config = TagConfig(
        sources=sources,
        out=out,
        files_from=files_from,
        mode=mode,
        model=model,
        support=support,
        unknown_threshold=unknown_threshold,
        features=features,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        batch_size=batch_size,
        address=address,
        resume=not no_resume,
        top_k=top_k,
        aggregation=aggregation,
        precision=precision,
        s3_endpoint=s3_endpoint,
        part_seconds=part_seconds,
    )
    if dry_run:
        _echo_plan(config)
        return
    tty = sys.stderr.isatty()
    fresh_line = "\n" if tty else ""  # a message after the progress line, which a tty keeps rewriting

    def progress(s: TagSummary, todo: int) -> None:
        done = s.files_ok + s.files_error
        line = (
            f"tagged {done}/{todo} files ({counted(s.files_error, 'error')}), "
            f"{s.audio_s / 3600:.3f} h of audio, {s.throughput:.1f} audio-s/s"
        )
        # Files per second since the first result (start-up excluded) say how long the rest takes.
        if s.first_row_s is not None and 1 < done < todo and s.wall_s > s.first_row_s:
            line += f", about {duration((todo - done) * (s.wall_s - s.first_row_s) / (done - 1))} left"
        click.echo(f"\r{line}   " if tty else line, err=True, nl=not tty)

    try:
        with _s3_errors(), _tag_errors():
            summary = run_tag(config, progress=progress)
    except TagInterrupted as exc:
        done = counted(exc.summary.files_ok + exc.summary.files_error, "file")
        click.echo(
            f"{fresh_line}interrupted: {done} of this run written to {out}; rerun the same command to resume",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo(f"{fresh_line}interrupted before any file was tagged", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if tty:
        click.echo(err=True)
    click.echo(
        f"{summary.files_ok} ok, {counted(summary.files_error, 'error')}, {summary.files_skipped} already done; "
        f"{summary.audio_s / 3600:.3f} h of audio in {summary.wall_s:.1f} s "
        f"({summary.throughput:.1f} audio-s/s) -> {summary.out}"
    )
    if summary.rows_superseded:
        older = counted(summary.rows_superseded, "older row")
        click.echo(f"removed {older} of files tagged again (changed since, or by another run at once)")
    for path, error in summary.errors[:10]:
        click.echo(f"  error: {path}: {error}", err=True)
    if len(summary.errors) > 10:
        click.echo(f"  ... and {len(summary.errors) - 10} more (status='error' rows in the output)", err=True)
    if summary.files_error and not summary.files_ok:
        sys.exit(EXIT_ALL_FAILED)
    if summary.files_error:
        sys.exit(EXIT_PARTIAL)


@contextmanager
def _tag_errors() -> Iterator[None]:
    """What stops a tag run before or while it lists its sources, as one line: bad values, I/O, and
    the library's typed errors (sources, checkpoints), whose text is written for users."""
    try:
        yield
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("mirbatch"):
            raise click.ClickException(str(exc)) from exc
        raise


def _echo_plan(config: TagConfig) -> None:
    """``tag --dry-run``: what the run would do."""
    from mirbatch.pipeline import plan_tag

    with _s3_errors(), _tag_errors():
        plan = plan_tag(config)
    click.echo(f"would tag {plan.todo} of {counted(plan.listed, 'input')} ({plan.done} already in {config.out})")
    for path in plan.first_todo:
        click.echo(f"  {path}")
    if plan.todo > len(plan.first_todo):
        click.echo(f"  ... and {plan.todo - len(plan.first_todo)} more")


@main.command(
    epilog=_example(
        "mirbatch show labels/\n"
        "mirbatch show labels/ --limit 0   # every row\n"
        "mirbatch show labels/ --counts    # files and hours per label\n"
        "mirbatch show labels/ --format csv --limit 0 > labels.csv\n"
        "mirbatch show s3://bucket/labels/ --s3-endpoint http://127.0.0.1:9000"
    )
)
@click.argument("out", metavar="OUT")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Rows to print; 0: all.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "jsonl"]),
    default="table",
    show_default=True,
    help="table: for reading; csv or jsonl (a JSON object per line): for a catalogue or a spreadsheet, "
    "with top labels and scores, duration and error.",
)
@click.option("--counts", is_flag=True, help="Instead of rows: files, hours and mean confidence per label, and errors.")
@s3_endpoint_option
def show(out: str, limit: int, fmt: str, counts: bool, s3_endpoint: str | None) -> None:
    """Print the labels of a tag output dataset (a folder or s3:// prefix): a row per file, or the
    count per label."""
    from mirbatch.output import read_output
    from mirbatch.sources import S3Options

    columns = ["path", "status", "label", "confidence", "top_labels", "top_scores", "duration_s", "error"]
    try:
        with _s3_errors():
            table, committed = read_output(out, columns, S3Options.resolve(s3_endpoint))
    except (FileNotFoundError, PermissionError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not committed:
        click.echo(f"{out}: its last run did not finish; rerun the same tag command to resume it", err=True)
    if counts:
        _echo_counts(table, fmt)
        return
    # Sorted and cut in Arrow: an output of millions of rows never becomes Python objects whole.
    ordered = table.sort_by("path")
    shown = (ordered if limit == 0 else ordered.slice(0, limit)).to_pylist()
    for r in shown:  # float32 scores: 4 decimals say all they hold
        r["confidence"] = None if r["confidence"] is None else round(r["confidence"], 4)
        r["top_scores"] = [round(x, 4) for x in r["top_scores"] or []]
    if fmt != "table":
        _echo_records(shown, columns, fmt)
    else:
        width = max([len("path"), *(len(r["path"]) for r in shown)])
        click.echo(f"{'path':<{width}}  {'label':<16} confidence")
        for r in shown:
            if r["status"] == "ok":
                click.echo(f"{r['path']:<{width}}  {r['label']:<16} {r['confidence']:.3f}")
            else:
                click.echo(f"{r['path']:<{width}}  {'(error)':<16} {r['error']}")
    if len(shown) < len(table):
        click.echo(f"... {len(table) - len(shown)} more rows (--limit 0: all)", err=fmt != "table")


def _echo_records(records: list[dict[str, Any]], columns: list[str], fmt: str) -> None:
    """``records`` as JSON lines (``jsonl``) or as CSV with a header, lists joined by ``;`` (``csv``)."""
    if fmt == "jsonl":
        for r in records:
            click.echo(json.dumps(r, ensure_ascii=False))
        return
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        writer.writerow([";".join(map(str, r[c])) if isinstance(r[c], list) else r[c] for c in columns])


def _echo_counts(table: pa.Table, fmt: str) -> None:
    """Files, hours of audio and mean confidence per label (most files first), then the errors."""
    import pyarrow as pa
    import pyarrow.compute as pc

    group = pc.if_else(pc.equal(table["status"], "ok"), table["label"], "(error)")
    grouped = (
        pa.table(
            {"label": group, "duration_s": pc.fill_null(table["duration_s"], 0.0), "confidence": table["confidence"]}
        )
        .group_by("label")
        .aggregate([("label", "count"), ("duration_s", "sum"), ("confidence", "mean")])
        .to_pylist()
    )
    stats: list[dict[str, Any]] = [
        {
            "label": g["label"],
            "files": g["label_count"],
            "hours": round(g["duration_s_sum"] / 3600, 4),
            "mean_confidence": None if g["label"] == "(error)" else round(g["confidence_mean"], 4),
        }
        for g in sorted(grouped, key=lambda g: (g["label"] == "(error)", -g["label_count"], g["label"]))
    ]
    if fmt != "table":
        _echo_records(stats, list(stats[0]), fmt)
    else:
        click.echo(f"{'label':<16} {'files':>8} {'hours':>9}  mean confidence")
        for stat in stats:
            confidence = "" if stat["mean_confidence"] is None else f"{stat['mean_confidence']:.3f}"
            click.echo(f"{stat['label']:<16} {stat['files']:>8} {stat['hours']:>9.3f}  {confidence}")
        click.echo(f"{'(all)':<16} {len(table):>8} {sum(s['hours'] for s in stats):>9.3f}")


@main.command(
    epilog=_example(
        "mirbatch data render --soundfont fluidr3 --out data/fluidr3 --per-class 200 --seed 1\n"
        "mirbatch train --model cnn --data data/fluidr3 --data data/freepats --out models/cnn.safetensors\n"
        "mirbatch train --model cnn --data data/fluidr3 --out models/cnn.safetensors --workers 2 --resume\n"
        "mirbatch train --model cnn --data IRMAS-TrainingData --out irmas.safetensors --address auto --use-gpu "
        "--storage s3://my-bucket/runs\n"
        "mirbatch train --model residual-siamese --data data/matcher_fluidr3 --data data/matcher_timgm6mb "
        "--width 32 --lr-schedule cosine --out models/matcher.safetensors\n"
        "mirbatch train --init cnn-default --data my-labelled-files --epochs 20 --lr-schedule cosine "
        "--out models/mine.safetensors"
    )
)
@click.option(
    "--model",
    "architecture",
    type=click.Choice(["cnn", "cnn-freq", "cnn-vgg", "cnn-harmonic", "siamese", "residual-siamese"]),
    default=None,
    help="Default: cnn, or --init's network. cnn: the seed paper's CNN; cnn-freq: the same with batch norm "
    "and a frequency-aware head; "
    "cnn-vgg: eight 3x3 convolutions on unresized patches, frequency-aware head; "
    "cnn-harmonic: cnn-vgg beside a network on each frame's harmonic levels, their answers multiplied "
    "(best across libraries measured); "
    "siamese / residual-siamese: one-shot matchers trained on same/different pairs (validated on held-out labels).",
)
@data_option
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@click.option("--labels", default=None, help="Comma-separated labels to train (default: every label found).")
@click.option(
    "--aux-labels",
    default=None,
    help="Classifiers: more labels to train on as auxiliary classes that are never predicted (the "
    "model answers with --labels only); 'rest' takes every other label found. Telling more "
    "instruments apart shapes features that carry to other recordings.",
)
@click.option(
    "--features",
    type=click.Choice(["mel", "scalogram"]),
    default=None,
    help="Input features (default: mel for classifiers, scalogram for matchers).",
)
@click.option(
    "--wavelet",
    type=click.Choice(["morse", "morlet"]),
    default=None,
    help="Wavelet of --features scalogram (default: morse).",
)
@click.option(
    "--init",
    default=None,
    metavar="MODEL|PATH",
    help="Fine-tune: start from this checkpoint's weights (a bundled name such as cnn-default, or a file) "
    "instead of random ones. The network, width and features are the checkpoint's; the output rows of "
    "labels it knows are kept, new labels start fresh; it is validated as epoch 0 and kept unless an "
    "epoch validates better. Learns from tens of labelled files of your own archive.",
)
@click.option(
    "--augment",
    default="default",
    show_default=True,
    help="Audio augmentation: 'default', 'none', or 'default,-reverb,-mix' to leave some out "
    "(wavetable, clean, pitch, eq, low_pass, reverb, noise, band_limit, mix).",
)
@click.option(
    "--augment-copies",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Augmented copies of every training file in the feature cache.",
)
@click.option(
    "--aux-weight",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Matchers: weight of the auxiliary classification loss on the embeddings beside the pair loss.",
)
@click.option(
    "--noise-outliers",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Classifiers: weight of a loss that teaches noise with no instrument in it (hiss, rumble, room tone) "
    "to score alike for every label, so that 'tag --unknown-threshold' turns it 'unknown' (0.5 measured; 0: "
    "off). Mains hum is not such noise: it is a harmonic tone.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=40, show_default=True, help="Most epochs (see --patience)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Global batch size.")
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate (default: the seed papers': 1e-3 RMSprop for cnn, 6e-4 / 5e-4 Adam for the matchers; "
    "1e-3 for cnn-vgg and cnn-harmonic; 0.3 times those with --init).",
)
@click.option(
    "--optimizer",
    type=click.Choice(["rmsprop", "adam", "adamw"]),
    default=None,
    help="Default: RMSprop for cnn and cnn-freq (the seed paper's), AdamW (weight decay 0.01) for cnn-vgg "
    "and cnn-harmonic, Adam for the matchers.",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(["constant", "cosine"]),
    default="constant",
    show_default=True,
    help="constant: --lr throughout (the seed papers'); cosine: the learning rate falls from --lr to 0 "
    "over --epochs along a half cosine (how the bundled matcher was trained).",
)
@click.option(
    "--width",
    type=click.IntRange(min=1),
    default=None,
    help="Channels of the first convolution stage, doubled by later stages (default: 16 for the "
    "matchers, cnn-vgg and cnn-harmonic, 32 for cnn-freq; cnn is the seed paper's fixed network). Wider "
    "learns more, runs slower.",
)
@click.option(
    "--support-shifts",
    default=None,
    metavar="SEMITONES",
    help="Matchers: pitch shifts at which every support example is also enrolled, comma-separated, 0 "
    "included (default: -12,-6,0,6,12 with scalograms; 0 with mel). Stored in the checkpoint; "
    "validation and the unknown threshold use them.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.15,
    show_default=True,
    help="Share of the files held out to validate each epoch, split by source file (renders of one planned "
    "clip together; matchers: by label).",
)
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True, help="Early-stop patience.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the split, initial weights, batch order, augmentation and dropout: a run repeats on the same "
    "machine, thread count and workers.",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Ray Train workers (DDP).")
@click.option("--use-gpu", is_flag=True, help="One GPU per worker.")
@precision_option(TRAINING_PRECISIONS, "bf16: each step's forward and loss in bfloat16 (weights, validation float32)")
@address_option
@click.option(
    "--storage",
    default=None,
    metavar="PATH",
    help="Where per-epoch checkpoints and the feature cache go: a folder (on a cluster, shared by all "
    "nodes) or s3://bucket/prefix (default: ./runs).",
)
@click.option("--name", default=None, help="Run name under --storage (default: the --out file's stem).")
@click.option("--resume", is_flag=True, help="Continue the run from its latest checkpoint.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Feature cache folder (default: STORAGE/feature-cache).",
)
@s3_endpoint_option
def train(
    architecture: str | None,
    data: tuple[str, ...],
    out: str,
    labels: str | None,
    aux_labels: str | None,
    features: str | None,
    wavelet: str | None,
    init: str | None,
    augment: str,
    augment_copies: int,
    aux_weight: float,
    noise_outliers: float,
    epochs: int,
    batch_size: int,
    lr: float | None,
    lr_schedule: str,
    optimizer: str | None,
    width: int | None,
    support_shifts: str | None,
    val_fraction: float,
    patience: int,
    seed: int,
    workers: int,
    use_gpu: bool,
    precision: str,
    address: str | None,
    storage: str | None,
    name: str | None,
    resume: bool,
    cache: str | None,
    s3_endpoint: str | None,
) -> None:
    """Train a classifier on Ray Train (DDP) and save its best epoch as a checkpoint.

    Data sets are folders per label, IRMAS training data or NSynth (detected). Features are cached
    once; every epoch is checkpointed under --storage, and --resume continues an interrupted run.
    """
    from mirbatch.augment import AugmentConfig
    from mirbatch.models import CheckpointError, read_checkpoint_meta
    from mirbatch.sources import S3Options
    from mirbatch.training import TrainConfig, TrainingInterrupted, default_features
    from mirbatch.training import train as run_training

    try:
        # Fine-tuning takes the network and features from the checkpoint unless named (then checked).
        start = read_checkpoint_meta(init) if init else None
        feature_config = None
        if start is not None and architecture in (None, start.architecture):
            architecture = start.architecture
            width = start.params.get("width") if width is None else width
            if features is None and wavelet is None:
                feature_config = start.features
        architecture = architecture or "cnn"
        feature_config = feature_config or default_features(architecture, features, wavelet or "morse")
        config = TrainConfig(
            data=data,
            architecture=architecture,
            labels=tuple(x.strip() for x in labels.split(",")) if labels else None,
            aux_labels=tuple(x.strip() for x in aux_labels.split(",")) if aux_labels else (),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            optimizer=optimizer,
            width=width,
            val_fraction=val_fraction,
            patience=patience,
            seed=seed,
            features=feature_config,
            augment=replace(AugmentConfig.parse(augment), variants=augment_copies if augment != "none" else 0),
            workers=workers,
            use_gpu=use_gpu,
            precision=precision,
            aux_weight=aux_weight,
            noise_outliers=noise_outliers,
            support_shifts=_semitones(support_shifts) if support_shifts is not None else None,
            init=init,
        )
        with _s3_errors():
            path, result = run_training(
                config,
                Path(out),
                storage=storage,
                name=name,
                resume=resume,
                address=address,
                cache=Path(cache) if cache else None,
                log_line=click.echo,
                s3=S3Options.resolve(s3_endpoint),
            )
    except TrainingInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (ValueError, FileNotFoundError, ConnectionError, RuntimeError, CheckpointError) as exc:
        raise click.ClickException(f"--init: {exc}" if isinstance(exc, CheckpointError) else str(exc)) from exc
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
        "mirbatch eval --model models/cnn.safetensors --data data/timgm6mb --report reports/timgm6mb\n"
        "mirbatch eval --model siamese-default --data data/held_timgm6mb --n-way 5 --k-shot 1 --episodes 1000\n"
        "mirbatch eval --data data/held_timgm6mb --support-data data/held_fluidr3 --n-way 2 --n-way 5 --k-shot 1"
    ),
)
@model_option("Checkpoint path or bundled model name (default: cnn-default; siamese-default with --n-way).")
@data_option
@click.option("--report", type=click.Path(file_okay=False), default=None,
              help="Folder for report.json, files.csv (each file's answers) and confusion-matrix PNGs "
                   "(episodes.json for matchers).")  # fmt: skip
@click.option(
    "--n-way",
    "n_way",
    type=click.IntRange(min=2),
    multiple=True,
    help="Matchers: labels per episode (repeat for several protocols). Default: 2 and 5.",
)
@click.option(
    "--k-shot",
    "k_shot",
    type=click.IntRange(min=1),
    multiple=True,
    help="Matchers: support files per label (repeat for several). Default: 1 (and 5 for 5-way).",
)
@click.option("--episodes", type=click.IntRange(min=1), default=1000, show_default=True, help="Matchers: episodes.")
@click.option(
    "--queries", type=click.IntRange(min=1), default=5, show_default=True, help="Matchers: query files per label."
)
@click.option(
    "--support-data",
    "support_data",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Matchers: take the shots from these data sets (e.g. another sample library); default: --data.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Matchers: episode sampling seed.")
@aggregate_option
def evaluate(
    model: str | None,
    data: tuple[str, ...],
    report: str | None,
    n_way: tuple[int, ...],
    k_shot: tuple[int, ...],
    episodes: int,
    queries: int,
    support_data: tuple[str, ...],
    seed: int,
    aggregation: str,
) -> None:
    """Evaluate a model on labelled data beside a classic baseline.

    Classifiers: accuracy, per-label precision/recall/F1, macro-F1, beside the MFCC-SVM baseline.
    Matchers (siamese, residual-siamese): N-way K-shot episodes on labels it never trained on, mean
    accuracy with a 95% confidence interval, beside a nearest neighbour on MFCC statistics.
    """
    from mirbatch.evaluate import evaluate_classifier, evaluate_matcher
    from mirbatch.models import DEFAULT_CLASSIFIER, DEFAULT_MATCHER, CheckpointError, is_matcher, read_checkpoint_meta

    episodic = bool(n_way or k_shot or support_data)
    if report:  # made first: an evaluation can take minutes, and its report must have somewhere to go
        try:
            Path(report).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.ClickException(f"cannot create the --report folder {report}: {exc.strerror or exc}") from exc
    try:
        name = model or (DEFAULT_MATCHER if episodic else DEFAULT_CLASSIFIER)
        if is_matcher(read_checkpoint_meta(name).architecture):
            if n_way or k_shot:
                protocols = [(n, k) for n in (n_way or (2, 5)) for k in (k_shot or (1,))]
            else:
                protocols = [(2, 1), (5, 1), (5, 5)]
            result: Any = evaluate_matcher(
                name,
                [Path(d) for d in data],
                [Path(d) for d in support_data] or None,
                protocols,
                episodes,
                queries,
                seed,
                aggregation,
            )
        elif episodic:
            raise click.UsageError(f"--n-way/--k-shot/--support-data evaluate matchers; {name} is a classifier")
        else:
            result = evaluate_classifier(name, [Path(d) for d in data], aggregation)
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
        "mirbatch data render --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2 --out data/timgm --per-class 40\n"
        "mirbatch data render --soundfont fluidr3 --out data/extra --programs extra --per-class 40\n"
        "mirbatch data render --soundfont fluidr3 --out data/fluidr3_varied --per-class 200 --seed 5 --vary"
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
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Plans every clip (notes, lengths, velocities, --vary offsets): one seed plays the same notes in "
    "every library.",
)
@click.option("--labels", default=None, help="Comma-separated labels (default: the 18-label taxonomy).")
@click.option(
    "--programs",
    default=None,
    metavar="extra|reserved|LIST",
    help="Also render single GM programs as labels of their own (gm006_harpsichord, ...): 'extra' (allowed "
    "for training the matcher), 'reserved' (one-shot evaluation only) or numbers like 4,6,80-87. "
    "Without --labels, only these are rendered.",
)
@click.option(
    "--phrase-fraction",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of clips that are phrases rather than single notes.",
)
@click.option(
    "--vary",
    is_flag=True,
    help="SoundFonts only: randomize each clip's filter cutoff (most clips 1-5 octaves darker), resonance and "
    "vibrato depth through SoundFont NRPNs, so one library sounds like several.",
)
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Synthesizers run at once.")
def render(
    soundfont: str,
    out: str,
    per_class: int,
    seed: int,
    labels: str | None,
    programs: str | None,
    phrase_fraction: float,
    vary: bool,
    jobs: int,
) -> None:
    """Render the taxonomy (or single GM programs) from a GM sample library: notes and phrases, a folder per label."""
    from mirbatch.datasets.render import RenderConfig, RenderError, render_dataset
    from mirbatch.features import NO_SOUND
    from mirbatch.taxonomy import DEFAULT_LABELS, program_label, program_set

    chosen = tuple(x.strip() for x in labels.split(",")) if labels else ()
    try:
        chosen += tuple(program_label(p) for p in program_set(programs)) if programs else ()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--programs") from exc
    chosen = chosen or DEFAULT_LABELS
    config = RenderConfig(soundfont, per_class, seed, phrase_fraction=phrase_fraction, labels=chosen, vary=vary)
    try:
        rendered = render_dataset(config, Path(out), jobs=jobs)
    except (RenderError, KeyError) as exc:
        raise click.ClickException(str(exc).strip('"')) from exc
    written = sorted({p.label for p in rendered.clips})
    missing = sorted(set(chosen) - set(written) - {p.label for p in rendered.silent})
    click.echo(f"rendered {counted(len(rendered.clips), 'clip')} of {counted(len(written), 'label')} to {out}")
    if rendered.silent:
        click.echo(
            f"left out {counted(len(rendered.silent), 'clip')} with {NO_SOUND}, "
            f"{rendered.describe_silent()}: the library has no sample at those keys, or a --vary filter closed "
            "under the note",
            err=True,
        )
    if missing:
        click.echo(f"the library has no program for: {', '.join(missing)}", err=True)


@data.command(
    epilog=_example(
        "mirbatch data render --soundfont fluidr3 --out data/fluidr3 --per-class 200 --seed 1 --vary\n"
        "mirbatch data render --soundfont freepats --out data/freepats --per-class 200 --seed 1\n"
        "mirbatch data morph data/fluidr3 data/freepats --out data/morph"
    )
)
@click.argument("first", type=click.Path(exists=True, file_okay=False))
@click.argument("second", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (a folder per label).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds each clip's mix weight.")
@click.option(
    "--mix",
    "mix_range",
    type=(click.FloatRange(0, 1), click.FloatRange(0, 1)),
    default=(0.25, 0.75),
    show_default=True,
    metavar="LOW HIGH",
    help="Each clip's weight of FIRST is drawn from [LOW, HIGH].",
)
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Clips morphed at once.")
def morph(first: str, second: str, out: str, seed: int, mix_range: tuple[float, float], jobs: int) -> None:
    """Morph two renders of the same clips (same --seed) into a library between them.

    Each clip's magnitude spectrogram is |A|^w |B|^(1-w), w drawn per clip: an instrument as
    neither library recorded it, labelled as both are. Clips pair by label and index, where both
    play the same notes.
    """
    from mirbatch.datasets.morph import MorphConfig, MorphError, morph_datasets

    try:
        written = morph_datasets(Path(first), Path(second), Path(out), MorphConfig(seed, *mix_range), jobs=jobs)
    except MorphError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"morphed {counted(written, 'clip')} into {out}")


@main.group()
def support() -> None:
    """Support libraries: a few labelled examples per instrument for --mode match."""


@support.command(
    name="add",
    epilog=_example(
        "mirbatch support add my-instruments/ examples/theremin.wav --label theremin\n"
        "mirbatch support add my-instruments/ examples-by-label/   # a folder per label\n"
        "mirbatch support add lib/ shots/ --model models/matcher.safetensors\n"
        "mirbatch support add other-chain/ shots/ --support-shifts 0   # examples only as they are"
    ),
)
@click.argument("library", type=click.Path(file_okay=False))
@click.argument("sources", nargs=-1, required=True)
@click.option("--label", default=None, help="Label of every SOURCE; without it each SOURCE holds a folder per label.")
@model_option("Matcher checkpoint path or bundled name (default: siamese-default).")
@click.option(
    "--support-shifts",
    default=None,
    metavar="SEMITONES",
    help="Pitch shifts at which each example is also enrolled, comma-separated, 0 included (default: the "
    "library's, else the model's: -12,-6,0,6,12 for siamese-default). 0 alone suits many labels whose "
    "examples come from another recording chain than the archive (README, one-shot results).",
)
@s3_endpoint_option
def support_add(
    library: str,
    sources: tuple[str, ...],
    label: str | None,
    model: str | None,
    support_shifts: str | None,
    s3_endpoint: str | None,
) -> None:
    """Embed SOURCE... (files, folders, globs) and enroll them into LIBRARY under their labels."""
    from mirbatch.models import CheckpointError
    from mirbatch.sources import SourceError
    from mirbatch.support import SupportError, enroll

    try:
        shifts = _semitones(support_shifts) if support_shifts is not None else None
        with _s3_errors():
            result = enroll(library, sources, label, model, s3_endpoint, shifts)
    except (SupportError, SourceError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"enrolled {counted(result.files_added, 'file')} ({counted(result.patches_added, 'patch', 'patches')}) "
        f"into {library} with {result.model}; "
        f"{result.files_already_enrolled} already enrolled, {len(result.failed)} failed"
    )
    for path, reason in result.failed:
        click.echo(f"  failed: {path}: {reason}", err=True)
    if result.failed and not result.files_added and not result.files_already_enrolled:
        sys.exit(EXIT_ALL_FAILED)


@support.command(name="list", epilog=_example("mirbatch support list my-instruments/"))
@click.argument("library", type=click.Path(file_okay=False))
def support_list(library: str) -> None:
    """Print the labels of LIBRARY with their enrolled files and patches."""
    from mirbatch.features import shifts_key
    from mirbatch.support import SupportError, SupportLibrary

    try:
        lib = SupportLibrary.open(library, must_exist=True)
    except SupportError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = lib.summary()
    click.echo(
        f"{library}: {counted(len(rows), 'label')}, model {lib.model}, pitch shifts {shifts_key(lib.shifts) or '-'}"
    )
    click.echo(f"{'label':<28}{'files':>6}{'patches':>9}")
    for name, files, patches in rows:
        click.echo(f"{name:<28}{files:>6}{patches:>9}")


@support.command(name="remove", epilog=_example("mirbatch support remove my-instruments/ --label theremin"))
@click.argument("library", type=click.Path(file_okay=False))
@click.option("--label", required=True, help="Label whose examples to remove.")
def support_remove(library: str, label: str) -> None:
    """Remove every example of a label from LIBRARY."""
    from mirbatch.support import SupportError, SupportLibrary

    try:
        lib = SupportLibrary.open(library, must_exist=True)
    except SupportError as exc:
        raise click.ClickException(str(exc)) from exc
    if label not in lib.labels:
        raise click.ClickException(f"{library} has no label {label!r}; it has: {', '.join(lib.labels) or 'none'}")
    smaller, files = lib.remove(label)
    smaller.save()
    click.echo(f"removed {counted(files, 'file')} of {label!r} from {library}")


@contextmanager
def _s3_errors() -> Iterator[None]:
    """S3 failures that botocore raises outside ``OSError`` (no credentials, an endpoint that does not
    answer) as one line with what to do, not a traceback."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith("botocore"):
            raise
        hint = (
            ": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an instance role "
            "gives them"
            if type(exc).__name__ == "NoCredentialsError"
            else ""
        )
        raise click.ClickException(f"S3: {exc}{hint}") from exc


@contextmanager
def _job_server(address: str) -> Iterator[None]:
    """Turn the job server's failures (unreachable, unknown job, refused) into one-line errors."""
    try:
        yield
    except (ConnectionError, RuntimeError) as exc:
        raise click.ClickException(f"job server {address}: {exc}") from exc


job_address_option = click.option(
    "--address",
    required=True,
    envvar="RAY_API_SERVER_ADDRESS",
    metavar="URL",
    help="The cluster's job server, e.g. http://HEAD:8265 (or $RAY_API_SERVER_ADDRESS). With token auth set "
    "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token).",
)


@main.command(
    epilog=_example(
        "mirbatch submit jobs/tag-archive.yaml --address http://head:8265\n"
        "mirbatch submit jobs/tag-archive.yaml --address http://head:8265 --set out=s3://b/run2/ --wait\n"
        "mirbatch submit jobs/train-cnn.yaml --dry-run"
    )
)
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--address",
    default=None,
    envvar="RAY_API_SERVER_ADDRESS",
    metavar="URL",
    help="The cluster's job server, e.g. http://HEAD:8265 (or $RAY_API_SERVER_ADDRESS); see 'jobs list --help' "
    "for token auth.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of the spec (YAML value).")
@click.option("--wait", is_flag=True, help="Follow the job's logs until it ends; exit non-zero unless it succeeded.")
@click.option("--submission-id", default=None, help="Id for the job (default: Ray makes one).")
@click.option("--dry-run", is_flag=True, help="Validate the spec and print the command it runs; submit nothing.")
def submit(
    spec: str, address: str | None, overrides: tuple[str, ...], wait: bool, submission_id: str | None, dry_run: bool
) -> None:
    """Submit a job spec (kind: tag, enroll or train) to a Ray cluster and print its submission id."""
    from mirbatch.jobs import JobSpecError, load_job_spec, parse_overrides, submit_job, wait_for_job

    try:
        job = load_job_spec(spec, parse_overrides(overrides))
    except JobSpecError as exc:
        raise click.ClickException(f"{spec}: {exc}") from exc
    if dry_run:
        click.echo(job.entrypoint())
        return
    if not address:
        raise click.UsageError("--address (or $RAY_API_SERVER_ADDRESS) is required to submit")
    with _job_server(address):
        job_id = submit_job(job, address, submission_id)
    click.echo(job_id)
    if wait:
        with _job_server(address):
            status = wait_for_job(address, job_id, click.echo)
        click.echo(f"job {job_id} {status}", err=True)
        if status != "SUCCEEDED":
            sys.exit(1)


@main.command(
    name="run",
    epilog=_example(
        "mirbatch run jobs/tag-archive.yaml\n"
        "mirbatch run /app/jobs/train-matcher.yaml --set epochs=5   # e.g. in a RayJob"
    ),
)
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of the spec (YAML value).")
def run_spec(spec: str, overrides: tuple[str, ...]) -> None:
    """Run a job spec here (what a submitted job or a KubeRay RayJob executes on the cluster)."""
    from mirbatch.jobs import JobSpecError, load_job_spec, parse_overrides

    try:
        job = load_job_spec(spec, parse_overrides(overrides))
    except JobSpecError as exc:
        raise click.ClickException(f"{spec}: {exc}") from exc
    click.echo(f"running: {job.entrypoint()}", err=True)
    main.main(args=job.argv(), prog_name="mirbatch", standalone_mode=True)


@main.group()
def jobs() -> None:
    """Jobs on a Ray cluster: list, status, logs, stop."""


@jobs.command(name="list", epilog=_example("mirbatch jobs list --address http://head:8265"))
@job_address_option
def jobs_list(address: str) -> None:
    """List the cluster's jobs (newest last)."""
    from mirbatch.jobs import job_client

    with _job_server(address):
        listed = job_client(address).list_jobs()
    for info in listed:
        kind = (info.metadata or {}).get("mirbatch_kind", "-")
        click.echo(f"{info.submission_id}  {info.status.value:<10} {kind:<7} {info.entrypoint}")


@jobs.command(name="status", epilog=_example("mirbatch jobs status raysubmit_abc --address http://head:8265"))
@click.argument("submission_id")
@job_address_option
def jobs_status(submission_id: str, address: str) -> None:
    """Print a job's status."""
    from mirbatch.jobs import job_client

    with _job_server(address):
        info = job_client(address).get_job_info(submission_id)
    click.echo(f"{submission_id} {info.status.value}" + (f": {info.message}" if info.message else ""))


@jobs.command(name="logs", epilog=_example("mirbatch jobs logs raysubmit_abc --address http://head:8265 --follow"))
@click.argument("submission_id")
@job_address_option
@click.option("--follow", is_flag=True, help="Keep printing until the job ends.")
def jobs_logs(submission_id: str, address: str, follow: bool) -> None:
    """Print a job's logs."""
    from mirbatch.jobs import job_client, wait_for_job

    with _job_server(address):
        if follow:
            wait_for_job(address, submission_id, click.echo)
        else:
            click.echo(job_client(address).get_job_logs(submission_id), nl=False)


@jobs.command(name="stop", epilog=_example("mirbatch jobs stop raysubmit_abc --address http://head:8265"))
@click.argument("submission_id")
@job_address_option
def jobs_stop(submission_id: str, address: str) -> None:
    """Ask a running job to stop."""
    from mirbatch.jobs import job_client

    with _job_server(address):
        stopped = job_client(address).stop_job(submission_id)
    click.echo(f"{submission_id}: {'stop requested' if stopped else 'not running'}")


if __name__ == "__main__":
    main()
