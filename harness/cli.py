"""iommu-harness command line: parse, call, render. Bad input: one red line, exit 2."""

import functools
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from harness import metrics, models
from harness.vendors import counter_view
from harness.errors import HarnessError
from harness.trace.synth.common import Param

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Trace-driven IOMMU performance harness.")
trace_app = typer.Typer(no_args_is_help=True, help="Create and inspect DMA traces.")
synth_app = typer.Typer(no_args_is_help=True, help="Generate synthetic traces.")
models_app = typer.Typer(no_args_is_help=True, help="Hardware model specs.")
app.add_typer(trace_app, name="trace")
trace_app.add_typer(synth_app, name="synth")
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)
_WHOLE = dict(soft_wrap=True, highlight=False, markup=False)  # paths printed unbroken, as they are


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
    return wrapper


def _synth_command(w):
    """A `trace synth KIND` command whose options are the workload's parameters."""
    import inspect

    def command(**kwargs):
        from harness.trace import synth
        output = kwargs.pop("output")
        n = synth.generate(w.kind, output, **kwargs)
        out.print(f"wrote {n:,} events to {output}", **_WHOLE)

    params = [inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                                default=typer.Option(..., "-o", "--output", help="Trace file to write (.arrow)."))]
    for p in (*w.params, Param("seed", 1, "Random seed.")):
        flag = "--" + p.name.replace("_", "-")
        decl = (f"{flag}/--no-{flag[2:]}",) if isinstance(p.default, bool) else (flag,)
        params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY,
                                        annotation=type(p.default),
                                        default=typer.Option(p.default, *decl, help=p.help)))
    command.__signature__ = inspect.Signature(params)
    command.__doc__ = inspect.cleandoc(w.fn.__doc__ or w.doc)
    synth_app.command(w.kind, short_help=w.doc)(user_errors(command))


def _register_synth():
    from harness.trace.synth import KINDS
    for w in KINDS.values():
        _synth_command(w)


import_app = typer.Typer(no_args_is_help=True, help="Convert recorded traces to trace format v1.")
trace_app.add_typer(import_app, name="import")


def _import_report(report, output):
    for what, counts in (("converted", report["converted"]), ("ignored", report["ignored"])):
        if counts:
            err.print(f"{what}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), highlight=False,
                      soft_wrap=True)
    for kind, p in report["problems"].items():
        more = ", ..." if p["count"] > len(p["lines"]) else ""
        err.print(f"[yellow]warning:[/yellow] {p['count']:,} x {kind} (lines "
                  f"{', '.join(map(str, p['lines']))}{more})", highlight=False, soft_wrap=True)
    out.print(f"wrote {report['rows']:,} events to {output}", **_WHOLE)


@import_app.command("ftrace")
@user_errors
def import_ftrace(
    source: Path = typer.Argument(..., help="trace-cmd report output or the tracefs trace file."),
    output: Path = typer.Option(..., "-o", "--output", help="Trace file to write (.arrow)."),
    api: str = typer.Option("auto", help="auto | dma | iommu | both: which map events to use "
                                         "(dma-iommu's maps also fire iommu:map)."),
    access: str = typer.Option("page", help="Access synthesis after each map: none | page | line."),
    repeat: int = typer.Option(1, help="Repeat the synthesised accesses n times."),
    device: str = typer.Option("0x0", help="Requester id for iommu:map/unmap (they name no device)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first malformed or unknown line."),
):
    """iommu: and dma: tracepoints to DMA-API and IOMMU-API events."""
    from harness.trace.importers import ftrace
    from harness.trace.synth.common import device_id
    _import_report(ftrace.convert(str(source), str(output), api=api, access=access, repeat=repeat,
                                  strict=strict, device=device_id(device)), output)


@import_app.command("qemu")
@user_errors
def import_qemu(
    source: Path = typer.Argument(..., help="QEMU -trace log (vtd_* / smmu_* events)."),
    output: Path = typer.Option(..., "-o", "--output", help="Trace file to write (.arrow)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first malformed or unknown line."),
):
    """QEMU vIOMMU IOTLB lookups and invalidations, keeping QEMU's hit/miss."""
    from harness.trace.importers import qemu
    _import_report(qemu.convert(str(source), str(output), strict=strict), output)


