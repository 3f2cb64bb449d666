"""Choice lists of command-line options read from a registry when first needed, so that
building the parser imports no registry (``glsmamba --help`` stays light) and a name
registered later (a plugin's, a test's) is accepted."""
from __future__ import annotations

from typing import Callable, Iterable


class LazyChoices:
    """``choices=`` for argparse: the names ``source()`` returns, looked up on each use.
    Give the option a ``metavar`` (argparse lists the choices in the usage line when the
    parser is built otherwise) and ``%(choices)s`` in its help (expanded for ``--help``)."""

    def __init__(self, source: Callable[[], Iterable[str]]):
        self.source = source

    def __contains__(self, value: object) -> bool:
        return value in list(self.source())

    def __iter__(self):
        return iter(list(self.source()))

    def __len__(self) -> int:
        return len(list(self.source()))


def protocol_names() -> list[str]:
    from glsmamba.evaluation.protocols import list_protocols
    return list_protocols()


def rules_names() -> list[str]:
    from glsmamba.evaluation.metrics import file_rules
    return sorted(file_rules())
