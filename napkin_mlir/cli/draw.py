"""`napkin draw`: render napkin programs as the paper's diagrams."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `napkin` parser."""
