"""`detect`: the command line. Thin: every command calls a library function.

User errors (DetectError, missing files, bad options) print one line and exit non-zero,
without a traceback.
"""

import errno
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import click  # noqa: E402

from detect import __version__  # noqa: E402
from detect.errors import DetectError  # noqa: E402


def _quiet_tensorflow(init_devices=True):
    """Import TensorFlow and initialize its devices with stderr silenced.

    TensorFlow's C++ start-up messages (CUDA probing, oneDNN notices) go through absl
    before its log is initialised, where TF_CPP_MIN_LOG_LEVEL does not reach them, so the
    file descriptor itself is muted meanwhile. Python exceptions still propagate once it
    is restored; TF_CPP_MIN_LOG_LEVEL=0 shows everything. Called only by the commands
    that need TensorFlow, so `detect data ...` and `--help` stay fast. Multi-worker
    training must create its strategy before any op runs: it passes init_devices=False.
    """
    import logging

    if "tensorflow" not in sys.modules and os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0":
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import tensorflow as tf

            if init_devices:
                tf.config.list_physical_devices()
                tf.constant(0) + 0
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def _setup_logging():
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)


# Errors of the user's files, folders and disks rather than of detect: one line each.
_USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def _os_error_message(e):
    """The one-line message for an OSError a user can fix, else None (a bug: traceback)."""
    where = os.fsdecode(e.filename).encode("utf-8", "backslashreplace").decode() if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device" + (f" while writing {where}" if where else "")
    if e.errno in _USER_ERRNOS or isinstance(e, _USER_OS_ERRORS):
        reason = e.strerror or str(e)
        return f"{where}: {reason}" if where else reason
    return None


# Commands that pick up where they stopped when run again (the rest start over).
_RESUME_HINTS = {
    "train": "run the same command again to resume from the last finished epoch",
    "proposals": "run the same command again to resume: finished images are kept",
}


def _interrupted_message():
    """`interrupted`, and for resumable commands how to resume."""
    context = click.get_current_context(silent=True)
    hint = _RESUME_HINTS.get(context.info_name if context else None)
    return f"interrupted; {hint}" if hint else "interrupted"


