"""How a framelm command tells a user what they got wrong: one line and an exit code, never a traceback."""

from __future__ import annotations


class OneLineErrors:
    """argparse mixin: a usage error is one line (what is wrong, where the help is) and exit code 2. The full usage
    of `framelm train` lists hundreds of options and would bury the message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
