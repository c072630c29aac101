"""Speed-table outputs: the markdown table, the CSV and the stacked bar chart."""

import csv
import os

import numpy as np

STAGES = ("proposals", "backbone", "roi_head", "postprocess")
STAGE_TITLES = {"proposals": "proposals", "backbone": "backbone", "roi_head": "RoI head", "postprocess": "postprocess"}
CSV_FIELDS = (
    "detector", "source", "status", "note",
    *(f"{s}_s" for s in STAGES), "stages_sum_s", "detect_s", "speedup_vs_rcnn",
    *(f"{s}_gflop" for s in STAGES), "detect_gflop", "detect_gflop_per_s", "flops_method", "ap", "ap50",
)


def _fmt(value, scale=1.0, digits=1):
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def format_table(rows, notes):
    """Markdown: a time table (ms per image), a FLOPs table and the notes."""
    with_ap = any(r.get("ap") is not None for r in rows)
    head = ["detector", "source", *(f"{STAGE_TITLES[s]} (ms)" for s in STAGES),
            "stages sum (ms)", "predict_step() (ms)", "speed-up vs R-CNN"] + ["AP % (AP50)"] * with_ap
    lines = ["## Time per image", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] == "unavailable":
            cells = [r["detector"], f"unavailable: {r['note']}"] + ["-"] * (len(head) - 2)
        else:
            speedup = r.get("speedup_vs_rcnn")
            cells = [r["detector"], r["source"], *(_fmt(r[f"{s}_s"], 1e3) for s in STAGES),
                     _fmt(r["stages_sum_s"], 1e3), _fmt(r["detect_s"], 1e3),
                     "- (R-CNN not measured)" if speedup is None else f"{speedup:,.1f}x"]
            cells += [f"{_fmt(r.get('ap'), 100)} ({_fmt(r.get('ap50'), 100)})"] * with_ap
        lines.append("| " + " | ".join(cells) + " |")
    head = ["detector", *(f"{STAGE_TITLES[s]} GFLOP (GFLOP/s)" for s in STAGES), "predict_step() GFLOP (GFLOP/s)",
            "counted by"]
    lines += ["", "## FLOPs per image", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            continue
        cells = [r["detector"]]
        for key in [*STAGES, "detect"]:
            gflop, seconds = r.get(f"{key}_gflop"), r.get(f"{key}_s")
            rate = None if gflop is None or not seconds else gflop / seconds
            cells.append(f"{_fmt(gflop)} ({_fmt(rate, digits=0)})")
        cells.append(r["flops_method"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_csv(rows, path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})


def write_chart(rows, path):
    """Stacked bars of stage seconds: measured rows left, paper rows right (own scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("measured", [r for r in rows if r["status"] == "ok"]),
              ("paper, K40 GPU", [r for r in rows if r["status"] == "paper"])]
    groups = [(title, group) for title, group in groups if group]
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5 * max(len(groups), 1), 4), squeeze=False)
    colors = dict(zip(STAGES, ("#4c72b0", "#dd8452", "#55a868", "#c44e52")))
    for ax, (title, group) in zip(axes[0], groups):
        names = [r["detector"] for r in group]
        bottom = np.zeros(len(group))
        for stage in STAGES:
            values = np.array([r.get(f"{stage}_s") or 0.0 for r in group])
            ax.bar(names, values, bottom=bottom, label=STAGE_TITLES[stage], color=colors[stage])
            bottom += values
        unsplit = np.array([0.0 if bottom[i] else r["detect_s"] for i, r in enumerate(group)])
        if unsplit.any():
            ax.bar(names, unsplit, bottom=bottom, label="total (no split)", color="#8c8c8c")
        for i, r in enumerate(group):
            label = "predict_step()" if r["status"] == "ok" else "total"
            ax.annotate(f"{label} {r['detect_s']:.3g} s", (i, max(bottom[i], unsplit[i])), ha="center",
                        va="bottom", fontsize=8)
        ax.margins(y=0.12)
        ax.set_title(title)
        ax.set_ylabel("seconds per image")
    legend = {}
    for ax in axes[0]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(rows, notes, out_dir):
    """speed.md, speed.csv and speed.png in out_dir; returns (markdown table, paths)."""
    table = format_table(rows, notes)
    os.makedirs(out_dir, exist_ok=True)
    paths = {key: os.path.join(out_dir, f"speed.{ext}") for key, ext in
             (("markdown", "md"), ("csv", "csv"), ("chart", "png"))}
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write("# Speed of the R-CNN family\n\n" + table)
    write_csv(rows, paths["csv"])
    write_chart(rows, paths["chart"])
    return table, paths