def handle_errors(func):
    """Turn user errors into one clear line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DetectError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:
            message = _os_error_message(e)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            # A newline first: a progress bar may hold the cursor mid-line.
            click.echo("\n" + _interrupted_message(), err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="detect")
def main():
    """detect: R-CNN, Fast R-CNN and Faster R-CNN in Keras 3 - data, train, evaluate, predict."""
    _setup_logging()


# --------------------------------------------------------------------------- data
@main.group()
def data():
    """Datasets: generate the synthetic shapes set, inspect and convert annotations."""


@data.command("shapes")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--num-images", default=None, type=click.IntRange(1),
              help="Images in all (default: 1000; multiscale preset: 1200).")
@click.option("--image-size", default=None, type=click.IntRange(32),
              help="Side in pixels (default: 128; multiscale preset: 320).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--preset", type=click.Choice(["default", "multiscale"]), default="default", show_default=True,
              help="multiscale: 5 classes, 2-20 shapes of 6-200 px per image, overlaps, photo backgrounds.")
@handle_errors
def data_shapes(out, num_images, image_size, seed, preset):
    """Write a COCO-format dataset of shapes on textured backgrounds (train and val)."""
    if preset == "multiscale":
        from detect.data.shapes_multiscale import DEFAULTS as sizes, generate_multiscale as generate
    else:
        from detect.data.shapes import generate_shapes as generate

        sizes = {"num_images": 1000, "image_size": 128}
    result = generate(out, num_images=num_images or sizes["num_images"],
                      image_size=image_size or sizes["image_size"], seed=seed)
    counts = result["num_images"]
    click.echo(f"shapes dataset written to {out} ({counts['train']} train / {counts['val']} val images)")


_FORMAT = click.Choice(["coco", "voc", "csv", "yolo", "labelme", "cvat"])


@data.command("inspect")
@click.option("--format", "fmt", type=_FORMAT, required=True, help="Annotation format.")
@click.option(
    "--annotations", required=True, type=click.Path(),
    help="COCO json, VOC root, CSV file, YOLO data.yaml or image folder, LabelMe folder, CVAT XML.",
)
@click.option("--images", type=click.Path(), default=None, help="Image folder (default: per format).")
@click.option(
    "--split", default=None,
    help="VOC split name (ImageSets/Main/<split>.txt); YOLO data.yaml key (default: every annotation file).",
)
@click.option(
    "--classes", default=None,
    help="Class list: CSV mapping (name,id) or names file (one a line) (default: from the annotations).",
)
@click.option(
    "--plot", type=click.Path(dir_okay=False), default=None, help="Save a grid of labelled images (default: no grid)."
)
@click.option(
    "--verify", is_flag=True,
    help="Also decode every image (in parallel) and list truncated or undecodable files; exit 2 when any.",
)
@click.option(
    "--workers", default=None, type=click.IntRange(1), help="Decoding threads for --verify (default: CPUs, at most 8)."
)
@handle_errors
def data_inspect(fmt, annotations, images, split, classes, plot, verify, workers):
    """Count images, boxes per class, negatives and box sizes; validate; optionally plot."""
    from detect.data.inspect import format_report, inspect, plot_grid
    from detect.data.formats import load_dataset

    dataset = load_dataset(fmt, annotations, images=images, split=split, classes=classes)
    click.echo(format_report(inspect(dataset)))
    if plot:
        plot_grid(dataset, plot)
        click.echo(f"labelled image grid saved to {plot}")
    if verify:
        from detect.data.verify import format_problems, verify_images

        checked, problems = verify_images(dataset, workers=workers)
        click.echo(format_problems(checked, problems))
        if problems:
            raise DetectError(f"{len(problems)} of {checked} images do not decode (listed above)")


@data.command("convert")
@click.option("--from", "src_format", type=_FORMAT, required=True, help="Source format.")
@click.option(
    "--to", "dst_format", type=click.Choice(["coco", "voc", "yolo", "csv"]), default="coco", show_default=True,
    help="Target format.",
)
@click.option("--images", type=click.Path(), default=None, help="Image folder of the source (default: per format).")
@click.option(
    "--split", default=None, help="Source split: VOC ImageSets name, YOLO data.yaml key (default: all annotations)."
)
@click.option(
    "--classes", default=None,
    help="Source class list (CSV mapping or names file); keeps unused classes (default: from the annotations).",
)
@click.option("--subset", default=None, help="VOC/YOLO output split name (default: --split, else train).")
@click.option(
    "--image-mode", type=click.Choice(["link", "copy"]), default="link", show_default=True,
    help="VOC/YOLO: symbolic links to the source images, or copies.",
)
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@handle_errors
def data_convert(src_format, dst_format, images, split, classes, subset, image_mode, src, dst):
    """Convert SRC annotations to DST: a COCO json, a VOC root, a YOLO folder or a CSV file."""
    from detect.data.convert import convert, images_root

    dataset = convert(
        src_format, src, dst, split=split, images=images, classes=classes, to=dst_format,
        subset=subset, image_mode=image_mode,
    )
    click.echo(f"{len(dataset)} images written to {dst} as {dst_format} (image names relative to {images_root(dataset)})")


@data.command("anchors")
@click.option("--format", "fmt", type=_FORMAT, required=True, help="Annotation format.")
@click.option("--annotations", required=True, type=click.Path(), help="Annotations, as for `detect data inspect`.")
@click.option("--config", "config_path", required=True, type=click.Path(), help="Detector config (input resizing, anchors).")
@click.option("--images", type=click.Path(), default=None, help="Image folder (default: per format).")
@click.option("--split", default=None, help="VOC split name; YOLO data.yaml key (default: all annotations).")
@click.option(
    "--classes", default=None,
    help="Class list: CSV mapping (name,id) or names file (one a line) (default: from the annotations).",
)
@click.option(
    "--mode", default="grid", show_default=True, type=click.Choice(["grid", "free"]),
    help="grid: the config's sizes x ratios; free: also free shapes per level.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None,
    help="anchors.json to write, plot beside it (default: print the report only).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the k-means starts.")
@handle_errors
def data_anchors(fmt, annotations, config_path, images, split, classes, mode, out, seed):
    """Fit RPN anchor sizes and ratios to a dataset's boxes (k-means, 1 - IoU) and compare recall."""
    from detect.config import load_config
    from detect.data.anchor_fit import fit_anchors, format_report, plot_anchors
    from detect.data.formats import load_dataset
    from detect.io import write_json

    config = load_config(config_path)
    dataset = load_dataset(fmt, annotations, images=images, split=split, classes=classes, check_images=False)
    result, shapes = fit_anchors(
        dataset, config["rpn"]["anchor_sizes"], config["rpn"]["anchor_ratios"], config["input"]["min_size"],
        config["input"]["max_size"], mode=mode, seed=seed,
    )
    click.echo(format_report(result))
    if out:
        plot = os.path.splitext(out)[0] + ".png"
        write_json(out, result)
        plot_anchors(shapes, result, plot, seed=seed)
        click.echo(f"anchors written to {out}, plot to {plot}")


# --------------------------------------------------------------------------- proposals
@main.group(invoke_without_command=True)
@click.option(
    "--config", "config_path", type=click.Path(), help="Detector config (dataset paths); required without a subcommand."
)
@click.option(
    "--split", default="train", show_default=True, type=click.Choice(["train", "val", "test"]),
    help="Dataset split of the config.",
)
@click.option(
    "--mode", default=None, type=click.Choice(["fast", "quality"]),
    help="Selective search mode (default: the config's proposals.mode).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Proposal file (.npz); required without a subcommand.")
