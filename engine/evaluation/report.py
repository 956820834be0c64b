"""An eval run's records -> metrics (overall, per group, test-time scaling, threshold sweep) and the
report files: report.md, report.json, scaling.png, groups.png. Works from the records alone, so a
finished (or interrupted) run can be re-reported under another convention at no model cost."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from ..fileio import write_atomically, write_json_atomically, write_text_atomically
from ..metrics import IoUAccumulator, get_convention, pick_counts

GROUP_KEYS = ("reasoning_type", "query_type", "query_source")  # query_source: labelme / coco folders


def failure_union(record: dict, convention) -> int:
    """The ground-truth area a failed item adds to cIoU's union (0 when its ground truth was unreadable)."""
    counts = record.get("failure_counts")
    return pick_counts(counts, convention)[1] if counts else 0


def _scores(counts_list, convention, groups_list=None, failures=()) -> dict:
    """Metrics of scored items (their counts) plus failed items (their records: IoU 0, see failure_union)."""
    acc = IoUAccumulator(convention)
    for i, counts in enumerate(counts_list):
        acc.add_counts(*pick_counts(counts, convention), groups_list[i] if groups_list else None)
    for record in failures:
        acc.add_failure(failure_union(record, convention), record.get("groups") if groups_list else None)
    return acc.result()


def _mean_over_blocks(records, size: str, convention, failures=()) -> dict:
    """Metrics of N'-sample runs: each block of every item is one replicate run; replicates are averaged."""
    blocks = min(len(r["scaling"][size]) for r in records)
    runs = [_scores([r["scaling"][size][b] for r in records], convention, failures=failures) for b in range(blocks)]
    return {"giou": statistics.fmean(x["giou"] for x in runs), "ciou": statistics.fmean(x["ciou"] for x in runs),
            "replicates": blocks}