@trace_app.command("info")
@user_errors
def trace_info(path: Path, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Rows, ops, devices, time span, mapped footprint and sizes of a trace."""
    from harness.trace.info import summarize
    s = summarize(path)
    if as_json:
        out.print_json(json.dumps(s))
        return
    t = Table(title=str(path), show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("rows", f"{s['rows']:,} in {s['batches']} batches")
    t.add_row("ops", ", ".join(f"{k} {v:,}" for k, v in s["ops"].items()))
    t.add_row("devices", ", ".join(s["devices"]))
    t.add_row("cpus", f"{s['cpus_used']} used of num_cpus {s['num_cpus']}")
    t.add_row("time span", f"{s['time_span_ns'] / 1e6:,.3f} ms ({s['event_rate_per_s']:,.0f} events/s)")
    t.add_row("mapped", f"{s['bytes_mapped']:,} bytes over the trace")
    t.add_row("footprint", f"peak {s['peak_mapped_bytes']:,} bytes mapped at once; "
              f"{s['live_mapped_bytes_at_end']:,} at the end")
    t.add_row("accessed", f"{s['bytes_accessed']:,} bytes")
    t.add_row("map sizes", ", ".join(f"{k}: {v:,}" for k, v in s["map_sizes"].items()))
    if s["scatterlists"]:
        t.add_row("scatterlists", f"{s['scatterlists']:,} of the maps")
    t.add_row("pages accessed", f"{s['pages_accessed']:,} distinct pages (mapping pages or IOVA pages)")
    pct = lambda d, unit: ", ".join(f"{k} <= {d[k]:,} {unit}" for k in ("p50", "p90", "p99") if k in d)  # noqa: E731
    life = s["map_lifetime_ns"]
    t.add_row("map lifetime", f"{life['unmapped']:,} unmapped; {pct(life, 'ns')}")
    reuse = s["page_reuse_accesses"]
    t.add_row("page reuse", f"{reuse['reuses']:,} reuses, {reuse['first_uses']:,} first uses; "
              f"{pct(reuse, 'accesses apart')}")
    if "observed" in s:
        o = s["observed"]
        t.add_row("observed", f"{o['hits']:,} hits, {o['misses']:,} misses (recorded by the source)")
    for dev, v in s["per_device"].items():
        t.add_row(f"device {dev}", f"{v['maps']:,} maps, {v['unmaps']:,} unmaps, {v['accesses']:,} "
                  f"accesses; {v['bytes_mapped']:,} bytes mapped, {v['bytes_accessed']:,} accessed")
    t.add_row("provenance", json.dumps(s["provenance"], sort_keys=True))
    out.print(t)


@models_app.command("list")
@user_errors
def models_list(models_dir: Optional[Path] = typer.Option(None, help="Extra directory of model TOML files.")):
    """Models available by name."""
    t = Table("name", "family", "description", "file")
    for name, path in models.available(models_dir).items():
        spec = models.load(path, models_dir)
        where = "built-in" if path.parent == models.BUILTIN_DIR else str(path)
        t.add_row(name, spec.family, spec.description, where)
    out.print(t)


@models_app.command("show")
@user_errors
def models_show(name: str, models_dir: Optional[Path] = typer.Option(None)):
    """The resolved spec of a model with the source of every value."""
    spec = models.resolve(name, models_dir)
    out.print(f"[bold]{spec.name}[/bold] (family {spec.family}) from {spec.path}\n{spec.description}")
    t = Table("parameter", "value", "source")
    for k, v in spec.params.items():
        t.add_row(k, json.dumps(v), spec.sources.get(k, ""))
    out.print(t)


def _metrics_table(values, title):
    t = Table("metric", "value", "unit", title=title)
    for m in metrics.ALL:
        v = values[m.name]
        t.add_row(m.name, f"{v:,.4f}" if isinstance(v, float) else f"{v:,}", m.unit)
    return t


def _view_table(tool, counts):
    t = Table("event", "count", title=f"as {tool} counts it")
    for name, n in counts.items():
        t.add_row(name, f"{n:,}")
    return t


@app.command()
@user_errors
def run(
    trace: Path = typer.Argument(..., help="Trace file (.arrow, format v1)."),
    model: str = typer.Option("intel-vtd-legacy", help="Model name or TOML path."),
    flush: str = typer.Option("strict", help="strict | lazy | lazy-single | passthrough"),
    gfp: str = typer.Option("atomic", help="atomic | kernel | kernel-account"),
    set_: List[str] = typer.Option([], "--set", help="Override a model parameter: key=value."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write a one-row parquet here."),
    models_dir: Optional[Path] = typer.Option(None, help="Extra directory of model TOML files."),
    sizes: Optional[str] = typer.Option(None, "--iotlb-entries", help="IOTLB sizes to evaluate in "
                                        "one pass, e.g. 16,64,256 (iotlb.ways=0: fully associative)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
):
    """Simulate one trace with one model, flush mode and gfp policy."""
    from harness import results
    from harness.core.simulator import Simulator
    from harness.trace.reader import TraceReader

    from harness.core import kernel_cached

    spec = models.resolve(model, models_dir).with_overrides(set_)
    if not quiet and not kernel_cached():
        err.print("compiling the simulation kernel (first run only, several minutes)...")
    if sizes:
        return _run_sizes(trace, spec, model, flush, gfp, set_, sizes, out_dir, quiet)
    with TraceReader(trace) as reader:
        sim = Simulator(spec, flush, gfp, reader.num_cpus)
        show = not quiet and err.is_terminal
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:,.0f}/{task.total:,.0f} events"),
                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                      console=err, transient=True, disable=not show) as bar:
            task = bar.add_task(f"{model} {flush} {gfp}", total=reader.num_rows, rate="")
            t0 = time.perf_counter()

            def progress(done):
                dt = time.perf_counter() - t0
                bar.update(task, completed=done, rate=f"{done / dt / 1e6:.1f} M events/s" if dt else "")

            values = sim.run(reader, progress)
        cfg = results.config(reader.path, reader.sha256() if out_dir else None,
                             reader.provenance, spec, set_, flush, sim.effective_flush, gfp)
    if sim.flush_reason and not quiet:
        err.print(f"flush {flush} runs as {sim.effective_flush}: {sim.flush_reason}")
    view = counter_view(spec, values)
    if out_dir:
        path = results.write_parquet(out_dir, results.row(cfg, values, view))
        if not quiet:
            err.print(f"wrote {path}", **_WHOLE)
    if not quiet:
        out.print(_metrics_table(values, f"{trace.name}: {model}, flush {flush}, gfp {gfp}"))
        if view:
            out.print(_view_table(*view))


def _run_sizes(trace, spec, model, flush, gfp, set_, sizes, out_dir, quiet):
    """`run --iotlb-entries`: one pass over the trace for every IOTLB size."""
    from harness import results
    from harness.core import state
    from harness.core.simulator import build_params, run_sizes
    from harness.trace.reader import TraceReader
    try:
        entries = [int(e) for e in sizes.split(",")]
    except ValueError:
        raise HarnessError(f"--iotlb-entries {sizes}: expected comma-separated integers") from None
    overrides = [[*set_, f"iotlb.entries={e}"] for e in entries]
    specs = [spec.with_overrides([f"iotlb.entries={e}"]) for e in entries]
    with TraceReader(trace) as reader:
        t0 = time.perf_counter()
        values, one_pass = run_sizes(specs, flush, gfp, reader)
        dt = time.perf_counter() - t0
        effective = build_params(spec, flush, gfp, reader.num_cpus).flush
        rows = [results.row(results.config(reader.path, reader.sha256() if out_dir else None,
                                           reader.provenance, sp, o, flush, effective, gfp),
                            v, counter_view(sp, v)) for sp, o, v in zip(specs, overrides, values)]
    if out_dir:
        for row in rows:
            path = results.write_parquet(out_dir, row)
            if not quiet:
                err.print(f"wrote {path}", **_WHOLE)
    if quiet:
        return
    passes = -(-len(entries) // state.GRID_MAX)
    how = (("one pass" if passes == 1 else f"{passes} passes of up to {state.GRID_MAX} sizes") if one_pass
           else "one run per size where the sizes diverged (a stale entry hit in some)")
    err.print(f"{len(entries)} sizes in {dt:.2f} s, {how}")
    t = Table("iotlb.entries", "miss rate", "misses", "stale hits", "walk reads", "faults",
              title=f"{trace.name}: {model}, flush {flush}, gfp {gfp}")
    for e, v in zip(entries, values):
        t.add_row(f"{e:,}", f"{v['iotlb_miss_rate']:.4f}", f"{v['iotlb_misses']:,}", f"{v['stale_hits']:,}",
                  f"{v['walk_reads']:,}", f"{v['faults']:,}")
    out.print(t)


class _SweepProgress:
    """Rich progress bar of a sweep: done/total, failures, ETA."""

    def __init__(self, bar, label):
        self.bar, self.label, self.failures, self.task = bar, label, 0, None

    def start(self, total, done):
        self.task = self.bar.add_task(self.label, total=total, completed=done, failures="")

    def advance(self, status):
        self.failures += status != "ok"
        self.bar.update(self.task, advance=1,
                        failures=f"[red]{self.failures} failed[/red]" if self.failures else "")


@app.command()
@user_errors
def sweep(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="Sweep spec (TOML)."),
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="Results directory "
                                           "(default results/<spec name>)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Parallel runs (default: cores)."),
    executor: str = typer.Option("local", help="local | dask"),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address (tcp://host:port)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Run every trace x model x flush x gfp x grid point of a spec; resumes where it stopped."""
    from harness.sweep import runner
    from harness.sweep import spec as sweep_spec
    spec = sweep_spec.load(spec_path)
    out_dir = out_dir or Path("results") / spec.name
    if jobs is not None and jobs < 1:
        raise HarnessError(f"--jobs {jobs}: expected >= 1")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), TextColumn("{task.fields[failures]}"), console=err,
                  disable=quiet or not err.is_terminal) as bar:
        manifest = runner.run(spec, out_dir, jobs=jobs, executor=executor, scheduler=scheduler,
                              progress=_SweepProgress(bar, f"sweep {spec.name}"))
    import polars as pl
    from harness.sweep import store
    failed = store.scan(out_dir).filter(pl.col("status") != "ok").select("run_key", "error").collect()
    out.print(f"{len(manifest['runs'])} runs in {out_dir} ({len(failed)} failed)", **_WHOLE)
    for key, error in failed.iter_rows():
        err.print(f"[yellow]failed:[/yellow] {key}: {error}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def summary(
    results_dir: Path = typer.Argument(..., metavar="RESULTS", help="Results directory of a sweep."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | markdown"),
):
    """Key metrics per trace and model, pivoted by flush mode x gfp policy, with ratios to strict."""
    from harness.analysis.summary import GROUP, pivot
    df = pivot(results_dir)
    if fmt != "table":
        return _print_frame(df, fmt, "")
    for key, part in df.group_by(list(GROUP), maintain_order=True):
        title = " · ".join(k for k in key if k and k != "{}")
        _print_frame(part.drop(list(GROUP)), "table", title)


def _print_frame(df, fmt, title):
    import polars as pl
    if fmt == "csv":
        out.print(df.write_csv(), end="", soft_wrap=True, highlight=False, markup=False)
    elif fmt == "json":
        out.print(df.write_json(), soft_wrap=True, highlight=False, markup=False)
    elif fmt == "markdown":
        with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True,
                       tbl_hide_dataframe_shape=True, tbl_rows=-1, tbl_cols=-1, tbl_width_chars=10_000,
                       fmt_str_lengths=200):
            out.print(str(df), soft_wrap=True, highlight=False, markup=False)
    elif fmt == "table":
        t = Table(title=title, title_justify="left")
        cells = [[f"{v:,.4g}" if isinstance(v, float) else ("" if v is None else str(v)) for v in r]
                 for r in df.iter_rows()]
        widths = [max([len(c), 10] + [len(r[i]) for r in cells]) for i, c in enumerate(df.columns)]
        for c, w in zip(df.columns, widths):
            t.add_column(c, no_wrap=True, min_width=w,
                         justify="left" if df[c].dtype == pl.Utf8 else "right")
        for r in cells:
            t.add_row(*r)
        wide = Console(file=out.file, width=max(out.width, sum(widths) + 3 * len(widths) + 30),
                       force_terminal=out.is_terminal)
        wide.print(t)
    else:
        raise HarnessError(f"--format {fmt}: expected table, csv, json or markdown")


