"""`detect`: the command line. Thin: every command calls a library function.

User errors (DetectError, missing files, bad options) print one line and exit non-zero,
without a traceback.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import click  # noqa: E402

from detect import __version__  # noqa: E402
from detect.cli_data import data  # noqa: E402
from detect.cli_support import handle_errors, quiet_tensorflow, setup_logging  # noqa: E402
from detect.errors import DetectError  # noqa: E402


def _precision_option(command):
    """--precision for predict / evaluate / benchmark (detect/inference/precision.py)."""
    return click.option(
        "--precision", default=None, type=click.Choice(["float32", "bf16"]),
        help="Inference precision: bf16 runs convolutions and dense layers in bfloat16 (boxes, NMS and scores "
             "stay float32; fast on CPUs with AVX512_BF16 or AMX) (default: the config's test.precision, float32).",
    )(command)


class _Commands(click.Group):
    """A group that lists its commands in the order they were added (the order of a run:
    data, proposals, train, evaluate, predict, benchmark, export, weights), not alphabetically."""

    def list_commands(self, ctx):
        return list(self.commands)


@click.group(
    cls=_Commands, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Your own images: README.md, \"Train on your own images\". A command's options: detect COMMAND --help.",
)
@click.version_option(__version__, prog_name="detect")
@click.pass_context
def main(ctx):
    """detect: R-CNN, Fast R-CNN and Faster R-CNN in Keras 3 - data, train, evaluate, predict."""
    if ctx.invoked_subcommand is None:  # `detect` alone: the commands, one line each; exit 0
        click.echo(ctx.get_help())
        ctx.exit(0)
    setup_logging()


# `detect` alone and `detect --help` list each command with its one-line short_help.
data.short_help = "Make, inspect, convert and verify datasets; fit anchors."
main.add_command(data)


@main.group(invoke_without_command=True, short_help="Selective-search proposals (Fast R-CNN, R-CNN); recall.")
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
    quiet_tensorflow()
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
    quiet_tensorflow()
    from detect.config import load_config
    from detect.proposals.compare import compare_recall

    config = load_config(config_path)
    result = compare_recall(config, split=split, model_dir=model_dir, proposal_file=proposal_file, out_dir=out)
    click.echo(result["table"])
    click.echo(f"recall table and plot written to {out}")


# --------------------------------------------------------------------------- train
@main.command(short_help="Train a detector from a YAML config; a rerun resumes.")
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
    quiet_tensorflow(init_devices=strategy != "multi_worker")
    from detect.training.train import train as run

    stem = os.path.splitext(os.path.basename(config_path))[0]
    out = out or os.path.join("models", f"{config['detector']}_{stem}")
    result = run(config, out, resume=resume, strategy=strategy, overwrite=overwrite)
    rate = result.get("images_per_second")
    speed = f" ({result.get('epochs', 0)} epochs, {rate:.1f} training images/s)" if rate else ""
    click.echo(f"trained in {result['minutes']:.1f} min{speed}; model, history and loss curve in {out}")


# --------------------------------------------------------------------------- evaluate
@main.command(short_help="COCO and VOC metrics, error breakdown, galleries, report.html.")
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
@_precision_option
@handle_errors
def evaluate(model_dir, config_path, split, detections, annotations, images, out, batch_size, precision):
    """COCO (pycocotools) and VOC metrics, the TIDE error breakdown, galleries and report.html,
    for a model on a split or for a detections file."""
    from detect.evaluation.report import evaluate_files, format_errors, format_table

    if detections or annotations:
        if not (detections and annotations) or model_dir:
            raise DetectError("use either MODEL_DIR or both --detections FILE and --annotations FILE")
        if precision:
            raise DetectError("--precision goes with MODEL_DIR: a detections file is scored as it is")
        out = out or os.path.dirname(os.path.abspath(detections))
        metrics = evaluate_files(detections, annotations, out, images=images)
    else:
        if not model_dir:
            raise DetectError("give MODEL_DIR, or --detections FILE --annotations FILE")
        if images:
            raise DetectError("--images goes with --detections; a model's images come from its dataset config")
        quiet_tensorflow()
        from detect.evaluation.evaluate_model import evaluate_model

        out = out or os.path.join(model_dir, f"eval_{split}")
        metrics = evaluate_model(model_dir, config_path=config_path, split=split, out_dir=out, batch_size=batch_size,
                                 precision=precision)
    click.echo(format_table(metrics))
    click.echo(format_errors(os.path.join(out, "errors.json")))
    click.echo(f"metrics.json, errors.json, detections.json, plots and galleries written to {out}")
    click.echo(f"report: {os.path.join(out, 'report.html')}")


# --------------------------------------------------------------------------- predict
@main.command(short_help="Detect objects in images, folders, videos or a webcam.")
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
@_precision_option
@click.option(
    "--runtime", default="keras", show_default=True, type=click.Choice(["keras", "onnx"]),
    help="keras: MODEL_DIR is a model folder; onnx: MODEL_DIR is a `detect export --format onnx` folder, run in "
         "ONNX Runtime.",
)
@handle_errors
def predict(model_dir, sources, out, score_threshold, batch_size, classes, show, precision, runtime):
    """Detect objects in images, folders, globs, list files, videos or a webcam index."""
    quiet_tensorflow()
    from detect.inference.run import run_predict, speed_line, summary_line

    out = out or os.path.join(model_dir, "predictions")
    keep = [c.strip() for c in classes.split(",")] if classes else None
    result = run_predict(
        model_dir, list(sources), out, score_threshold=score_threshold, batch_size=batch_size, classes=keep, show=show,
        precision=precision, runtime=runtime,
    )
    click.echo(speed_line(result))
    click.echo(summary_line(result, out))


# --------------------------------------------------------------------------- benchmark
@main.command(short_help="Per-stage speed table of R-CNN, Fast and Faster R-CNN.")
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
@_precision_option
@handle_errors
def benchmark(detectors, backbone, images, dataset_config, runs, out, precision):
    """Per-stage speed table of the R-CNN family (markdown, CSV, bar chart)."""
    quiet_tensorflow()
    from detect.benchmark import speed_table
    from detect.progress import elapsed_bar, label_calls

    names = [d.strip() for d in detectors.split(",") if d.strip()]
    with elapsed_bar("benchmark") as bar, label_calls(speed_table.TIMERS, bar, "benchmark"):
        result = speed_table.run_benchmark(
            names, backbone=backbone, images=images, dataset_config=dataset_config, runs=runs, out_dir=out,
            precision=precision or "float32",
        )
    click.echo(result["table"])
    click.echo(f"speed table, CSV and chart written to {out}")


# --------------------------------------------------------------------------- export
@main.command(short_help="Export a model as SavedModel, ONNX or LiteRT.")
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
    import keras

    from detect.data.splits import has_tensorflow

    if not has_tensorflow():
        raise DetectError("detect export writes TensorFlow graphs (SavedModel, then ONNX / LiteRT): "
                          "install tensorflow (pip install tensorflow) and run it with KERAS_BACKEND=tensorflow")
    if keras.backend.backend() != "tensorflow":
        raise DetectError(f"detect export traces the model with TensorFlow: run it with KERAS_BACKEND=tensorflow "
                          f"(a .keras file saved on {keras.backend.backend()} loads there)")
    quiet_tensorflow()
    from detect.inference.export import export_model
    from detect.progress import elapsed_bar

    with elapsed_bar(f"exporting {fmt}"):
        path = export_model(model_dir, fmt, out, svd=svd)
    click.echo(f"exported {fmt} to {path}")


# --------------------------------------------------------------------------- weights
@main.group(short_help="Convert torchvision COCO detectors to model folders.")
def weights():
    """Convert published detectors into model folders that predict, evaluate, export and train take."""


@weights.command("convert")
@click.option("--from", "source", required=True, type=click.Choice(["torchvision"]), help="Where the weights come from.")
@click.option("--arch", required=True, help="fasterrcnn_resnet50_fpn | fasterrcnn_resnet50_fpn_v2 | "
                                            "fasterrcnn_mobilenet_v3_large_fpn | maskrcnn_resnet50_fpn.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="A state_dict .pth file (default: torchvision's published COCO checkpoint, downloaded once).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace a model already in --out.")
@handle_errors
def weights_convert(source, arch, checkpoint, out, overwrite):
    """Convert a torchvision detector checkpoint into a model folder (model.keras + config.yaml)."""
    quiet_tensorflow()
    from detect.progress import elapsed_bar
    from detect.zoo.torchvision import ARCHS, convert

    if arch in ARCHS and checkpoint is None:
        click.echo(f"checkpoint: {ARCHS[arch][0]} (COCO box AP {ARCHS[arch][1]} as torchvision publishes it)")
    with elapsed_bar(f"converting {arch}"):
        path = convert(arch, out, checkpoint=checkpoint, overwrite=overwrite)
    click.echo(f"model folder written to {path} (detect predict {path} IMAGES...)")


if __name__ == "__main__":
    main()
