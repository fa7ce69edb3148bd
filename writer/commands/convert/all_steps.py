"""``--all-steps``: convert every step of a CheckpointManager folder in one process.

Each finished step ``n`` becomes a complete model folder ``OUT/step_<n>/`` (written
atomically, like a single conversion). Steps are listed the way the readers resolve
them: Orbax CheckpointManager roots (``<n>/`` or ``<prefix>_<n>/`` step folders) and
legacy ``checkpoint_<n>`` files or folders. Unfinished Orbax saves
(``<n>.orbax-checkpoint-tmp-*``) are skipped and reported.

One process means the imports (numpy, tensorstore) and the topology code load once;
memory stays that of one conversion, since each step's checkpoint is closed before the
next one is opened.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from writer.convert import ConvertOptions, convert
from writer.events import EventSink
from topology.vocabulary.errors import ConversionError
from writer.output import check_destination, check_not_a_file
from writer.readers.steps import is_item, legacy_steps, step_folders
from writer.report import Report
from writer.term import human_bytes, table
from writer.weights import Progress


@dataclass
class AllStepsReport:
    """The reports of every converted step, and the steps skipped (with why).

    Example:
        >>> r = AllStepsReport(Path("out"), {}, {7: "unfinished save"})
        >>> r.to_json()["skipped"]
        {'7': 'unfinished save'}
    """

    out_dir: Path
    reports: dict[int, Report] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    checkpoint: Path | None = None  # the folder holding the steps

    def to_json(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "steps": {str(step): report.to_json() for step, report in self.reports.items()},
            "skipped": {str(step): why for step, why in self.skipped.items()},
        }

    def render(self) -> str:
        """One summary table (a row per step), the notices shared by all steps once, the skipped steps.

        Example:
            >>> print(AllStepsReport(Path("out"), {}, {7: "unfinished save"}).render())
            skipped step 7: unfinished save
            0 step(s) converted into out/step_<n>/ in 0.00 s
        """
        lines = []
        if self.reports:
            first = next(iter(self.reports.values()))
            source = self.checkpoint if self.checkpoint is not None else first.source
            lines.append(f"converted {len(self.reports)} step(s) of {source} ({first.format}) -> {self.out_dir}")
            rows = [("step", "folder", "params", "size", "shards", "seconds")]
            for step, report in self.reports.items():
                rows.append((str(step), f"step_{step}/", f"{report.param_count:,}", human_bytes(report.bytes_written),
                             str(len(report.shards)), f"{report.seconds:.2f}"))
            lines.append(table(rows, right={2, 3, 4, 5}, indent="  "))
            seen: list[str] = []
            for report in self.reports.values():  # assumptions repeat for every step: print each once
                seen += [text for text in (n.render() for n in report.notices) if text not in seen]
            lines += seen
        for step, why in self.skipped.items():
            lines.append(f"skipped step {step}: {why}")
        seconds = sum(r.seconds for r in self.reports.values())
        lines.append(f"{len(self.reports)} step(s) converted into {self.out_dir.as_posix()}/step_<n>/ in {seconds:.2f} s")
        return "\n".join(lines)


def step_dir(out_dir: str | Path, step: int) -> Path:
    """Where step ``step`` is written.

    Example:
        >>> step_dir("out", 2000).as_posix()
        'out/step_2000'
    """
    return Path(out_dir) / f"step_{step}"


def list_steps(folder: str | Path) -> tuple[dict[int, Path], dict[int, Path]]:
    """``(finished, unfinished)`` steps of a CheckpointManager or legacy ``checkpoint_<n>`` folder.

    Raises ``STEP_NOT_FOUND`` when ``folder`` holds no numbered steps at all (e.g. it is a
    single checkpoint).

    Example:
        >>> import tempfile; root = Path(tempfile.mkdtemp())
        >>> for n in (1, 20): _ = (root / f"checkpoint_{n}").write_bytes(b"\\x80")
        >>> sorted(list_steps(root)[0])
        [1, 20]
    """
    folder = Path(folder)
    if not folder.exists():
        raise ConversionError("CHECKPOINT_NOT_FOUND", f"no folder at {folder}",
                              "check the path; --all-steps needs the folder that holds the step folders")
    if not folder.is_dir():
        raise _no_steps(folder, "is a file")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    legacy = legacy_steps(entries)
    if legacy:  # the readers give legacy checkpoint_<n> entries precedence too
        return legacy, {}
    if is_item(folder):  # one saved pytree; its ocdbt.process_0/ is not "step 0"
        raise _no_steps(folder, "is a single checkpoint")
    finished, unfinished = step_folders(entries)
    if not finished and not unfinished:
        raise _no_steps(folder, "holds no numbered step folders")
    return finished, {n: p for n, p in unfinished.items() if n not in finished}


def _no_steps(folder: Path, what: str) -> ConversionError:
    return ConversionError(
        "STEP_NOT_FOUND",
        f"--all-steps: {folder} {what}, not a CheckpointManager folder",
        "pass the folder that holds the numbered step folders (e.g. ckpts/ with 100/, 200/), "
        "or leave out --all-steps to convert a single checkpoint",
    )


def convert_all_steps(checkpoint: str | Path, out_dir: str | Path, options: ConvertOptions = ConvertOptions(),
                      *, module: Any = None, progress: Progress | None = None,
                      events: EventSink | None = None) -> AllStepsReport:
    """Convert every finished step of ``checkpoint`` into ``out_dir/step_<n>/``, oldest first.

    ``events`` hears every step's conversion events (:mod:`writer.events`) as one run:
    see :class:`AcrossSteps`. Each step's checkpoint is opened once, by its conversion.

    Every destination is checked before anything is converted (a non-empty
    ``step_<n>/`` needs ``options.force``). A failing step stops the run with its
    ``ConversionError``; steps already written stay complete and valid.

    Example:
        >>> rep = convert_all_steps("ckpts/", "out/")                  # doctest: +SKIP
        >>> sorted(rep.reports), rep.reports[200].out_dir.as_posix()    # doctest: +SKIP
        ([100, 200], 'out/step_200')
    """
    if options.step is not None:
        raise ConversionError("BAD_OPTION", "--all-steps and --step exclude each other",
                              "use --step N for one step, or --all-steps for every step")
    out_dir = Path(out_dir)
    check_not_a_file(out_dir)
    finished, unfinished = list_steps(checkpoint)
    if not finished:
        raise ConversionError(
            "INCOMPLETE_CHECKPOINT",
            f"{checkpoint} holds only unfinished steps ({', '.join(map(str, sorted(unfinished)))})",
            "wait for the save to finish, or save again",
        )
    options.check()
    for step in sorted(finished):
        check_destination(step_dir(out_dir, step), options.force, Path(checkpoint))
    result = AllStepsReport(out_dir, checkpoint=Path(checkpoint), skipped={n: f"unfinished save ({p.name})" for n, p in sorted(unfinished.items())})
    done_bytes = 0
    relay = AcrossSteps(events, len(finished)) if events is not None else None
    for step in sorted(finished):
        if relay is not None:
            relay.begin(step)
        report = convert(checkpoint, step_dir(out_dir, step), dataclasses.replace(options, step=step),
                         module=module, progress=_step_progress(progress, step, done_bytes), events=relay)
        result.reports[step] = report
        done_bytes += sum(_shard_bytes(report))
    return result


class AcrossSteps:
    """Relays the conversion events of each step as those of one run over all steps.

    Every event gains ``"step"``; tensor events count on from the steps before, and their
    totals are estimated from the current step's exact totals times the steps still to go,
    so one progress bar spans the run without reading any checkpoint twice.

    Example:
        >>> seen = []; relay = AcrossSteps(seen.append, steps=2)
        >>> relay.begin(100); relay({"type": "tensor", "name": "d/kernel", "index": 1, "count": 1,
        ...                            "bytes": 8, "total_bytes": 8})
        >>> relay.begin(200); relay({"type": "tensor", "name": "d/kernel", "index": 1, "count": 1,
        ...                            "bytes": 8, "total_bytes": 8})
        >>> [(e["name"], e["index"], e["count"], e["bytes"], e["total_bytes"]) for e in seen]
        [('step 100: d/kernel', 1, 2, 8, 16), ('step 200: d/kernel', 2, 2, 16, 16)]
    """

    def __init__(self, sink: EventSink, steps: int) -> None:
        self.sink = sink
        self.steps_left = steps + 1  # begin() counts the first step
        self.step: int | None = None
        self.tensors = self.bytes = 0  # finished by the steps before
        self.step_tensors = self.step_bytes = 0  # of the current step so far

    def begin(self, step: int) -> None:
        """The next step's conversion starts."""
        self.tensors += self.step_tensors
        self.bytes += self.step_bytes
        self.step_tensors = self.step_bytes = 0
        self.steps_left -= 1
        self.step = step

    def __call__(self, event: dict) -> None:
        if event.get("type") == "tensor":
            self.step_tensors, self.step_bytes = event["index"], event["bytes"]
            event = {**event, "name": f"step {self.step}: {event['name']}",
                     "index": self.tensors + event["index"],
                     "count": self.tensors + event["count"] * self.steps_left,
                     "bytes": self.bytes + event["bytes"],
                     "total_bytes": self.bytes + event["total_bytes"] * self.steps_left}
        self.sink({**event, "step": self.step})


def _step_progress(progress: Progress | None, step: int, base: int) -> Progress | None:
    """One bar across all steps: name the step, count bytes on from the steps before."""
    if progress is None:
        return None
    return lambda name, written: progress(f"step {step}: {name}", base + written)


def _shard_bytes(report: Report) -> list[int]:
    return [(report.out_dir / name).stat().st_size for name in report.shards if (report.out_dir / name).is_file()]