def summarize(records: list[dict], settings: dict, convention: str = "lisa", *, count_failures: bool = True) -> dict:
    """The report's numbers. Items that failed (unreadable data under --on-error skip, or a model error)
    count as IoU 0 unless `count_failures` is False; either way the report says how many and which."""
    conv = get_convention(convention)
    scored = [r for r in records if "counts" in r]
    failed = [r for r in records if "error" in r]
    errors = [{"id": r["id"], "error": r["error"], "stage": r.get("stage", "model")} for r in failed]
    failures = failed if count_failures else []
    main = _scores([r["counts"] for r in scored], conv, [r.get("groups", {}) for r in scored], failures)
    n = settings["n"]
    summary = {
        "data": settings["data"], "bundle": settings.get("bundle"), "n": n, "convention": conv.name,
        "items": len(scored), "errors": errors, "failures_counted": bool(count_failures),
        "giou": main["giou"], "ciou": main["ciou"], "scored": main["n"],
        "groups": {k: v for k, v in main["groups"].items() if k in GROUP_KEYS},
        "sample_status": dict(Counter(s["status"] for r in scored for s in r.get("samples", []))),
        "no_object_answers": sum(bool(r.get("no_object")) for r in scored),
    }
    if scored and n > 1:
        sizes = sorted({int(k) for r in scored for k in r.get("scaling", {})})
        summary["scaling"] = [{"n": s, **_mean_over_blocks(scored, str(s), conv, failures)} for s in sizes]
        summary["scaling"].append({"n": n, "giou": main["giou"], "ciou": main["ciou"], "replicates": 1})
    if scored and settings.get("sweep") and all("sweep" in r for r in scored):
        rows = []
        for i, config in enumerate(settings["sweep"]):
            s = _scores([r["sweep"][i] for r in scored], conv, failures=failures)
            rows.append({**config, "giou": s["giou"], "ciou": s["ciou"]})
        summary["sweep"] = {"best_giou": max(rows, key=lambda r: r["giou"]), "best_ciou": max(rows, key=lambda r: r["ciou"]),
                            "configs": rows}
    totals = [r["timings"]["total_ms"] for r in scored if "timings" in r]
    if totals:
        summary["latency_ms"] = {"mean": statistics.fmean(totals), "median": statistics.median(totals),
                                 "max": max(totals)}
    return summary


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def to_markdown(summary: dict) -> str:
    lines = [f"# star eval: {summary['data']}", ""]
    bundle = summary.get("bundle") or {}
    lines.append(f"Bundle `{bundle.get('name', '?')}`, N = {summary['n']}, metric convention `{summary['convention']}`; "
                 f"{summary['items']} items scored, {len(summary['errors'])} failed; {summary['scored']} counted"
                 + (" (failed items as IoU 0)." if summary.get("failures_counted", True) and summary["errors"]
                    else " (failed items left out: --exclude-failures)." if summary["errors"] else "."))
    lines += ["", "| | gIoU | cIoU | items |", "|---|---:|---:|---:|",
              f"| overall | {_pct(summary['giou'])} | {_pct(summary['ciou'])} | {summary['scored']} |"]
    for key, values in summary["groups"].items():
        for value, s in sorted(values.items(), key=lambda kv: str(kv[0])):
            lines.append(f"| {key} = {value} | {_pct(s['giou'])} | {_pct(s['ciou'])} | {s['n']} |")
    if summary.get("scaling"):
        lines += ["", "## Test-time scaling (sub-sampled from the same completions)", "",
                  "| N | gIoU | cIoU | replicate runs averaged |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['n']} | {_pct(r['giou'])} | {_pct(r['ciou'])} | {r['replicates']} |" for r in summary["scaling"]]
    if summary.get("sweep"):
        sw = summary["sweep"]
        keys = [k for k in sw["configs"][0] if k not in ("giou", "ciou")]
        lines += ["", f"## Threshold sweep ({len(sw['configs'])} settings, same N = {summary['n']} completions)", "",
                  "| best for | " + " | ".join(keys) + " | gIoU | cIoU |", "|---" * (len(keys) + 3) + "|"]
        for label, row in (("gIoU", sw["best_giou"]), ("cIoU", sw["best_ciou"])):
            lines.append(f"| {label} | " + " | ".join(str(row[k]) for k in keys) + f" | {_pct(row['giou'])} | {_pct(row['ciou'])} |")
    if summary["sample_status"]:
        lines += ["", "Sample answers: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["sample_status"].items())) +
                  f"; final no-object answers: {summary['no_object_answers']}."]
    if summary.get("latency_ms"):
        t = summary["latency_ms"]
        lines.append(f"Latency per item: mean {t['mean']:.0f} ms, median {t['median']:.0f} ms, max {t['max']:.0f} ms.")
    for e in summary["errors"][:20]:
        lines.append(f"- error on `{e['id']}`: {e['error']}")
    return "\n".join(lines) + "\n"


def _finish(plt, fig, ax, title: str, path: Path) -> Path:
    """Label, lay out and save (atomically) one plot of percentages, then free it."""
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    write_atomically(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def _plots(summary: dict, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = {}
    if summary.get("scaling"):
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
        ns = [r["n"] for r in summary["scaling"]]
        for key in ("giou", "ciou"):
            ax.plot(ns, [100 * r[key] for r in summary["scaling"]], marker="o", label=key.replace("iou", "IoU"))
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("samples N")
        paths["scaling"] = _finish(plt, fig, ax, "test-time scaling", out_dir / "scaling.png")
    rows = [(f"{value}", s) for key in GROUP_KEYS for value, s in sorted(summary["groups"].get(key, {}).items())]
    if rows:
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.5), dpi=120)
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [100 * s["giou"] for _, s in rows], width=0.4, label="gIoU")
        ax.bar([x + 0.2 for x in xs], [100 * s["ciou"] for _, s in rows], width=0.4, label="cIoU")
        ax.set_xticks(list(xs), [name.split("/")[0] for name, _ in rows], rotation=20)
        paths["groups"] = _finish(plt, fig, ax, "per group", out_dir / "groups.png")
    return paths


def write_report(summary: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"markdown": out / "report.md", "json": out / "report.json"}
    write_text_atomically(paths["markdown"], to_markdown(summary))
    write_json_atomically(paths["json"], summary, indent=1)
    paths.update(_plots(summary, out))
    return paths