@app.command()
@user_errors
def report(
    results_dir: Path = typer.Argument(..., metavar="RESULTS", help="Results directory of a sweep."),
    output: Path = typer.Option(..., "-o", "--output", help="HTML file to write."),
):
    """One self-contained HTML file: plots and summary tables."""
    from harness.analysis import report as html_report
    out.print(f"wrote {html_report.write(results_dir, output)}", **_WHOLE)


@app.command()
@user_errors
def compare(
    a: Path = typer.Argument(..., help="Results directory A (baseline)."),
    b: Path = typer.Argument(..., help="Results directory B."),
    rtol: float = typer.Option(0.0, help="Relative tolerance per metric."),
):
    """Metric-by-metric differences between two result sets; exit 1 when any differs."""
    from harness.analysis.compare import compare as diff_sets
    diff, only, matched = diff_sets(a, b, rtol)
    import polars as pl
    short = pl.col("trace_sha256").str.slice(0, 12)
    diff, only = diff.with_columns(short), only.with_columns(short)
    if len(diff):
        _print_frame(diff, "table", f"{len(diff)} metric values differ beyond rtol {rtol}")
    if len(only):
        _print_frame(only, "table", f"{len(only)} runs in only one of the sets")
    out.print(f"{matched} runs matched; {len(diff)} metric values differ beyond rtol {rtol}; "
              f"{len(only)} runs unmatched")
    if len(diff) or len(only):
        raise typer.Exit(1)


