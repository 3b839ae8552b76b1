"""Reading manifests the way ``kubectl apply -f`` does: files, directories (``-R`` to recurse),
``-`` for standard input, several YAML documents per file, and ``kind: List``."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from ferry.cli.errors import CliError, MissingFile

#: What kubectl reads from a directory; a file named explicitly is read whatever its name.
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


@dataclass(frozen=True)
class Document:
    """One YAML document (or one item of a ``List``) and where it came from."""

    body: Any
    source: str  # the file's path, or "stdin"
    number: int  # 1-based position of the document in its source
    item: int | None = None  # 0-based index inside a ``List`` document

    @property
    def where(self) -> str:
        place = f"{self.source}, document {self.number}"
        return place if self.item is None else f"{place}, items[{self.item}]"


def read_manifests(
    paths: Sequence[str], *, recursive: bool = False, stdin: TextIO | None = None
) -> list[Document]:
    """Every document in ``paths``, in order: a directory's files sorted by name (subdirectories
    too with ``recursive``), ``-`` read from ``stdin`` once. Empty documents are skipped."""
    if list(paths).count(STDIN) > 1:
        raise CliError('"-" (standard input) can be given once')
    documents: list[Document] = []
    for path in paths:
        if path == STDIN:
            text = (stdin or sys.stdin).read()
            documents += _parse(text, "stdin")
            continue
        for file in _files(Path(path), recursive):
            documents += _parse(_read(file), str(file))
    return documents


def _files(path: Path, recursive: bool) -> Iterator[Path]:
    if not path.exists():
        raise MissingFile(f"file {path} not found")
    if not path.is_dir():
        yield path
        return
    children = sorted(path.iterdir())
    for child in children:
        if child.is_file() and child.suffix in MANIFEST_SUFFIXES:
            yield child
    if recursive:
        for child in children:
            if child.is_dir():
                yield from _files(child, recursive)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read {path}: not UTF-8 text ({exc.reason})") from None


def _parse(text: str, source: str) -> list[Document]:
    try:
        bodies = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise CliError(f"{source} is not valid YAML: {exc}") from None
    documents: list[Document] = []
    for number, body in enumerate(bodies, 1):
        if body is None:
            continue
        if _is_list(body):
            documents += [Document(item, source, number, i) for i, item in enumerate(body["items"])]
        else:
            documents.append(Document(body, source, number))
    return documents


def _is_list(body: Any) -> bool:
    """``kind: List`` (what ``kubectl get -o yaml`` prints) or ``<Kind>List``, with items."""
    return (
        isinstance(body, Mapping)
        and isinstance(body.get("kind"), str)
        and body["kind"].endswith("List")
        and isinstance(body.get("items"), list)
    )
