"""Every ```python block in README.md and docs/**/*.md runs, so an example that breaks fails the suite.

The blocks of one page run in order in one namespace (a later block may use what an earlier one made), in a
temporary folder, with torch, numpy and random seeded with 0. A block is skipped only when the line above its
fence is a marker that gives the reason, which the test report shows (``pytest -rs``):

    <!-- docs-test: skip (trains for minutes) -->

Other fences (```bash, ```console, ```toml, plain ```) are not run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random
import re
import textwrap

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<language>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*docs-test:")  # a comment line of its own, not one quoted in prose
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
RUNNABLE = {"python", "py"}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block: its page, the line of its first code line (1-based), language, code, skip reason."""

    page: pathlib.Path
    line: int
    language: str
    code: str
    skip_reason: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: pathlib.Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the skip marker (if any) on the line above each fence."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening.group("fence")
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        above = lines[index - 1] if index else ""
        marker = SKIP.match(above)
        blocks.append(Block(page, index + 2, opening.group("language").lower(),
                            textwrap.dedent("\n".join(lines[index + 1:end])),
                            marker.group("reason").strip() if marker else None))
        index = end + 1
    return blocks


def python_blocks(page: pathlib.Path) -> list[Block]:
    return [block for block in fenced_blocks(page) if block.language in RUNNABLE]


def page_id(page: pathlib.Path) -> str:
    return str(page.relative_to(ROOT))


PAGES_WITH_CODE = [page for page in PAGES if any(block.skip_reason is None for block in python_blocks(page))]
SKIPPED = [block for page in PAGES for block in python_blocks(page) if block.skip_reason is not None]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=page_id)
def test_page_examples_run_in_order(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (the legacy global generator is the one an example would use unseeded)
    random.seed(0)
    namespace = {"__name__": "docs_example"}
    for block in python_blocks(page):
        if block.skip_reason is not None:
            continue
        # padded so that a traceback names the line of the page itself
        code = compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")
        try:
            exec(code, namespace)
        except Exception as error:
            raise AssertionError(f"the example at {block.where} raised {type(error).__name__}: {error}") from error


@pytest.mark.parametrize("block", SKIPPED, ids=lambda block: block.where)
def test_skipped_example(block):
    pytest.skip(f"{block.where}: {block.skip_reason}")


def test_every_docs_test_marker_gives_a_reason_and_sits_on_a_python_fence():
    """A marker that does not parse, or that stands above anything but a ```python fence, would skip nothing."""
    problems = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not MARKER.search(line):
                continue
            following = lines[number] if number < len(lines) else ""
            opening = FENCE.match(following)
            if not SKIP.match(line):
                problems.append(f"{page.relative_to(ROOT)}:{number}: write <!-- docs-test: skip (the reason) -->")
            elif opening is None or opening.group("language").lower() not in RUNNABLE:
                problems.append(f"{page.relative_to(ROOT)}:{number}: the marker must sit just above a ```python fence")
    assert not problems, "\n".join(problems)


def test_block_reader_finds_code_languages_and_markers(tmp_path):
    """The reader under the tests above: fences, languages, first-line numbers, dedent and the skip marker."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n```python\na = 1\n```\n\n<!-- docs-test: skip (slow) -->\n```python\nb = 2\n```\n"
                    "\n```bash\nmake test\n```\n\n- item\n\n   ```py\n   c = 3\n   ```\n", encoding="utf-8")
    blocks = fenced_blocks(page)
    assert [(block.line, block.language, block.code, block.skip_reason) for block in blocks] == [
        (4, "python", "a = 1", None), (9, "python", "b = 2", "slow"), (13, "bash", "make test", None),
        (19, "py", "c = 3", None)]
    assert [block.code for block in python_blocks(page)] == ["a = 1", "b = 2", "c = 3"]


def documented_objects() -> set[int]:
    """The ids of the objects the API reference documents: each ``::: path`` entry of docs/api/*.md, and for a
    module entry its public classes and functions."""
    import importlib
    import inspect

    found = set()
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for path in re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.M):
            module_name, _, attribute = path.rpartition(".")
            try:
                target = importlib.import_module(path)
            except ModuleNotFoundError:
                target = getattr(importlib.import_module(module_name), attribute)
            found.add(id(target))
            if inspect.ismodule(target):
                found |= {id(value) for name, value in vars(target).items()
                          if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))}
    return found


def test_api_reference_documents_every_public_name():
    import inspect

    import sluice
    import sluice.plots

    public = {f"sluice.{name}": getattr(sluice, name) for name in sluice.__all__
              if not inspect.ismodule(getattr(sluice, name))}
    for module in (sluice.estimators, sluice.inference):
        public |= {f"{module.__name__}.{name}": getattr(module, name) for name in module.__all__}
    public |= {f"sluice.plots.{name}": value for name, value in vars(sluice.plots).items()
               if inspect.isfunction(value) and value.__module__ == "sluice.plots" and not name.startswith("_")}
    public |= {"sluice.priors.BoxUniform": sluice.priors.BoxUniform, "sluice.priors.Point": sluice.priors.Point}
    documented = documented_objects()
    missing = sorted(name for name, value in public.items() if id(value) not in documented)
    assert not missing, f"public names without an entry in docs/api/: {missing}"
