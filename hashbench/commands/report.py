from pathlib import Path
from typing import Annotated, Optional

import typer

from hashbench.commands.common import ResultsDir, command, console
from hashbench.errors import HashbenchError
from hashbench.files import atomic_write_text
from hashbench.splits import DEFAULT_PROTOCOL


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)  # a reader never sees half a table; a full disk is a one-line error
    console.print(f"wrote {path}")


@command("report")
def report_command(
    fmt: Annotated[str, typer.Option("--format", "-f", help="markdown, latex or csv.")] = "markdown",
    results: ResultsDir = Path("results"),
    bits: Annotated[int, typer.Option("--bits", help="Which code length to tabulate.")] = 64,
    protocol: Annotated[str, typer.Option("--protocol", help="Which split protocol to tabulate.")] = DEFAULT_PROTOCOL,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
    write: Annotated[bool, typer.Option("--write", help="Regenerate RESULTS/table1.md, table1.tex, table1.csv, "
                                                        "bits_sweep.png, learning_curves.png, "
                                                        "accuracy_efficiency.png and protocol_effects.png in one "
                                                        "go.")] = False,
    spec: Annotated[Optional[Path], typer.Option("--spec", help="The campaign spec whose tuning, sweep, ablation "
                                                 "and compute sections to add (default: ./campaign.toml).",
                                                 show_default=False)] = None,
    no_campaign: Annotated[bool, typer.Option("--no-campaign", help="Only Tables 1, 1b, 1c and 2 (their rows are "
                                              "still the campaign's, as without this flag).")] = False,
    datasets: Annotated[Optional[str], typer.Option("--datasets", "-d", help="Comma-separated datasets to tabulate "
                                                    "(default: every real dataset with results; the synthetic one "
                                                    "only when named here).", show_default=False)] = None,
):
    """Print the paper's tables from RESULTS/runs.jsonl.

    Table 1: methods × datasets × Recall/NDCG@50/100 on test, mean ± std over seeds, best
    hashing row bold and second underlined, ≈ where a row is not significantly different from
    the best (Table 1c: paired Wilcoxon over users, Holm-corrected), the paper's published
    numbers beside ours, and a generated list of large deviations with their likely causes.
    Table 2: dataset statistics. Table 1b: NDCG with the non-standard hits-based IDCG. With
    campaign.toml: Table 3 tuning, Table 4 estimator ablation, Table 5 bits sweep (and its
    plot), Table 6 compute. Writing the files also draws three figures of Table 1's rows, linked
    under it: learning curves, accuracy against storage and measured ranking time, and what the
    papers' evaluation habits do to each row beside the paper's number.
    """
    from hashbench.campaign import campaign_path, load_campaign, tune_cells
    from hashbench.records import latest_by_cell
    from hashbench.report import render_report

    from hashbench.checks import check_out_file, check_results_dir
    from hashbench.report import FORMATS

    if fmt not in FORMATS:
        raise HashbenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if write and out is not None:
        raise HashbenchError("--write writes RESULTS/table1.*; it cannot be combined with --out")
    check_results_dir(results, write=write)
    if not (results / "runs.jsonl").is_file():
        raise HashbenchError(f"no runs.jsonl in {results}: run `hashbench run --results {results}` first")
    if out is not None:
        check_out_file(out)
    names = None if datasets is None else [d.strip() for d in datasets.split(",") if d.strip()]
    campaign = None
    if spec is not None or campaign_path().exists():
        try:
            campaign = load_campaign(spec)
        except HashbenchError:
            if not no_campaign:  # without its tables, a spec that does not load only loses its row choice
                raise
            campaign = None
        # the default spec only adds its sections to results that hold some of its runs
        if campaign is not None and spec is None and not any(cell.config_hash() in latest_by_cell(results) for cell in tune_cells(campaign, results)):
            campaign = None
    if names is None and campaign is not None:
        names = list(campaign.datasets)  # the campaign spec names its datasets: that is asking for them
    if write:
        if out is not None:
            raise HashbenchError("--write writes RESULTS/table1.*; it cannot be combined with --out")
        from hashbench.figures import write_figures
        from hashbench.report import build_table

        from hashbench.report import table_selection

        table = build_table(results, bits, protocol, datasets=names, selection=table_selection(results, campaign))
        figures = write_figures(table, results)
        for figure in figures:
            console.print(f"wrote {figure.path}" if figure.path else f"{figure.title}: skipped, {figure.caption}")
        plot = results / "bits_sweep.png"
        plot.unlink(missing_ok=True)  # drawn again below when the sweep has results; never a stale one
        for suffix, f in (("md", "markdown"), ("tex", "latex"), ("csv", "csv")):
            _write(results / f"table1.{suffix}", render_report(results, f, bits, protocol, campaign,
                                                               plot if f == "markdown" else None, names,
                                                               figures if f == "markdown" else (),
                                                               campaign_tables=not no_campaign))
        if plot.exists():
            console.print(f"wrote {plot}")
        return
    text = render_report(results, fmt, bits, protocol, campaign, datasets=names, campaign_tables=not no_campaign)
    if out:
        _write(out, text)
    else:
        print(text, end="")
