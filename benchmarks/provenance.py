"""Where and how a benchmark ran, for the footer of its section of docs/benchmarks.md.

Every figure in the footer is measured or read when the script runs: the command line (from sys.argv,
the interpreter shown as `python`, paths relative to the repository, never an absolute machine path),
the git commit the code ran from (with the tree of spiketok/ when it had uncommitted changes), the date,
the machine, package versions, and the 1-minute load average before and after the run with a sentence
about machine load computed from them.

Load rule (LOAD_LIMIT = 1.0): the machine counts as idle when the 1-minute load average before the run
is at most 1.0 and the load average after it, less the run's own use (its CPU seconds, children
included, over its wall seconds: the cores it kept busy), is at most 1.0. Timing benchmarks refuse to
write the doc otherwise, unless given --allow-load, in which case their section says so in bold.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_LOG = "SPIKETOK_MODULE_LOG"  # spiketok/module_log.py: where each process lists the spiketok files it ran
if not os.environ.get(MODULE_LOG):  # set before any child process starts, so they all write there
    os.environ[MODULE_LOG] = tempfile.mkdtemp(prefix="spiketok-code-read-")
LOAD_LIMIT = 1.0
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "neon", "sve")


def shown_path(text: str, cwd: Path | None = None) -> str:
    """An absolute path as it may appear in the doc: relative to the repository root when inside it or its
    parent folder (`benchmarks/x.py`, `../shared/data/x.nwb`), else `WORK/<last part>`."""
    path = Path(text)
    if not path.is_absolute():
        return text
    # as written (../shared may be a link to elsewhere) and with links resolved
    for candidate in (Path(os.path.abspath(path)), path.resolve()):
        for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
            try:
                return prefix + (candidate.relative_to(base).as_posix() or ".")
            except ValueError:
                continue
    return f"WORK/{path.name}" if path.name else "WORK"


def shown_arg(arg: str) -> str:
    """One argument with every absolute path in it made relative (`--out=/x/y`, `single=/x/y.json` too)."""
    return re.sub(r"(?<![\w.~])/[^\s=,:;]*", lambda m: shown_path(m.group(0)), arg)


def command(argv: list[str] | None = None) -> str:
    """The command that ran this script, as a reader would type it in the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    script = script if script.is_absolute() else Path.cwd() / script
    shown = [shown_path(str(script.resolve()))]
    for a in argv[1:]:
        a = shown_arg(a)
        shown.append(f"'{a}'" if (" " in a or not a) else a)
    return " ".join(["python", *shown])


