"""Helpers shared by the benchmark scripts (printing, markdown tables, --out files)."""

from __future__ import annotations


def log(msg: str = "") -> None:
  print(msg, flush=True)


def md_table(header, rows) -> str:
  """A markdown table from a header and rows of strings."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def parse_list(s: str, cast=str) -> tuple:
  """``"a,b,,c"`` -> ``(cast(a), cast(b), cast(c))``."""
  return tuple(cast(x) for x in s.split(",") if x.strip())


def write_out(text: str, path) -> None:
  """Writes the report to ``--out`` (if given) and says where."""
  if path:
    with open(path, "w") as f:
      f.write(text)
    log(f"wrote {path}")

