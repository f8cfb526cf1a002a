"""`--config`: a recipe YAML by path, or a shipped recipe by name (`--config video_finetune`), read with one-line
errors: a missing file, a malformed YAML or an unknown key (with the closest option) never end in a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from framelm.training.errors import FrameLMParser, InputError, UsageError, did_you_mean

RECIPES = Path(__file__).resolve().parent / "recipes"


def shipped_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The recipe file `--config NAME` means: the path itself when it exists, else a shipped recipe of that name."""
    path = Path(os.path.expanduser(name))
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(f"--config {name} is a folder", "pass a recipe YAML file")
    shipped = RECIPES / f"{name.removesuffix('.yaml').removesuffix('.yml')}.yaml"
    if "/" not in name and os.sep not in name and shipped.is_file():
        return shipped
    hint = did_you_mean(path.stem, shipped_recipes())
    raise InputError(
        f"--config {name}: no such file" + (f"; {hint}" if hint else ""),
        f"pass a recipe YAML path or a shipped recipe name: {', '.join(shipped_recipes())}",
    )


def read_recipe(name: str) -> tuple[Path, dict]:
    """(its path, its mapping). A YAML error names the file and the line."""
    import yaml

    path = recipe_path(name)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{where}: malformed YAML: {problem}", "fix the YAML syntax there") from err
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InputError(f"{path}: a recipe is a YAML mapping of option: value, not a {type(config).__name__}",
                         "write one `option: value` per line")  # fmt: skip
    return path, config


class RecipeParser(FrameLMParser):
    """`TrlParser.parse_args_and_config` with named recipes and one-line errors (first base beside `TrlParser`)."""

    def parse_args_and_config(self, args=None, **kwargs):
        args = list(args or [])
        if "--config" not in args and not any(a.startswith("--config=") for a in args):
            return super().parse_args_and_config(args, **kwargs)
        args = [part for a in args for part in (a.split("=", 1) if a.startswith("--config=") else [a])]
        at = args.index("--config")
        if at + 1 >= len(args):
            raise UsageError("--config needs a recipe: a YAML path or a shipped recipe name",
                             f"shipped: {', '.join(shipped_recipes())}")  # fmt: skip
        name = args[at + 1]
        path, config = read_recipe(name)
        env = config.pop("env", {}) or {}
        if not isinstance(env, dict):
            raise InputError(f"{path}: `env` must be a mapping of variable: value", "see the shipped recipes")
        for key, value in env.items():
            os.environ[key] = str(value)
        known = {action.dest for action in self._actions}
        unknown = [key for key in config if key not in known]
        if unknown:
            self.unknown_keys_error(unknown, str(path))
        self.set_defaults_with_config(**config)
        rest = args[:at] + args[at + 2 :]
        return self.parse_args_into_dataclasses(args=rest, **kwargs)

    def parse_args_into_dataclasses(self, args=None, return_remaining_strings=False, **kwargs):
        """Leftover words are an `unrecognized arguments` usage error, with a "did you mean"."""
        *parsed, rest = super().parse_args_into_dataclasses(args=args, return_remaining_strings=True, **kwargs)
        if return_remaining_strings:
            return (*parsed, rest)
        if rest:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        return tuple(parsed)


def check_recipe(argv: list[str]) -> None:
    """A missing or malformed `--config` is reported before trl and torch load (seconds, and their log noise)."""
    for at, word in enumerate(argv):
        if word == "--config" and at + 1 < len(argv):
            read_recipe(argv[at + 1])
        elif word.startswith("--config="):
            read_recipe(word.split("=", 1)[1])