def _git(*args: str, env: dict[str, str] | None = None) -> str | None:
    """`git ARGS` in the repository: its output, or None when git or the checkout is missing or it fails."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=None if env is None else {**os.environ, **env},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_tree() -> str | None:
    """The git tree id of spiketok/ as it is on disk now, uncommitted changes included (through a scratch
    index: the checkout's own index is not touched)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if _git("read-tree", "HEAD", env=env) is None or _git("add", "-A", "--", "spiketok", env=env) is None:
            return None
        return _git("write-tree", "--prefix=spiketok/", env=env)


def commit_cell() -> str:
    """The footer's `commit` cell: the commit the code ran from; when spiketok/ had uncommitted changes, also
    the tree of spiketok/ that ran (tests/test_benchmark_page.py compares both with the code)."""
    head = _git("rev-parse", "HEAD")
    if not head:
        return "not recorded (not a git checkout)"
    if not _git("status", "--porcelain", "--", "spiketok"):
        return f"`{head}`"
    tree = code_tree()
    return f"`{head}` with uncommitted changes to spiketok/ " + (
        f"(its tree then: `{tree}`)" if tree else "(its tree could not be read)"
    )


@functools.cache
def start_commit() -> str:
    """`commit_cell()` as it was when this process first asked (a `Load` asks when it is made, as a run starts):
    a commit made while a long run goes on is not recorded as the code it ran."""
    return commit_cell()


def code_read() -> list[str]:
    """The files of spiketok/ this run imported (`spiketok/train/run.py`, sorted): this process's and those every
    child process it started listed as it exited (spiketok/module_log.py), plus every file of spiketok/ that is
    not Python (configs, shipped models), which any code may read."""
    from spiketok.module_log import PACKAGE, loaded_files

    found = set(loaded_files())
    for listing in Path(os.environ[MODULE_LOG]).glob("*.txt"):
        found.update(line for line in listing.read_text().splitlines() if line.startswith("spiketok/"))
    found.update(
        (Path("spiketok") / f.relative_to(PACKAGE)).as_posix()
        for f in PACKAGE.rglob("*")
        if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts
    )
    return sorted(found)


NOT_RECORDED = "not recorded (a result stored before commits were recorded)"


def commits_cell(cells: list[str]) -> str:
    """The commit cell of a section built from the results of several runs: their commit when they agree, else
    each one (a section that ran on more than one commit records none: tests/test_benchmark_page.py fails it)."""
    unique = list(dict.fromkeys(cells)) or [NOT_RECORDED]
    return unique[0] if len(unique) == 1 else "not one commit: results from " + "; ".join(unique)


COMMIT_ROW = re.compile(r"^\| commit \| `([0-9a-f]{40})`(?:[^|]*its tree then: `([0-9a-f]{40})`)?", re.MULTILINE)


def recorded_commit(section: str) -> tuple[str, str | None] | None:
    """(commit, tree of spiketok/ when it had uncommitted changes, else None) from a section's `commit` row."""
    m = COMMIT_ROW.search(section)
    return (m.group(1), m.group(2)) if m else None


def cpu_flags() -> list[str]:
    """The vector-instruction flags of this CPU that matter for torch kernels (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            found.update(line.split(":", 1)[1].split())
            break
    return [f for f in CPU_FLAGS if f in found]


def machine(cores_used: str = "") -> str:
    """Platform, CPU model, CPU count, vector flags, and (optionally) how many cores the benchmark used."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    parts = [f"`{platform.platform()}`", model or platform.machine(), f"{os.cpu_count()} CPUs"]
    if flags:
        parts.append("flags " + ", ".join(flags))
    if cores_used:
        parts.append(cores_used)
    return ", ".join(parts)


def versions(*packages: str) -> str:
    """`Python x.y.z, pkg a.b.c, ...` for the packages given (those not installed are left out)."""
    out = [f"Python {platform.python_version()}"]
    for p in packages:
        try:
            out.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Load:
    """The 1-minute load average before and after a run, and the run's own CPU use, to judge machine load."""

    before: float = field(default_factory=lambda: os.getloadavg()[0])
    after: float | None = None
    own: float = 0.0  # cores the run kept busy on average (CPU seconds / wall seconds)
    commit: str = field(default_factory=start_commit)  # the footer's commit cell: the code the run started from
    _t0: float = field(default_factory=time.monotonic, repr=False)
    _cpu0: float = field(default_factory=_cpu_seconds, repr=False)

    def stop(self) -> Load:
        """Record the load average after the run and the run's own use (call once, when the run is over)."""
        self.after = os.getloadavg()[0]
        wall = max(time.monotonic() - self._t0, 1e-9)
        self.own = (_cpu_seconds() - self._cpu0) / wall
        return self

    @property
    def others_after(self) -> float:
        return max(0.0, (self.after if self.after is not None else self.before) - self.own)

    @property
    def idle(self) -> bool:
        return self.before <= LOAD_LIMIT and self.others_after <= LOAD_LIMIT

    def sentence(self, timing: bool = True) -> str:
        """What the load means for the figures, computed from the numbers (see the module's rule)."""
        after = "not measured" if self.after is None else f"{self.after:.2f}"
        numbers = (
            f"1-minute load average {self.before:.2f} before the run and {after} after it "
            f"(the run itself kept {self.own:.2f} cores busy; {os.cpu_count()} CPUs)"
        )
        if self.idle:
            return f"Machine idle (load ≤ {LOAD_LIMIT:.1f} besides this run): {numbers}."
        effect = (
            "timings are not comparable with an idle run"
            if timing
            else "accuracy figures are unaffected, but time-capped training may have run fewer steps"
        )
        return f"Machine loaded (load > {LOAD_LIMIT:.1f} besides this run): {numbers}; {effect}."

    def as_dict(self) -> dict:
        return {"before": self.before, "after": self.after, "own": self.own, "commit": self.commit}

    @classmethod
    def from_dict(cls, d: dict) -> Load:
        return cls(before=d["before"], after=d["after"], own=d.get("own", 0.0), commit=d.get("commit", NOT_RECORDED))


def refuse_if_loaded(load: Load, allow: bool, doc: Path) -> bool:
    """For timing benchmarks: False (and a message) when the machine was loaded and --allow-load was not given."""
    if load.idle or allow:
        return True
    print(
        f"refusing to write {shown_path(str(doc.resolve()))}: {load.sentence()} Re-run on an idle machine, "
        "or pass --allow-load to write it with a bold warning.",
        file=sys.stderr,
    )
    return False


def load_note(load: Load, timing: bool = True) -> str:
    """The sentence about machine load, in bold (with a warning) when a timing run was written under load."""
    s = load.sentence(timing)
    if timing and not load.idle:
        return f"**Written with --allow-load on a loaded machine: {s}**"
    return s


def footer(
    load: Load,
    packages: tuple[str, ...],
    cores_used: str = "",
    rows: list[tuple[str, str]] = (),
    argv: list[str] | None = None,
    timing: bool = True,
    commit: str | None = None,
) -> str:
    """The table closing a section (date, machine, versions, commit, command, extra rows, load) and the load
    sentence. `commit`: the commit cell when not the one `load` started from."""
    lines = [
        "| | |",
        "|---|---|",
        f"| date | {dt.date.today().isoformat()} |",
        f"| machine | {machine(cores_used)} |",
        f"| versions | {versions(*packages)} |",
        f"| commit | {load.commit if commit is None else commit} |",
        *(f"| {k} | {v} |" for k, v in rows),
        f"| command | `{command(argv)}` |",
        "",
        load_note(load, timing),
    ]
    return "\n".join(lines)
