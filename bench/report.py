"""Render the latest full-run results (`bench/results/<name>.json`, else a labelled `<name>.quick.json`) as the table
in `bench/README.md`.

    python bench/report.py            # print the table
    python bench/report.py --write    # replace the table between the markers in bench/README.md

The table is generated, never typed: every figure in it comes from a results file written by a bench script, with
the date, machine and library versions of that run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR  # noqa: E402

ORDER = (
    "frame_sampling",
    "preprocessing",
    "train_step",
    "packing",
    "generation",
    "data_scale",
    "data_scale.shards",
    "loader",
    "import_memory",
    "serving",
)
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _measured(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict | list):
        return json.dumps(value)[:80]
    return str(value)


def render(results_dir: Path = RESULTS_DIR) -> str:
    """One row per target of every full run (of its --quick run, labelled so, when no full run was made), then the
    machine each run was measured on."""
    rows = ["| bench | target | measured | met |", "|---|---|---|---|"]
    machines = []
    for name in ORDER:
        path, label = results_dir / f"{name}.json", name
        if not path.exists() and (results_dir / f"{name}.quick.json").exists():  # only a --quick run was made
            path, label = results_dir / f"{name}.quick.json", f"{name} (--quick run)"
        if not path.exists():
            if "." not in name:  # a part run alone (data_scale.shards) is optional: a full run holds every part
                rows.append(f"| {name} | - | not run yet | - |")
            continue
        result = json.loads(path.read_text())
        for key, entry in result["summary"].items():
            if not isinstance(entry, dict) or "target" not in entry:
                continue
            if entry["target"] == "reported" and not isinstance(entry.get("measured"), int | float):
                continue  # a reported record (versions, equivalence details) rather than a figure
            worst = f" (worst: {entry['worst_case']})" if entry.get("worst_case") else ""
            if "writing_phase_only" in entry:  # convert's own writing phase, without Python's start and the reading
                worst += f" (writing phase alone: {_measured(entry['writing_phase_only'])})"
            if "after_validate" in entry:  # the records read and checked by `data validate` first, into the cache
                worst += f" (after validate: {_measured(entry['after_validate'])})"
            met = "-" if entry["target"] == "reported" else "yes" if entry.get("met") else "**no**"
            rows.append(f"| {label} | {key}: {entry['target']} | {_measured(entry['measured'])}{worst} | {met} |")
        machine = result["machine"]
        versions = ", ".join(f"{lib} {version}" for lib, version in machine["versions"].items() if version)
        device = machine.get("accelerator") or f"{machine['processor']}, {machine['cores']} cores"
        load = f", load average {machine['load_average'][0]} (shared machine)" if machine.get("load_average") else ""
        machines.append(f"- `{label}`: {machine['date']}, {device}{load}, Python {machine['python']}; {versions}")
    return "\n".join(rows) + "\n\nMeasured on:\n\n" + "\n".join(machines) + "\n"


def write(table: str, readme: Path = README) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers to write the table between")
    head, rest = text.split(BEGIN, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}{END}{rest.split(END, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="Write the table into bench/README.md.")
    table = render()
    if parser.parse_args().write:
        write(table)
    print(table)


if __name__ == "__main__":
    main()
