"""Results: the run records of an experiment, as a sized sequence, a table or a DataFrame."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from .store.records import FAILED, SUCCESS, RunRecord

__all__ = ["Results"]


class Results(Sequence[RunRecord]):
    """Every run of an experiment (in the experiment's order) and how it ended."""

    def __init__(self, experiment_id: str, records: Sequence[RunRecord]) -> None:
        self.experiment_id = experiment_id
        self._records = list(records)

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> RunRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[RunRecord]: ...
    def __getitem__(self, index):
        return self._records[index]

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self._records)

    @property
    def succeeded(self) -> int:
        return sum(1 for record in self._records if record.status == SUCCESS)

    @property
    def failed(self) -> int:
        return sum(1 for record in self._records if record.status == FAILED)

    def failures(self) -> list[RunRecord]:
        return [record for record in self._records if record.status == FAILED]

    def __repr__(self) -> str:
        return f"Results({self.experiment_id}: {len(self)} runs, {self.succeeded} succeeded, {self.failed} failed)"

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per run: id, replicate, status, then params and metrics by name."""
        return [
            {"run_id": r.run_id, "replicate": r.replicate, "status": r.status, **r.params, **r.metrics}
            for r in self._records
        ]

    def table(self, *, max_rows: int | None = 50) -> str:
        """A plain-text table (params and metrics as columns), for a terminal or a log."""
        rows = self.rows()
        columns: list[str] = []
        for row in rows:
            columns.extend(key for key in row if key not in columns)
        shown = rows if max_rows is None else rows[:max_rows]
        cells = [[_cell(row.get(column)) for column in columns] for row in shown]
        widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
        lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
        lines.append("  ".join("-" * width for width in widths))
        lines.extend("  ".join(value.ljust(width) for value, width in zip(line, widths)) for line in cells)
        if len(shown) < len(rows):
            lines.append(f"... {len(rows) - len(shown)} more runs")
        return "\n".join(lines)

    def to_dataframe(self) -> Any:
        """A pandas DataFrame, one row per run (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Results.to_dataframe() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.rows())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
