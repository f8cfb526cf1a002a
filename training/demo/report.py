"""The README's demo table, rendered from a run's `demo_metrics.json`: generated, never typed.

    framelm demo --out demo_out --write-readme README.md                     # run the demo, then write its table
    python -m framelm.training.demo.report demo_out/demo_metrics.json README.md   # the table of an earlier run

The table replaces whatever stands between the `<!-- demo:begin -->` and `<!-- demo:end -->` markers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from framelm.training.atomic_write import write_text_atomically

BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"


def render(metrics: dict) -> str:
    """Accuracy per question type before and after training against its target, then the run's facts."""
    targets = metrics.get("targets", {})
    rows = ["| question | before | after | target | met |", "|---|---|---|---|---|"]
    for kind, after in metrics["after"].items():
        target = targets.get(kind)
        met = "-" if target is None else "yes" if after >= target else "**no**"
        shown = "-" if target is None else f"{target:.0%}"
        rows.append(f"| {kind} | {metrics['before'][kind]:.0%} | {after:.0%} | {shown} | {met} |")
    facts = (
        f"{metrics['mode']} run: {metrics['train_records']:,} training records, {metrics['steps']:,} steps, loss "
        f"{metrics['first_loss']:.3f} -> {metrics['last_loss']:.3f}, {metrics['seconds']:,.0f} s in all"
    )
    if metrics.get("phases"):
        facts += " (" + ", ".join(f"{name} {seconds:,.0f} s" for name, seconds in metrics["phases"].items()) + ")"
    if metrics.get("load_average") is not None:
        facts += f", load average {metrics['load_average']:.1f} at the start"
    machine = metrics.get("machine")
    if machine:
        versions = ", ".join(f"{name} {machine[name]}" for name in ("torch", "transformers", "trl") if name in machine)
        facts += f" on {machine['devices']} ({machine['platform']}, Python {machine['python']}; {versions})"
    return "\n".join(rows) + f"\n\n{facts}.\n"


def write_readme(metrics: dict, readme: str | Path) -> None:
    """Replace the table between the markers of `readme`."""
    write_between_markers(readme, BEGIN, END, render(metrics))


def write_between_markers(readme: str | Path, begin: str, end: str, body: str) -> None:
    """Replace what stands between `begin` and `end` in `readme` with `body` (a generated table, never typed)."""
    readme = Path(readme)
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no {begin} ... {end} markers to write the table between")
    head, rest = text.split(begin, 1)
    write_text_atomically(readme, f"{head}{begin}\n{body}{end}{rest.split(end, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    write_readme(json.loads(Path(argv[0]).read_text()), argv[1])
    print(f"demo table of {argv[0]} written to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
