"""`hashae bench`: retrieval quality and speed of every method, side by side, measured on what the
product ships (its numpy encoders, its search module).

    protocol.py  the options, the split and the methods
    encoders.py  models trained as `hashae index` trains them, encoded from their saved checkpoints
    run.py       the rows: metrics of every method, the hybrid answered by index/search.py
    timing.py    the speed columns
    report.py    rows as text, Markdown and plots
"""

from hashae.index.bench.protocol import ALL_METHODS, BenchOptions, load_split
from hashae.index.bench.report import COLUMNS, format_row, header, markdown_table, plot
from hashae.index.bench.run import BenchResult, run_bench

__all__ = ["ALL_METHODS", "COLUMNS", "BenchOptions", "BenchResult", "format_row", "header", "load_split", "markdown_table", "plot", "run_bench"]
