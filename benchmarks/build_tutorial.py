"""Run the commands of docs/tutorial.md on the shared recording it names and write their results into it.

    python benchmarks/build_tutorial.py [--work DIR]

The page's ```bash blocks are its commands (`tutorial_commands`); they run in WORK, where the recording is
linked under its own name, exactly as written. The results (the test R² of spiketok and of the MLP baseline on
the same blocks, what training chose, the evaluation's pictures, the commit, the date and how long it took)
go between the page's `tutorial:results` markers; the pictures into docs/img/tutorial/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import provenance
from docsection import write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PAGE = ROOT / "docs" / "tutorial.md"
IMAGES = ROOT / "docs" / "img" / "tutorial"
RECORDING = "hc_linear_track.nwb"
START, END = "<!-- tutorial:results:start -->", "<!-- tutorial:results:end -->"


def tutorial_commands(text: str) -> list[list[str]]:
    """The `spiketok` commands of the page's ```bash blocks, in order, as argument lists (comments dropped)."""
    blocks = text.split("```bash\n")[1:]
    lines = [line for block in blocks for line in block.split("```", 1)[0].splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.strip().startswith("spiketok ")]


def results_section(work: Path, minutes: float) -> str:
    """The page's results block, from the files the commands wrote in `work`."""
    results = json.loads((work / "results.json").read_text())
    mlp = json.loads((work / "mlp.json").read_text())
    recipe = json.loads((work / "runs" / "rat" / "recipe.json").read_text())
    ((sid, ours),) = results["sessions"].items()
    theirs = mlp["sessions"][sid]["r2"]
    IMAGES.mkdir(parents=True, exist_ok=True)
    for old in IMAGES.glob("*.png"):
        old.unlink()
    pictures = []
    for png in sorted((work / "plots").glob("*.png")):
        shutil.copyfile(png, IMAGES / png.name)
        pictures.append(f"![{png.stem}](img/tutorial/{png.name})")
    verdict = "above" if ours["r2"] > theirs else "below"
    chosen = "\n".join(f"- `{k}` = {v}: {recipe['reasons'].get(k, 'given')}" for k, v in recipe["settings"].items())
    return "\n".join(
        [
            "| decoder | test R² | per dimension |",
            "|---|---|---|",
            f"| spiketok, from `pretrained:primate-reaching` | {ours['r2']:.3f} | "
            f"{', '.join(f'{v:.3f}' for v in ours['r2_per_dim'])} |",
            f"| `spiketok baseline --model mlp` | {theirs:.3f} | "
            f"{', '.join(f'{v:.3f}' for v in mlp['sessions'][sid]['r2_per_dim'])} |",
            "",
            f"spiketok is {abs(ours['r2'] - theirs):.3f} {verdict} the MLP on binned counts here. What training chose:",
            "",
            chosen,
            "",
            *pictures,
            "",
            f"Run by `{provenance.command()}` on {date.today().isoformat()} in {minutes:.0f} min "
            f"({provenance.machine()}); commit {provenance.start_commit()}.",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("bench-work/tutorial"))
    args = ap.parse_args()
    if not (DATA / RECORDING).exists():
        sys.exit(f"no {DATA / RECORDING}: the real recordings are not here")
    provenance.start_commit()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    (args.work / RECORDING).symlink_to((DATA / RECORDING).resolve())
    t0 = time.time()
    with open(args.work / "log.txt", "w") as log:
        for cmd in tutorial_commands(PAGE.read_text()):
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            subprocess.run(
                [sys.executable, "-m", "spiketok.cli", *cmd[1:]],
                cwd=args.work,
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    write_section(results_section(args.work, (time.time() - t0) / 60), START, END, PAGE)
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
