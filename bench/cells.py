"""How one measured figure is written in the benchmark page: seconds, MB, ratios, verdicts, tables."""
from __future__ import annotations

from bench.measure import MB, Summary, summary_from_json


def summary_or_none(data: dict | None) -> Summary | None:
    return summary_from_json(data) if data else None


def secs(data: dict | None, digits: int = 2) -> str:
    """``0.27 s (0.26–0.29)``; ms below 0.1 s.

    Example:
        >>> secs({"median": 0.05, "low": 0.04, "high": 0.06, "n": 3})
        '50 ms (40–60)'
    """
    s = summary_or_none(data)
    if s is None:
        return "–"
    if s.median < 0.1:
        return s.fmt(1000, 0, " ms")
    return s.fmt(1, digits, " s")


def mbytes(data: dict | None) -> str:
    """Peak RSS summary in MB (MiB).

    Example:
        >>> mbytes({"median": 65 * 2**20, "low": 64 * 2**20, "high": 66 * 2**20, "n": 3})
        '65 MB (64–66)'
    """
    s = summary_or_none(data)
    return "–" if s is None else s.fmt(1 / MB, 0, " MB")


def ms(data: dict | None) -> str:
    """Latency summary in ms.

    Example:
        >>> ms({"median": 1.234, "low": 1.0, "high": 2.0, "n": 30, "spread": "p10-p90"})
        '1.23 ms (1.00–2.00)'
    """
    s = summary_or_none(data)
    if s is None:
        return "–"
    return s.fmt(1, 2 if s.median < 10 else 1 if s.median < 100 else 0, " ms")


def size(nbytes: float) -> str:
    """Example:
        >>> size(3297832), size(1074005073)
        ('3.15 MB', '1024 MB')
    """
    if nbytes >= 100 * MB:
        return f"{nbytes / MB:.0f} MB"
    if nbytes >= MB:
        return f"{nbytes / MB:.2f} MB"
    return f"{nbytes / 1024:.0f} KB"


def ratio(data: dict | None) -> str:
    s = summary_or_none(data)
    return "–" if s is None else s.fmt(1, 1, "×")


def verdict(ok: bool | None, fact: str = "") -> str:
    """Example:
        >>> verdict(True), verdict(False, "by 2.1×")
        ('met', 'MISSED by 2.1×')
    """
    if ok is None:
        return "not measured"
    return "met" if ok else ("MISSED " + fact).strip()


def markdown_table(header: list[str], rows: list[list[str]] | list[tuple]) -> str:
    """Example:
        >>> print(markdown_table(["a", "b"], [["1", "2"]]))
        | a | b |
        |---|---|
        | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
