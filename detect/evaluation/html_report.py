"""report.html: one self-contained page with everything an evaluation wrote.

The page opens offline: every picture (PR curves, confusion matrix, error breakdown,
galleries, training curves) is inlined as a base64 `data:` URI, the style sheet is inline,
and there is no script and no external URL, so the file can be mailed or archived alone.
It is laid out for a 1280 px window and has print rules (A4, no split figures).
"""

import base64
import datetime
import html
import os

from detect.evaluation.coco_eval import STAT_NAMES
from detect.evaluation.errors import MAIN_ERRORS
from detect.evaluation.galleries import GALLERIES
from detect.io import atomic_write

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fff}
main{max-width:1200px;margin:0 auto;padding:16px 24px}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:19px;border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:28px}
.sub{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
figure{margin:8px 0;break-inside:avoid;page-break-inside:avoid}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:12px;color:#555;margin-top:2px}
.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.pair{display:grid;grid-template-columns:3fr 2fr;gap:24px;align-items:start}.pair h2{margin-top:12px}
.legend span{display:inline-block;padding:0 6px;margin-right:8px;color:#fff;font-size:12px}
pre{background:#f7f7f7;border:1px solid #ddd;padding:8px;font-size:12px;overflow:auto;max-height:480px}
@media print{@page{size:A4;margin:12mm}main{max-width:none;padding:0}h2{break-after:avoid}
.grid{grid-template-columns:repeat(2,1fr)}.pair{display:block}pre{max-height:none;overflow:visible;white-space:pre-wrap}}
"""


def data_uri(path):
    """The file at `path` as a base64 `data:` URI (PNG or JPEG)."""
    mime = _MIME.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
    with open(path, "rb") as f:
        return f"data:{mime};base64," + base64.b64encode(f.read()).decode("ascii")


def _esc(value):
    return html.escape(str(value))


def _num(value, digits=3):
    return "&ndash;" if value is None or value < 0 else f"{value:.{digits}f}"


def _figure(path, caption, alt):
    if not path or not os.path.isfile(path):
        return ""
    return (f'<figure><img src="{data_uri(path)}" alt="{_esc(alt)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _metrics_section(metrics):
    coco = metrics["coco"]
    head = "".join(f"<th>{name}</th>" for name in STAT_NAMES) + "<th>VOC mAP50</th>"
    row = "".join(f"<td>{_num(coco[name])}</td>" for name in STAT_NAMES)
    row += f"<td>{_num(metrics['voc']['mAP50'])}</td>"
    table = f"<table><tr>{head}</tr><tr>{row}</tr></table>"
    if "segm" in metrics:  # Mask R-CNN: the mask metrics under the box ones
        segm_row = "".join(f"<td>{_num(metrics['segm'][name])}</td>" for name in STAT_NAMES)
        table = (f"<table><tr><th></th>{head}</tr><tr><th>box</th>{row}</tr>"
                 f"<tr><th>mask</th>{segm_row}<td></td></tr></table>")
    return ("<h2>Metrics</h2><p class=sub>COCO box metrics (pycocotools; &ndash; where an area range has "
            "no ground truth), mask metrics (iouType segm) for instance masks, and VOC mAP at IoU 0.5.</p>"
            + table)


def _per_class_section(metrics, errors):
    masks = "per_class_segm" in metrics
    head = ("<tr><th>class</th><th>AP</th><th>AP50</th>" + ("<th>mask AP</th><th>mask AP50</th>" if masks else "")
            + "<th>VOC AP50</th><th>gt</th><th>dets</th>"
            + "".join(f"<th>d{k}</th>" for k in MAIN_ERRORS) + "</tr>")
    rows = []
    for name, ap in metrics["per_class"].items():
        voc = metrics["voc"]["per_class"].get(name, {}).get("AP")
        tide = errors["per_class"].get(name, {}).get("dAP", {})
        mask_cells = (f"<td>{_num(metrics['per_class_segm'][name])}</td>"
                      f"<td>{_num(metrics['per_class_segm_AP50'][name])}</td>") if masks else ""
        rows.append(f"<tr><td>{_esc(name)}</td><td>{_num(ap)}</td><td>{_num(metrics['per_class_AP50'][name])}</td>"
                    f"{mask_cells}<td>{_num(voc)}</td><td>{metrics['gt_count'][name]}</td>"
                    f"<td>{metrics['det_count'][name]}</td>"
                    + "".join(f"<td>{_num(tide.get(k))}</td>" for k in MAIN_ERRORS) + "</tr>")
    return ("<h2>Per class</h2><p class=sub>AP at IoU .50:.95, AP50, and the AP50 each error type costs the "
            f"class (dCls ... dMiss, TIDE).</p><table>{head}{''.join(rows)}</table>")


def _errors_section(errors, figure_path):
    rows = "".join(f"<tr><td>{k}</td><td>{_num(errors['dAP'][k])}</td><td>{errors['counts'][k]}</td></tr>"
                   for k in MAIN_ERRORS)
    rows += "".join(f"<tr><td>{k}</td><td>{_num(errors[k])}</td><td></td></tr>" for k in ("FalsePos", "FalseNeg"))
    return ("<h2>Where AP is lost</h2><p class=sub>TIDE error breakdown (foreground IoU 0.5, background IoU 0.1, "
            "COCO 101-point AP): the AP50 gained by fixing every error of one type. Cls wrong class, Loc box off "
            "its object, Both wrong class and badly placed, Dupe a second detection of a found object, Bkg a "
            "detection on background, Miss an object nobody detected; FalsePos / FalseNeg: AP50 with perfect "
            f"precision / recall. AP50 as TIDE counts it: {_num(errors['AP50'])}.</p>"
            + "<div class=pair style=\"grid-template-columns:4fr 1fr\">"
            + _figure(figure_path, "dAP50 per error type (number of errors in brackets)", "error breakdown")
            + f"<table><tr><th>error</th><th>dAP50</th><th>count</th></tr>{rows}</table></div>")


def _galleries_section(galleries):
    if not galleries:
        return ("<h2>Galleries</h2><p class=sub>No galleries: give the images (--images DIR) to see the worst "
                "images per error type.</p>")
    parts = ['<h2>Galleries</h2><p class="sub legend"><span style="background:#00aa00">ground truth</span>'
             '<span style="background:#ff8c00">detection (score &ge; 0.3)</span>'
             '<span style="background:#e600c8">the error</span></p>']
    for kind, entries in galleries.items():
        figures = "".join(_figure(e["path"], e["caption"], f"{kind} example") for e in entries)
        parts.append(f"<h3>{_esc(GALLERIES[kind])}</h3><div class=grid>{figures}</div>")
    return "".join(parts)


def _model_section(model):
    if not model:
        return ""
    parts = [f"<h2>Model</h2><p class=sub>{_esc(model.get('model_dir', ''))}</p>"]
    parts.append(_figure(model.get("loss_curve"), "training curves (history.csv)", "training curves"))
    if model.get("config_text"):
        parts.append(f"<h3>config.yaml</h3><pre>{_esc(model['config_text'])}</pre>")
    return "".join(parts)


def write_report(path, metrics, errors, figures, galleries=None, model=None, source=""):
    """Write report.html at `path` and return `path`.

    metrics: the metrics.json dict; errors: the errors.json dict; figures: {"pr_curves",
    "confusion_matrix", "errors"} PNG paths; galleries: `write_galleries` result or None;
    model: {"model_dir", "config_text", "loss_curve" (PNG path or None)} for a model folder,
    or None; source: one line naming what was evaluated.
    """
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>Detection evaluation</h1><p class=sub>{_esc(source)} &middot; {metrics['num_images']} images"
            f" &middot; {stamp}</p>",
            _metrics_section(metrics), _per_class_section(metrics, errors),
            _errors_section(errors, figures.get("errors")),
            "<div class=pair><section><h2>Precision / recall</h2>"
            + _figure(figures.get("pr_curves"), "per-class PR curves", "PR curves")
            + "</section><section><h2>Confusion matrix</h2>"
            + _figure(figures.get("confusion_matrix"), "rows ground truth, columns prediction (IoU 0.5, score 0.5)",
                      "confusion matrix") + "</section></div>",
            _galleries_section(galleries), _model_section(model)]
    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>Detection evaluation</title><style>{_CSS}</style></head><body><main>"
            + "\n".join(body) + "</main></body></html>\n")
    with atomic_write(path) as f:
        f.write(page)
    return path
