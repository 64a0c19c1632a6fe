"""One self-contained HTML report of a results dataset: matplotlib figures
inlined as SVG and the summary tables, no network needed to view it."""

import html
import io
import json
import os
import re
from pathlib import Path

import matplotlib
import polars as pl

from harness import metrics
from harness.analysis.summary import GROUP, pivot
from harness.calibration import store as cal_store
from harness.errors import HarnessError
from harness.sweep import store

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# text as text, and ids from a fixed salt: the same results give the same file
plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "iommu-harness", "figure.dpi": 96,
                     "font.size": 9})
FIGURES = ("miss-rate-vs-iotlb-size", "inv-cost-by-flush", "pt-bytes-by-gfp", "exposure-vs-cost")


def _svg(fig):
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)


def _runs(out, required=True):
    """Successful run rows, or None when there are none and none are required
    (a `reproduce` directory holds calibration rows and a sweep per case)."""
    if not required and not (Path(out) / store.MANIFEST).exists():
        return None
    df = store.scan(out).filter(pl.col("status") == "ok").collect()
    if not len(df):
        raise HarnessError(f"{out}: no successful runs to report")
    entries = [json.loads(p).get("iotlb.entries") if p else None for p in df["params"]]
    return df.with_columns(pl.Series("iotlb_entries", entries, dtype=pl.Int64),
                           (pl.col("flush") + "/" + pl.col("gfp")).alias("mode"))


