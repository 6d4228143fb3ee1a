"""`napkin model` and `napkin pseudocode`: the performance model and the looped algorithm."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `napkin` parser."""
