"""The command line: argument parsing (main), a transfer's inputs checked
and read once before the first long step (inputs), the complete jobs behind
each command (jobs: each step shown, the folder written whole), and the demo
on its embedded default."""

from vocabxfer.cli.main import main

__all__ = ["main"]