@click.option("--workers", default=None, type=click.IntRange(1), help="Worker processes (default: CPUs).")
@click.option("--set", "overrides", multiple=True, help="Override a config key: a.b=value.")
@click.pass_context
@handle_errors
def proposals(ctx, config_path, split, mode, out, workers, overrides):
    """Selective-search proposals for a dataset split (resumable), and proposal recall."""
    if ctx.invoked_subcommand is not None:
        return
    if not config_path or not out:
        raise DetectError("detect proposals needs --config CONFIG and --out FILE")
    _quiet_tensorflow()
    from detect.config import load_config
    from detect.proposals.cache import compute_proposals
    from detect.data.splits import load_split

    config = load_config(config_path, overrides)
    dataset = load_split(config, split)
    if dataset is None:
        raise DetectError(f"config: dataset.{split}.annotations is not set")
    p = config["proposals"]
    path = compute_proposals(
        dataset, out, mode=mode or p["mode"], max_side=p["max_side"], max_proposals=p["max_proposals"], workers=workers
    )
    click.echo(f"proposals for {len(dataset)} images written to {path}")


@proposals.command("recall")
@click.option("--config", "config_path", required=True, type=click.Path(), help="Detector config.")
@click.option(
    "--model", "model_dir", type=click.Path(), default=None, help="Trained model folder for RPN recall (default: none)."
)
@click.option("--split", default="val", show_default=True, help="Dataset split of the config.")
@click.option(
    "--proposals", "proposal_file", type=click.Path(), default=None,
    help="Selective-search proposal file (default: none).",
)
@click.option(
    "--out", default="runs/recall", show_default=True, type=click.Path(file_okay=False), help="Output folder."
)
@handle_errors
def proposals_recall(config_path, model_dir, split, proposal_file, out):
    """Recall vs IoU and vs number of proposals: selective search and a trained RPN."""
    _quiet_tensorflow()
    from detect.config import load_config
    from detect.proposals.compare import compare_recall

    config = load_config(config_path)
    result = compare_recall(config, split=split, model_dir=model_dir, proposal_file=proposal_file, out_dir=out)
    click.echo(result["table"])
    click.echo(f"recall table and plot written to {out}")


# --------------------------------------------------------------------------- train
@main.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path())
@click.option("--set", "overrides", multiple=True, help="Override a config key: a.b=value (repeatable).")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Model folder (default models/<detector>_<config name>)."
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (rerunning does it too).")
@click.option(
    "--overwrite", is_flag=True, help="Replace a model in --out trained with another config (default: refuse)."
)
@click.option(
    "--strategy",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "mirrored", "multi_worker"]),
    help="tf.distribute strategy (multi_worker reads TF_CONFIG).",
)
@handle_errors
def train(config_path, overrides, out, resume, overwrite, strategy):
    """Train the detector CONFIG describes with model.fit and Keras callbacks."""
    from detect.config import load_config

    config = load_config(config_path, overrides)
    _quiet_tensorflow(init_devices=strategy != "multi_worker")
    from detect.training.train import train as run

    stem = os.path.splitext(os.path.basename(config_path))[0]
    out = out or os.path.join("models", f"{config['detector']}_{stem}")
    result = run(config, out, resume=resume, strategy=strategy, overwrite=overwrite)
    rate = result.get("images_per_second")
    speed = f" ({result.get('epochs', 0)} epochs, {rate:.1f} training images/s)" if rate else ""
    click.echo(f"trained in {result['minutes']:.1f} min{speed}; model, history and loss curve in {out}")


