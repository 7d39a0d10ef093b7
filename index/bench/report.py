"""The bench's rows as text: one line per row, a Markdown table, and plots."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("method", "method", "{}"),
    ("bits", "bits", "{}"),
    ("bytes_per_item", "bytes", "{}"),
    ("map_at_1000", "mAP@1000", "{:.3f}"),
    ("map_all", "mAP@all", "{:.3f}"),
    ("p_at_r2", "P@r<=2", "{:.3f}"),
    ("empty_ball_share", "empty", "{:.1%}"),
    ("recall_at_10", "recall@10", "{:.3f}"),
    ("r10_at_100", "R10@100", "{:.3f}"),
    ("saturated_share", "saturated", "{:.1%}"),
    ("noise_flip_share", "flips", "{:.1%}"),
    ("bit_balance_std", "balance", "{:.3f}"),
    ("mean_bit_entropy", "entropy", "{:.3f}"),
    ("lookup_us", "lookup us", "{:.1f}"),
    ("scan_us", "scan us", "{:.1f}"),
    ("batch_us", "batch us", "{:.2f}"),
    ("train_s", "train s", "{:.1f}"),
)


def header() -> str:
    """The column titles, as format_row lays out a row."""
    return " | ".join(title for _, title, _ in COLUMNS)


def format_row(row: dict[str, Any]) -> str:
    return " | ".join(_cell(row.get(key), fmt) for key, _, fmt in COLUMNS)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (None shown as '-')."""
    lines = ["| " + header() + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + format_row(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def plot(result, path) -> None:
    """mAP@1000 against bits per binary method, beside precision-recall curves of Hamming balls."""
    from hashae.images import line_plot, side_by_side

    by_method: dict[str, tuple[list[float], list[float]]] = {}
    for row in result.rows:
        if row["p_at_r2"] is not None or row["method"] == "hybrid":
            xs, ys = by_method.setdefault(row["method"], ([], []))
            xs.append(row["bits"])
            ys.append(row["map_at_1000"])
    panels = [line_plot(by_method, title="mAP@1000 by code length", xlabel="bits", ylabel="mAP")]
    curves = {name: (c["recall"], c["precision"]) for name, c in result.pr_curves.items()}
    if curves:
        panels.append(line_plot(curves, title="Hamming-ball precision / recall", xlabel="recall", ylabel="precision"))
    side_by_side(panels).save(path)
