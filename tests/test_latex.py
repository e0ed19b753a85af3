"""The LaTeX report is paper-ready: it compiles with a real pdflatex inside a minimal two-column
article with booktabs, with no overfull box, a \\label on every table and every reference resolved;
it is plain ASCII (Unicode written as LaTeX) and has no paper rows for methods that were not run."""

import json
import re
import shutil
from pathlib import Path

import pytest

from hashbench.campaign import load_campaign
from hashbench.report import render_report
from hashbench.tables import latex_table, latex_text, text_columns
from helpers import assert_compiles_cleanly, compile_tables

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"  # read only


@pytest.fixture(scope="module")
def report_tex():
    return render_report(RESULTS, "latex", campaign=load_campaign(ROOT / "campaign.toml"))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (Debian: texlive-latex-base, "
                                                             "texlive-latex-recommended; .ci/run installs them)")
def test_every_table_compiles_in_a_two_column_paper_without_overfull_boxes(report_tex, tmp_path):
    assert_compiles_cleanly(report_tex, tmp_path)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_a_table_with_a_long_text_column_wraps_it_instead_of_running_into_the_margin(tmp_path):
    header = ["study", "trial", "parameters", "valid R@50", "ended", "chosen"]
    params = ", ".join(f"parameter_{i}=0.00{i}" for i in range(8))  # ~150 characters: wider than a page
    body = [["ccsr/gowalla", "0", params, "0.0845", "patience", "yes"], ["dcf/gowalla", "1--7", "not run", "", "", ""]]
    columns = text_columns(header, body)
    assert "p{" in columns
    tex = latex_table([latex_text(h) for h in header], [[latex_text(c) for c in row] for row in body],
                      latex_text("tuning: lr ∈ [0.001, 0.03]"), "tab:long", columns, wide=True)
    assert tex.isascii() and "?" not in tex
    assert "Overfull \\hbox" not in compile_tables(tex, tmp_path)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_a_table_longer_than_a_page_continues_on_the_next_one_and_keeps_each_study_whole(tmp_path):
    from hashbench.report import table_section

    header = ["study", "trial", "parameters", "valid R@50", "ended", "chosen"]
    params = "lr=0.00169, lambda_ae=0.01, lambda_b=0.0001, dropout=0.313"  # CCSR's, the longest
    body = [[f"method{m}/gowalla", str(t), params, "0.0954", "pruned at 120", ""] for m in range(12) for t in range(8)]
    caption = "Table 3: tuning, over the search space: " + "lr ∈ [0.001, 0.03] log; " * 40  # ~1,000 characters
    tex = table_section(caption, (header, body), "latex", "tab:tuning", {"3": "tab:tuning"})
    log = compile_tables(tex, tmp_path)
    assert "Float too large" not in log and "Overfull \\hbox" not in log and "undefined" not in log.lower()
    floats = tex.split(r"\begin{table")[1:]
    assert len(floats) > 1 and r"continued (2 of" in floats[1] and r"\ref{tab:tuning}" in floats[1]
    studies = [{line.split(" & ")[0] for line in f.splitlines() if line.startswith("method")} for f in floats]
    assert sum(len(s) for s in studies) == 12  # no study is split across two tables
    assert sum(f.count("dropout") for f in floats) == len(body)  # every row is in one of them


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_unicode_in_names_compiles(tmp_path):
    tex = "\\begin{table}[t]\\caption{" + latex_text("φ ψ β α × § ✓ µ ≈ ± – 50% a_b <1e-300 ≥ é") + "}\\end{table}"
    assert tex.isascii()
    compile_tables(tex, tmp_path)


def test_latex_is_ascii_with_a_label_per_table_and_no_manual_numbers(report_tex):
    assert report_tex.isascii()
    tables = report_tex.count("\\begin{table")
    assert tables >= 8 and report_tex.count("\\label{") == tables
    assert not re.search(r"\\caption\{Table", report_tex)
    # the text's "Table 1c" is a reference to the significance table, not a hard-coded number
    assert "Table~\\ref{tab:significance-gowalla}" in report_tex
    assert "\\underline{0.2141 $\\pm$ 0.0030 $\\approx$}" not in report_tex  # the mark sits outside the marks


def test_no_paper_rows_for_methods_that_were_not_run(tmp_path):
    lines = [l for l in (RESULTS / "runs.jsonl").read_text().splitlines()
             if l.strip() and json.loads(l).get("method") in ("proposed", "lsh")]
    (tmp_path / "runs.jsonl").write_text("\n".join(lines) + "\n")
    text = render_report(tmp_path, "latex")
    assert "proposed (paper)" in text
    assert "bgch" not in text and "hashgnn" not in text and "hashrec" not in text
