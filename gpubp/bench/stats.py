"""The statistics the report and the plot read from rows: the spread of a ratio of two rows, the
mark of a ratio that is not a result, and which rows did not run, with their reasons."""
from __future__ import annotations

import numpy as np


def ratio_stats(a, b):
    """(median, q25, q75) of a's time over b's: from their paired rounds when they were timed in the
    same rounds, else from every pair of their samples; q25 and q75 are None without samples."""
    if not (a.median_s and b.median_s):
        return None
    r = a.median_s / b.median_s
    sa, sb = a.samples, b.samples
    if not sa or not sb:
        return r, None, None
    if a.timed_with is not None and a.timed_with == b.timed_with and len(sa) == len(sb):
        ratios = np.asarray(sa) / np.asarray(sb)
    else:
        pick = lambda s: np.asarray(s)[np.linspace(0, len(s) - 1, min(len(s), 200)).astype(int)]  # noqa: E731
        ratios = (pick(sa)[:, None] / pick(sb)[None, :]).ravel()
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return float(q50), float(q25), float(q75)


def mark(stats, at_least_one=False) -> str:
    """'?' for a ratio below 1 that the work done rules out (``at_least_one``), '~' for one whose
    middle half spans 1, else ''."""
    if stats is None:
        return ""
    r, q25, q75 = stats
    if at_least_one and r < 1:
        return "?"
    if q25 is not None and q25 <= 1 <= q75:
        return "~"
    return ""


def not_run(rows) -> list[tuple[str, str]]:
    """The rows that did not run, by reason: [(which rows, the reason)], each row named by its
    implementation, with the group and how many cases when that is not all of them."""
    by_why = {}
    for r in rows:
        if r.median_s is None and not r.failed:
            by_why.setdefault(r.note.removeprefix("unavailable: "), {}).setdefault((r.group, r.impl), set()).add(r.case)
    cases = {}
    for r in rows:
        cases.setdefault(r.group, set()).add(r.case)
    out = []
    for why, impls in by_why.items():
        names = []
        for (group, impl), where in impls.items():
            scope = "" if where == cases[group] else f" ({len(where)} of {len(cases[group])})"
            names.append(f"{impl} [{group}]{scope}")
        out.append((", ".join(names), why))
    return out
