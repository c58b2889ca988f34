"""The command line: argument parsing (main), the complete jobs behind each
command (jobs: every input checked before the first long step, the folder
written whole), and the demo on its embedded default."""

from vocabxfer.cli.main import main

__all__ = ["main"]