@app.command()
@user_errors
def reproduce(
    name: str = typer.Argument(..., help="A calibration case (models/cases/NAME.toml), a case file, or all."),
    out_dir: Path = typer.Option(Path("results/reproduce"), "-o", "--out",
                                 help="Results directory: a sweep per case plus calibration.parquet."),
    reduced: bool = typer.Option(False, "--reduced", help="Traces a tenth of the size: quick, and "
                                 "never exits 1 (tolerance is judged at full size)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Parallel runs (default: cores)."),
):
    """Published IOMMU results beside the modelled ones; exit 1 when a ratio misses its tolerance."""
    import polars as pl
    from harness.calibration import cases, store as cal_store
    if jobs is not None and jobs < 1:
        raise HarnessError(f"--jobs {jobs}: expected >= 1")
    todo = [cases.load(n) for n in (cases.available() if name == "all" else [name])]  # all checked first
    misses = 0
    for case in todo:
        err.print(f"{case.name}: running {len(case.runs)} runs...")
        runs, ratios = cases.reproduce(case, out_dir, reduced=reduced, jobs=jobs)
        cal_store.write(out_dir, case, ratios)
        _print_case(case, runs, ratios, reduced)
        misses += ratios.filter(~pl.col("within")).height
    out.print(f"{len(todo)} case(s); {misses} ratio(s) outside tolerance"
              f"{' (reduced traces: judged at full size only)' if reduced else ''}; rows in "
              f"{out_dir / 'calibration.parquet'}")
    if misses and not reduced:
        raise typer.Exit(1)


