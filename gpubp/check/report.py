"""The report of ``gpubp check``: check.json (every figure) and check.md (for a
person), each well under 16 MiB, so that a remote machine's report can be
carried back whole.  A part is PASS, FAIL, or NOT RUN with the reason."""
from __future__ import annotations

import json
import os

MAX_BYTES = 16 * 2**20


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} characters cut)"


def _cell(value) -> str:
    """A table cell: "-" where there is nothing (a missing key, None: no error, no cuBLAS twin)."""
    return "-" if value is None else str(value)


def verdict(result: dict) -> str:
    """PASS or FAIL; INCOMPLETE (with the verdict so far) while parts are pending: a report written before
    each part, which a check killed in that part (a time limit) leaves behind."""
    so_far = "PASS" if result["passed"] else "FAIL"
    pending = result.get("pending")
    return so_far if not pending else (f"INCOMPLETE ({so_far} so far; {len(pending)} part(s) did not finish: "
                                       f"{', '.join(pending)})")


def to_markdown(result: dict) -> str:
    lines = [f"# gpubp check{' --gpu' if result['gpu'] else ''}: {verdict(result)}", "",
             f"gpubp {result['gpubp']}, {result['started']}, {result['seconds']:.0f} s, "
             f"python {result['python']}, numpy {result['numpy']}", "",
             "| part | status | summary |", "|---|---|---|"]
    for part in result["parts"]:
        summary = part.get("summary") or part.get("why") or ""
        lines.append(f"| {part['name']} | {part['status']} | {_clip(summary, 400).replace('|', '/')} |")
    why = ("did not run: the check was interrupted before it" if result.get("interrupted") else
           "not finished when this report was written: still running, or the check was killed")
    for name in result.get("pending") or ():
        lines.append(f"| {name} | PENDING | {why} (rerun it alone: --part {name}) |")
    for part in result["parts"]:
        rows = part.get("rows")
        if not rows:
            continue
        lines += ["", f"## {part['name']}", ""]
        keys = list(rows[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in rows:
            lines.append("| " + " | ".join(_clip(_cell(row.get(k)), 300).replace("|", "/").replace("\n", " ")
                                           for k in keys) + " |")
    env = next((p for p in result["parts"] if p["name"] == "environment"), None)
    if env and env.get("details"):
        lines += ["", "## environment", "", "```", json.dumps(env["details"], indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"


def write(result: dict, out_dir) -> dict:
    """Write check.json and check.md into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "check.json"), "md": os.path.join(out_dir, "check.md")}
    text = json.dumps(result, indent=1, default=str)
    if len(text.encode()) > MAX_BYTES:              # never expected; the logs are clipped already
        text = json.dumps({**result, "parts": [{k: v for k, v in p.items() if k != "details"}
                                              for p in result["parts"]]}, indent=1, default=str)
    for path, content in ((paths["json"], text), (paths["md"], _clip(to_markdown(result), MAX_BYTES // 2))):
        with open(path + ".tmp", "w") as f:        # whole or not at all: a kill mid-write keeps the last report
            f.write(content)
        os.replace(path + ".tmp", path)
    return paths
