"""What every table of the report is made of: a Table of per-seed values, metric short
names and the paper's published numbers. The report (report.py) and the campaign's sections
(campaign_report.py) both build on it, so neither imports the other back.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAIN_METRICS = ("recall@50", "recall@100", "ndcg@50", "ndcg@100")
RETRIEVED_METRICS = ("ndcg_retrieved@50", "ndcg_retrieved@100")
SHORT = {"recall": "R", "ndcg": "N", "ndcg_retrieved": "N*", "recall_micro": "Rµ"}
# the paper's row order first; anything else alphabetically after
ORDER = ("proposed", "bgch", "hashgnn", "hashrec", "ccsr", "dcf", "lsh", "mostpop", "lightgcn")


def short(metric: str) -> str:
    name, k = metric.split("@")
    return f"{SHORT.get(name, name)}@{k}"


@dataclass
class Cell:
    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan


@dataclass
class Table:
    datasets: list[str]
    metrics: tuple[str, ...]
    rows: dict[str, dict[tuple[str, str], Cell]]  # method -> (dataset, metric) -> Cell
    hashing: dict[str, bool]
    published: dict[str, dict[tuple[str, str], float]]
    records: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (method, dataset) -> seeds' records
    # (dataset, metric) -> (best hashing method, {other method: Comparison}); filled by add_significance
    tests: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)


def load_published() -> tuple[str, dict]:
    data = tomllib.loads((Path(__file__).parent / "published.toml").read_text())
    return data.pop("source"), data
