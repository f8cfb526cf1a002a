"""How a framelm command tells a user what they got wrong: one error type, one line, one exit code per class.

Every command raises a `FrameLMError` (or lets a common library error through: `user_error` turns those into one);
`framelm`'s entry point (`cli.main`, through `run_command`) prints it as

    framelm <command>: error: <what> (<fix>)

and exits with the class's code. Never a traceback for a user's mistake. `FrameLMParser` is the one argument parser
every command builds on: usage errors are `UsageError`s, options are never prefix-matched (`--learning_rat` is not
`--learning_rate`), an unknown option or recipe key gets a "did you mean", `--foo-bar` and `--foo_bar` are the same
option, and `--help` shows every default. Standard library only: `framelm <command> --help` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import sys
from collections.abc import Callable, Iterable


class FrameLMError(Exception):
    """A user's mistake or a missing piece of their setup: `message` says what, `fix` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message, self.fix = message, fix

    def __str__(self) -> str:
        return self.message + (f" ({self.fix})" if self.fix else "")

    def line(self, command: str) -> str:
        return f"{f'framelm {command}' if command else 'framelm'}: error: {self}"


class UsageError(FrameLMError):
    """The command line or recipe itself: an unknown or missing option, a value out of range. Exit code 2."""

    exit_code = 2


class InputError(FrameLMError):
    """A file, a model or data the command was pointed at is missing or unusable. Exit code 1."""

    exit_code = 1


class SetupError(FrameLMError):
    """The environment lacks something: an optional library, the network (offline mode). Exit code 3."""

    exit_code = 3


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean X?)`-style hint text, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


def user_error(err: BaseException) -> FrameLMError | None:
    """A common library exception that a user's input causes, as a `FrameLMError`; None for a real bug."""
    if isinstance(err, FrameLMError):
        return err
    if isinstance(err, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError) and err.filename:
        what = {
            FileNotFoundError: "no such file or folder",
            IsADirectoryError: "is a folder, not a file",
            NotADirectoryError: "is not a folder",
            PermissionError: "permission denied",
        }[type(err)]
        return InputError(f"{err.filename}: {what}", "check the path")
    if type(err) is ConnectionError:  # datasets: a Hub dataset that cannot be reached (offline, no network)
        return SetupError(" ".join(str(err).split()), "check the network or HF_HUB_OFFLINE; a local path must exist")
    module = type(err).__module__ or ""
    if module.startswith("yaml"):  # yaml.YAMLError and its subclasses: the file and line are in the message
        text = " ".join(str(err).split())
        return InputError(f"malformed YAML: {text}", "fix the YAML syntax at the line shown")
    if module.startswith("huggingface_hub") and type(err).__name__ in (
        "OfflineModeIsEnabled",
        "LocalEntryNotFoundError",
    ):
        return SetupError(" ".join(str(err).split()), "unset HF_HUB_OFFLINE, or use a local copy")
    return None


def run_command(command: str | Callable[[], str], function: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run one command's `main(argv)`: a `FrameLMError` (or a user error a library raised) becomes one line on
    stderr and its class's exit code; a closed stdout (`framelm -h | head`) ends quietly. `command` is the name in
    the message (or a function returning it, for a name known only once the arguments are read)."""
    name = command if callable(command) else (lambda: command)
    try:
        code = int(function(argv) or 0)
        sys.stdout.flush()
        return code
    except SystemExit as exit:  # --help, or a library's own exit
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    except KeyboardInterrupt:
        print(FrameLMError("interrupted").line(name()), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_stdout()
    except OSError as err:
        if err.errno == errno.EPIPE:
            return _closed_stdout()
        return _report(err, name())
    except Exception as err:
        return _report(err, name())


def _report(err: BaseException, command: str) -> int:
    error = user_error(err)
    if error is None:
        raise err
    _close_progress_bars()
    line = error.line(command)
    if ":/" in line or "@" in line:  # a URL's token or signature is never printed (the redactor loads transformers)
        from framelm.processing.sources_framelm import redact

        line = redact(line)
    print(line, file=sys.stderr)
    return error.exit_code


def _close_progress_bars() -> None:
    """A progress bar left open by the failure (training's) ends its line first: the error gets a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        try:
            bar.close()
        except Exception:  # a bar that cannot close must not hide the error
            pass


def _closed_stdout() -> int:
    """The reader of our output went away (`| head`): say nothing more, and keep Python from complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and adds `(default: X)` to an option's help when it has a real default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        no_default = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if no_default or action.option_strings == [] and action.nargs:  # `is`: a default of 0 is still shown
            return text
        if isinstance(action, argparse._StoreConstAction | argparse._HelpAction | argparse._VersionAction):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class FrameLMParser(argparse.ArgumentParser):
    """The one argument parser of every framelm command (alone, or first base beside `HfArgumentParser` and
    `TrlParser`): one-line `UsageError`s with a "did you mean", no prefix matching, dashes and underscores alike."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        hint = ""
        if message.startswith("unrecognized arguments:"):
            unknown = [word.split("=", 1)[0] for word in message.split(":", 1)[1].split() if word.startswith("-")]
            hints = [did_you_mean(word, self.option_names()) for word in unknown]
            hint = "; ".join(h for h in hints if h)
        raise UsageError(message + (f"; {hint}" if hint else ""), f"see `{self.prog} --help`")

    def option_names(self) -> list[str]:
        return [name for name in self._option_string_actions if name.startswith("--")]

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self.spelled_as_declared(args), namespace)

    def spelled_as_declared(self, args: list[str]) -> list[str]:
        """`--image-folder` where only `--image_folder` exists (and the reverse): one spelling rule for all options."""
        known = self._option_string_actions
        out = []
        for word in args:
            name, eq, value = word.partition("=")
            if name.startswith("--") and name not in known:
                for variant in (name[:2] + name[2:].replace("-", "_"), name[:2] + name[2:].replace("_", "-")):
                    if variant in known:
                        word = variant + eq + value
                        break
            out.append(word)
        return out

    def unknown_keys_error(self, keys: Iterable[str], where: str):
        """Recipe keys that are no option: one line, each with its closest option."""
        names = [name[2:] for name in self.option_names()]
        parts = []
        for key in keys:
            hint = did_you_mean(key, names)
            parts.append(f"{key!r}" + (f" ({hint})" if hint else ""))
        raise UsageError(f"{where}: unknown key{'s' if len(parts) > 1 else ''} {', '.join(parts)}",
                         f"see `{self.prog} --help` for the option names")  # fmt: skip