def _print_case(case, runs, ratios, reduced):
    from harness.calibration import cases
    wide = Console(file=out.file, width=max(out.width, 150), force_terminal=out.is_terminal)
    wide.rule(f"[bold]{case.name}[/bold]: {case.title}", align="left")
    wide.print(case.source, highlight=False, soft_wrap=True)
    if case.notes:
        wide.print(f"[dim]{case.notes}[/dim]", highlight=False, soft_wrap=True)
    t = Table(title_justify="left")
    for c in ("run", "model", "flush", "bound", "published", "modelled"):
        t.add_column(c, justify="left" if c in ("run", "model", "flush", "bound") else "right")
    for r, row in zip(case.runs, runs.iter_rows(named=True)):
        pub = "; ".join(f"{v:g} {cases.QUANTITIES[q]}" for q, v in r.published.items()) or "-"
        got = (f"{row['gbps']:.1f} Gbit/s ({row['line_fraction']:.0%} of line)" if case.unit != "maps"
               else f"map {row['map_us']:.2f} us, unmap {row['unmap_us']:.2f} us")
        if row["iotlb_misses_per_mib"]:
            got += f", {row['iotlb_misses_per_mib']:.0f} IOTLB misses/MiB"
        t.add_row(r.name, r.model, row["flush"], row["bound"], pub, got)
    wide.print(t)
    q = Table(title_justify="left")
    for c in ("ratio", "published", "modelled", "modelled / published", ""):
        q.add_column(c, justify="left" if c in ("ratio", "") else "right")
    for row in ratios.iter_rows(named=True):
        ok = "[green]within[/green]" if row["within"] else "[red]outside[/red]"
        q.add_row(row["ratio"], row["published_text"], f"{row['modelled']:.3f}",
                  f"{row['agreement']:.3f}", f"{ok} ±{row['tolerance']:.0%}")
    wide.print(q)
    if case.unit == "maps":
        wide.print("\n".join(cases.dma_map_benchmark_lines(case, runs, reduced)), highlight=False)


_register_synth()


def main():
    app()


if __name__ == "__main__":
    sys.exit(main())
