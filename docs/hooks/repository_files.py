"""MkDocs hook: publish the repository files (figures, raw results) that the guides link to outside docs/.

The guides are read on GitHub as well as on the site, so they link to results where they live, e.g.
``../benchmarks/results/galton.png`` from docs/benchmarks.md. That target lies outside the site's sources, and
MkDocs would report a broken link. This hook copies each such file into the site under ``repository/`` (at its
path in the repository) and points the link there. Only existing files that are not Markdown pages are
published: a link to a missing file, or to a Markdown file outside docs/, is left as it is, so that
``mkdocs build --strict`` still reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

LINK_TARGET = re.compile(r"(\]\()([^)\s#]+)")  # "](target" of a Markdown link or image, without its #anchor
PUBLISHED_UNDER = "repository"


def _repository_root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _outside_file(page_uri: str, target: str, config) -> str | None:
    """The target's path in the repository when it is an existing non-Markdown file outside docs/, else None."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    docs = Path(config.docs_dir).resolve()
    resolved = (docs / posixpath.dirname(page_uri) / target).resolve()
    root = _repository_root(config)
    if resolved.is_relative_to(docs) or not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    if resolved.suffix.lower() in (".md", ".markdown"):
        return None
    return resolved.relative_to(root).as_posix()


def on_files(files, config):
    """Add every repository file that a page links to outside docs/ to the site, under ``repository/``."""
    for page in [file for file in files if file.is_documentation_page()]:
        for _, target in LINK_TARGET.findall(page.content_string):
            path = _outside_file(page.src_uri, target, config)
            uri = f"{PUBLISHED_UNDER}/{path}"
            if path is not None and files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(_repository_root(config) / path)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Point each link to a published repository file at its copy in the site."""

    def relink(match: re.Match) -> str:
        path = _outside_file(page.file.src_uri, match.group(2), config)
        if path is None:
            return match.group(0)
        copy = posixpath.relpath(f"{PUBLISHED_UNDER}/{path}", posixpath.dirname(page.file.src_uri) or ".")
        return match.group(1) + copy

    return LINK_TARGET.sub(relink, markdown)
