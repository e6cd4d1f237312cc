"""MkDocs hook: read two reStructuredText habits of the docstrings as Markdown on the API pages.

Docstrings carry examples as doctest sessions (run by tests/test_docstrings.py) and introduce literal
blocks with a trailing ``::`` ("Example::" above an indented block). Markdown would read ``>>>`` as nested
block quotes and print the double colon. This hook adds a Markdown preprocessor, for the guides and for
mkdocstrings alike, that fences each run of lines starting at ``>>>`` (up to the next blank line) as a
``pycon`` code block and ends such a paragraph with one colon. Lines inside fenced code are left alone.
"""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
LITERAL_MARKER = re.compile(r"(?<=\w)::$")  # "Example::", not "a :: b" or a bare "::"


def markdown_docstring_lines(lines: list[str]) -> list[str]:
    """``lines`` with every unfenced doctest session fenced, and a literal-block ``::`` turned into ``:``."""
    converted, open_fence, index = [], None, 0
    while index < len(lines):
        line = lines[index]
        opening = FENCE.match(line)
        if open_fence is not None:
            if opening and opening.group(1).startswith(open_fence):
                open_fence = None
        elif opening:
            open_fence = opening.group(1)
        elif line.startswith(">>>"):
            session = []
            while index < len(lines) and lines[index].strip():
                session.append(lines[index])
                index += 1
            converted += ["", "```pycon", *session, "```", ""]
            continue
        elif index + 1 < len(lines) and not lines[index + 1].strip():
            line = LITERAL_MARKER.sub(":", line.rstrip())
        converted.append(line)
        index += 1
    return converted


class _DocstringPreprocessor(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        return markdown_docstring_lines(lines)


class DocstringBlocks(Extension):
    """The Markdown extension; its preprocessor runs before the fenced-code one, so the new fences are read."""

    def extendMarkdown(self, md):  # noqa: N802 (Markdown's name)
        md.preprocessors.register(_DocstringPreprocessor(md), "sluice_docstring_blocks", 40)


@event_priority(100)  # before mkdocstrings reads the extension list for its own Markdown instances
def on_config(config):
    config.markdown_extensions.append(DocstringBlocks())
    return config
