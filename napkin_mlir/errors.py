"""Errors that napkin-mlir reports to users as `error: ...` lines.

Every failure a user can cause (bad IR, an unknown axis, a tile that does not fit, an
unsupported dtype, a missing tool) raises a subclass of `NapkinError`; the command-line
drivers catch it, print `error: <where>: <what>` and exit non-zero, never a traceback.
"""

from __future__ import annotations


class NapkinError(Exception):
    """A problem in the user's input or environment, reported without a traceback."""

    exit_code = 1

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class UsageError(NapkinError):
    """Bad command-line input (an unknown flag value, malformed --dims); exit code 2."""

    exit_code = 2


class VerificationError(NapkinError):
    """IR that parses but breaks a napkin rule (axis names or sizes disagree, ...)."""


class ToolError(NapkinError):
    """A required external tool (ptxas, mlir-opt) is missing or failed."""
