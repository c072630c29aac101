"""`detect data ...`: generate the synthetic shapes set, inspect, convert and fit anchors."""

import os

import click

from detect.cli_support import handle_errors
from detect.errors import DetectError


# --------------------------------------------------------------------------- data
@click.group()
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
@click.option("--masks", is_flag=True,
              help="Also write each shape's exact pixel mask (COCO RLE segmentation) for Mask R-CNN.")
@handle_errors
def data_shapes(out, num_images, image_size, seed, preset, masks):
    """Write a COCO-format dataset of shapes on textured backgrounds (train and val)."""
    if preset == "multiscale":
        from detect.data.shapes_multiscale import DEFAULTS as sizes, generate_multiscale as generate
    else:
        from detect.data.shapes import generate_shapes as generate

        sizes = {"num_images": 1000, "image_size": 128}
    result = generate(out, num_images=num_images or sizes["num_images"],
                      image_size=image_size or sizes["image_size"], seed=seed, masks=masks)
    counts = result["num_images"]
    with_masks = ", with instance masks" if masks else ""
    click.echo(f"shapes dataset written to {out} ({counts['train']} train / {counts['val']} val images{with_masks})")


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
