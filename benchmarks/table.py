"""The benchmarks' one way to publish a result table: print it and write it to a file."""

from __future__ import annotations

import os


def publish(lines: list[str], path: str) -> None:
    """Print the table made of ``lines`` and write it to ``path`` (its folder is created if needed)."""
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        file.write(table + "\n")