def miss_rate_vs_size(df):
    """IOTLB miss rate against IOTLB entries, a line per model, a panel per trace."""
    d = df.filter(pl.col("iotlb_entries").is_not_null())
    traces = sorted(d["trace"].unique())
    fig, axes = plt.subplots(1, max(1, len(traces)), figsize=(4.2 * max(1, len(traces)), 3.2), squeeze=False)
    for ax, trace in zip(axes[0], traces):
        t = d.filter(pl.col("trace") == trace).group_by("model", "iotlb_entries").agg(
            pl.col("iotlb_miss_rate").mean()).sort("iotlb_entries")
        for model in sorted(t["model"].unique()):
            m = t.filter(pl.col("model") == model)
            ax.plot(m["iotlb_entries"], m["iotlb_miss_rate"], marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set(title=trace, xlabel="IOTLB entries", ylabel="miss rate", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return fig


def _bars(ax, d, group, value, title, ylabel):
    models = sorted(d["model"].unique())
    keys = sorted(d[group].unique())
    width = 0.8 / max(1, len(keys))
    for i, k in enumerate(keys):
        vals = [d.filter((pl.col("model") == m) & (pl.col(group) == k))[value].mean() or 0 for m in models]
        ax.bar([x + i * width for x in range(len(models))], vals, width, label=f"{group} {k}")
    ax.set_xticks([x + width * (len(keys) - 1) / 2 for x in range(len(models))], models, rotation=30,
                  ha="right")
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def inv_cost_by_flush(df):
    """Modelled invalidation cost per MiB mapped, by flush mode (mean over traces)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    _bars(ax, df, "effective_flush", "inv_cost_ns_per_mib", "invalidation cost per MiB mapped",
          "ns / MiB")
    ax.set_yscale("symlog")
    return fig


def pt_bytes_by_gfp(df):
    """Peak page-table bytes and bytes charged to the memory cgroup, by gfp policy."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    _bars(axes[0], df, "gfp", "pt_bytes_peak", "peak page-table bytes", "bytes")
    _bars(axes[1], df, "gfp", "memcg_charged_peak_bytes", "peak bytes charged to the memcg", "bytes")
    return fig


def exposure_vs_cost(df):
    """The strict/lazy trade-off: stale-IOTLB exposure against invalidation cost, per run."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for mode in sorted(df["effective_flush"].unique()):
        m = df.filter(pl.col("effective_flush") == mode)
        ax.scatter(m["inv_cost_ns_per_mib"] + 1, m["stale_page_ns"] + 1, label=mode, alpha=0.7, s=18)
    ax.set(xscale="log", yscale="log", xlabel="invalidation cost, ns per MiB mapped (+1)",
           ylabel="stale page-ns: unmapped pages x time until invalidated (+1)",
           title="exposure against invalidation cost")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def _table(df):
    cells = lambda v: "" if v is None else (f"{v:,.4g}" if isinstance(v, float) else html.escape(str(v)))  # noqa: E731
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{cells(v)}</td>" for v in r) + "</tr>" for r in df.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def calibration_agreement(cal):
    """Modelled over published ratio for every calibration case, with the tolerance band."""
    labels = [f"{c}: {r}" for c, r in zip(cal["case"], cal["ratio"])]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    tol = float(cal["tolerance"].max())
    ax.axvspan(1 - tol, 1 + tol, color="#2a2", alpha=0.12, label=f"within ±{tol:.0%}")
    colors = ["#185" if w else "#c33" for w in cal["within"]]
    y, x = list(range(len(labels))), cal["agreement"].to_list()
    ax.hlines(y, 1, x, color=colors, lw=1.5)
    ax.scatter(x, y, color=colors, zorder=3)
    ax.axvline(1, color="#333", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="modelled ratio / published ratio", title="calibration against published results",
           xlim=(min(0.5, float(cal["agreement"].min()) * 0.95), max(1.5, float(cal["agreement"].max()) * 1.05)))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _calibration_section(cal):
    table = cal.select("case", "ratio", "published_text", "modelled", "agreement", "within", "reduced")
    sources = "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(t)}. {html.escape(src)}</li>"
                      for c, t, src in cal.select("case", "title", "source").unique("case", maintain_order=True).iter_rows())
    return (f'<h2 id="calibration">Calibration against published results</h2>'
            f"<p>{cal['within'].sum()} of {len(cal)} ratios within tolerance "
            "(<code>iommu-harness reproduce all</code>).</p>"
            f'<figure id="calibration-agreement">{_svg(calibration_agreement(cal))}<figcaption>'
            f"{html.escape(calibration_agreement.__doc__)}</figcaption></figure>"
            f"{_table(table)}<ul>{sources}</ul>")


def render(out):
    cal = cal_store.read(out)
    df = _runs(out, required=cal is None)
    cal_html = _calibration_section(cal) if cal is not None else ""
    if df is None:
        return _page(out, f"<p>Calibration cases from <code>{html.escape(str(out))}</code>.</p>", cal_html)
    figs = dict(zip(FIGURES, (miss_rate_vs_size, inv_cost_by_flush, pt_bytes_by_gfp, exposure_vs_cost)))
    units = {m.name: m.unit for m in metrics.ALL}
    parts = []
    for name, fn in figs.items():
        parts.append(f'<figure id="{name}">{_svg(fn(df))}<figcaption>{html.escape(fn.__doc__)}'
                     "</figcaption></figure>")
    summary = pivot(out)
    tables = []
    for key, part in summary.group_by(list(GROUP), maintain_order=True):
        title = " · ".join(k for k in key if k and k != "{}")
        part = part.drop(list(GROUP)).with_columns(
            (pl.col("metric") + " (" + pl.col("metric").replace_strict(units, default="") + ")").alias("metric"))
        tables.append(f"<h3>{html.escape(title)}</h3>{_table(part)}")
    failed = store.scan(out).filter(pl.col("status") != "ok").select("run_key", "model", "flush", "gfp",
                                                                      "error").collect()
    fail_html = f"<h2>Failed runs</h2>{_table(failed)}" if len(failed) else ""
    intro = f"""<p>{len(df)} successful runs from <code>{html.escape(str(out))}</code>: {df['trace'].n_unique()} traces,
{df['model'].n_unique()} models, flush {', '.join(sorted(df['flush'].unique()))},
gfp {', '.join(sorted(df['gfp'].unique()))}.</p>
{''.join(parts)}
<h2>Summary</h2>
{''.join(tables)}
{fail_html}"""
    return _page(out, intro, cal_html)


def _page(out, body, cal_html):
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>iommu-harness report: {html.escape(str(out))}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
figure {{ margin: 1.5em 0; }} figcaption {{ color: #555; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; font-size: 12px; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h1>iommu-harness report</h1>
{body}
{cal_html}
</body></html>
"""


def write(out, path):
    text = render(out)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
