"""The one place that writes a benchmark's section of ``benchmarks/RESULTS.md``.

Each script owns one ``## <title>`` section (its heading may carry a date: ``## <title>, 2026-11-25``)
and replaces it in place, or appends it when it is not there yet. Every other section is left
byte for byte as it was, and one blank line separates a rewritten section from the next.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def dated_section(title: str, script: str, body: str) -> str:
    """``## <title>, <today>``, the command that produced it, then ``body``."""
    return f"## {title}, {dt.date.today().isoformat()}\n\n_`python benchmarks/{script}`_\n\n{body}"


def replace_section(title: str, section: str, path: Path = RESULTS) -> None:
    """Put ``section`` (text starting with its own ``## <title>...`` heading) where the file's
    ``## <title>`` section is, up to the next ``## `` heading, or at the end when there is none."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    lines = old.splitlines(keepends=True)
    head = f"## {title}"
    start = next((i for i, line in enumerate(lines)
                  if line.rstrip("\n") == head or line.startswith(head + ",")), None)
    body = section.rstrip("\n") + "\n"
    if start is None:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + body + ("\n" + rest if rest else "")
    path.write_text(new, encoding="utf-8")


def publish(title: str, script: str, body: str, record: bool = True) -> str:
    """Print the dated section (headed by the command line this process was started with) and,
    when ``record``, put it in RESULTS.md. Returns the section."""
    command = script + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    text = dated_section(title, command, body)
    print(text)
    if record:
        replace_section(title, text)
        print(f"recorded in {RESULTS}")
    return text