# --------------------------------------------------------------------------- evaluate
@main.command()
@click.argument("model_dir", required=False, type=click.Path())
@click.option("--config", "config_path", type=click.Path(), default=None, help="Config (default: the model's).")
@click.option(
    "--split", default="val", show_default=True, type=click.Choice(["train", "val", "test"]),
    help="Dataset split of the config to evaluate on.",
)
@click.option(
    "--detections", type=click.Path(), default=None,
    help="COCO results file to score instead of a model (default: none).",
)
@click.option(
    "--annotations", type=click.Path(), default=None, help="COCO ground truth for --detections (default: none)."
)
@click.option("--images", type=click.Path(), default=None,
              help="Image folder of --annotations (file_name root), for the galleries (default: no galleries).")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None,
    help="Output folder (default: MODEL_DIR/eval_<split>, or the folder of --detections).",
)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Images per model call.")
@handle_errors
def evaluate(model_dir, config_path, split, detections, annotations, images, out, batch_size):
    """COCO (pycocotools) and VOC metrics, the TIDE error breakdown, galleries and report.html,
    for a model on a split or for a detections file."""
    from detect.evaluation.report import evaluate_files, format_errors, format_table

    if detections or annotations:
        if not (detections and annotations) or model_dir:
            raise DetectError("use either MODEL_DIR or both --detections FILE and --annotations FILE")
        out = out or os.path.dirname(os.path.abspath(detections))
        metrics = evaluate_files(detections, annotations, out, images=images)
    else:
        if not model_dir:
            raise DetectError("give MODEL_DIR, or --detections FILE --annotations FILE")
        if images:
            raise DetectError("--images goes with --detections; a model's images come from its dataset config")
        _quiet_tensorflow()
        from detect.evaluation.evaluate_model import evaluate_model

        out = out or os.path.join(model_dir, f"eval_{split}")
        metrics = evaluate_model(model_dir, config_path=config_path, split=split, out_dir=out, batch_size=batch_size)
    click.echo(format_table(metrics))
    click.echo(format_errors(os.path.join(out, "errors.json")))
    click.echo(f"metrics.json, errors.json, detections.json, plots and galleries written to {out}")
    click.echo(f"report: {os.path.join(out, 'report.html')}")


# --------------------------------------------------------------------------- predict
@main.command()
@click.argument("model_dir", type=click.Path())
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (default: MODEL_DIR/predictions)."
)
@click.option(
    "--score-threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
    help="Keep detections scoring at least this.",
)
@click.option(
    "--batch-size", default=None, type=click.IntRange(1),
    help="Frames per model call (default: 8; 1 when a source is a webcam).",
)
@click.option("--classes", default=None, help="Comma-separated class names to keep (default: all).")
@click.option("--show", is_flag=True, help="Show frames in a window (needs a display).")
@handle_errors
def predict(model_dir, sources, out, score_threshold, batch_size, classes, show):
    """Detect objects in images, folders, globs, list files, videos or a webcam index."""
    _quiet_tensorflow()
    from detect.inference.run import run_predict, speed_line, summary_line

    out = out or os.path.join(model_dir, "predictions")
    keep = [c.strip() for c in classes.split(",")] if classes else None
    result = run_predict(
        model_dir, list(sources), out, score_threshold=score_threshold, batch_size=batch_size, classes=keep, show=show
    )
    click.echo(speed_line(result))
    click.echo(summary_line(result, out))


# --------------------------------------------------------------------------- benchmark
@main.command()
@click.option("--detectors", default="faster_rcnn", show_default=True,
              help="Comma list: rcnn,fast_rcnn,faster_rcnn,faster_rcnn_fpn (FPN: tiny, resnet50, resnet101).")
@click.option("--backbone", default="vgg16", show_default=True, help="Backbone (vgg16 = paper config, tiny).")
@click.option(
    "--images", type=click.Path(), default=None, help="Folder of images to time on (default: generated random images)."
)
@click.option(
    "--dataset", "dataset_config", type=click.Path(), default=None,
    help="Config whose val split adds AP (default: speed only).",
)
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1), help="Timed runs per stage.")
@click.option(
    "--out", default="runs/benchmark", show_default=True, type=click.Path(file_okay=False), help="Output folder."
)
@handle_errors
def benchmark(detectors, backbone, images, dataset_config, runs, out):
    """Per-stage speed table of the R-CNN family (markdown, CSV, bar chart)."""
    _quiet_tensorflow()
    from detect.benchmark import speed_table
    from detect.progress import elapsed_bar, label_calls

    names = [d.strip() for d in detectors.split(",") if d.strip()]
    with elapsed_bar("benchmark") as bar, label_calls(speed_table.TIMERS, bar, "benchmark"):
        result = speed_table.run_benchmark(
            names, backbone=backbone, images=images, dataset_config=dataset_config, runs=runs, out_dir=out
        )
    click.echo(result["table"])
    click.echo(f"speed table, CSV and chart written to {out}")


# --------------------------------------------------------------------------- export
@main.command()
@click.argument("model_dir", type=click.Path())
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["saved_model", "onnx", "litert"]), help="Export format."
)
@click.option(
    "--svd", default=None,
    help="Truncated SVD of fc6,fc7 before export, e.g. 1024,256 (default: the config's roi.head_svd, else none).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@handle_errors
def export(model_dir, fmt, svd, out):
    """Export a trained model (SavedModel, ONNX or LiteRT) through Keras' model.export."""
    _quiet_tensorflow()
    from detect.inference.export import export_model
    from detect.progress import elapsed_bar

    with elapsed_bar(f"exporting {fmt}"):
        path = export_model(model_dir, fmt, out, svd=svd)
    click.echo(f"exported {fmt} to {path}")


if __name__ == "__main__":
    main()
