"""What a conversion did, for people (``render``) and scripts (``to_json``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from topology.graph import InputSpec
from topology.vocabulary.errors import Notice
from writer.term import human_bytes


@dataclass(frozen=True)
class LayerRow:
    """One written layer as the report lists it."""

    name: str
    class_name: str
    output_shape: tuple | None
    params: int
    origin: str


@dataclass
class Report:
    """The result of one conversion.

    Example:
        >>> r = Report(Path("out"), Path("ck"), "orbax", None, [], [], 0, 0, [], None, 0, [], 0.1)
        >>> r.to_json()["format"]
        'orbax'
    """

    out_dir: Path
    source: Path
    format: str
    step: int | None
    inputs: list[InputSpec]
    layers: list[LayerRow]
    param_count: int
    bytes_written: int  # model.json + shards
    shards: list[str]
    quantization: str | None
    quantized_weights: int
    notices: list[Notice] = field(default_factory=list)
    seconds: float = 0.0
    topology: str = "inferred"
    optimized: bool = False  # --optimize was on
    rewrites: list[dict] = field(default_factory=list)  # what it changed (topology/optimize/)
    preset: dict | None = None  # --preset: {"name", "set": the options it set, "overridden": flags given instead}

    def to_json(self) -> dict:
        return {
            "out_dir": str(self.out_dir), "source": str(self.source), "format": self.format, "step": self.step,
            "topology": self.topology,
            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in self.inputs],
            "layers": [{"name": l.name, "class_name": l.class_name,
                        "output_shape": None if l.output_shape is None else list(l.output_shape),
                        "params": l.params, "origin": l.origin} for l in self.layers],
            "param_count": self.param_count, "bytes_written": self.bytes_written, "shards": self.shards,
            "quantization": self.quantization, "quantized_weights": self.quantized_weights,
            "notices": [n.to_json() for n in self.notices], "seconds": round(self.seconds, 4),
            "optimize": {"enabled": self.optimized, "rewrites": self.rewrites},
            "preset": self.preset,
        }

    def render(self) -> str:
        """A concise, aligned text report."""
        step = f", step {self.step}" if self.step is not None else ""
        lines = [f"converted {self.source} ({self.format}{step}) -> {self.out_dir}"]
        inputs = ", ".join(f"{i.name} {_shape(i.shape)} {i.dtype}" for i in self.inputs)
        lines.append(f"input: {inputs}")
        rows = [("layer", "class", "output", "params")]
        rows += [(l.name, l.class_name, _shape(l.output_shape), f"{l.params:,}") for l in self.layers]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            lines.append("  " + "  ".join(
                cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))
            ).rstrip())
        quant = f", {self.quantized_weights} weights quantized to {self.quantization}" if self.quantization else ""
        lines.append(
            f"{self.param_count:,} parameters, {human_bytes(self.bytes_written)} written in "
            f"{len(self.shards)} shard{'s' if len(self.shards) != 1 else ''} + model.json{quant}"
        )
        if self.preset:
            lines.append(render_preset(self.preset))
        for notice in self.notices:
            lines.append(notice.render())
        lines += render_rewrites(self.rewrites)
        lines.append(f"done in {self.seconds:.2f} s")
        return "\n".join(lines)


def render_preset(preset: dict) -> str:
    """The report line of ``--preset``: the options it set, and those given explicitly instead.

    Example:
        >>> render_preset({"name": "mobile", "set": {"quantize": "uint8", "weight_shard_size_bytes": 1048576,
        ...                "optimize": True}, "overridden": []})
        'preset[mobile]: set --quantize uint8 --weight-shard-size-bytes 1048576 (1.0 MiB) --optimize'
        >>> render_preset({"name": "web", "set": {"weight_shard_size_bytes": 4194304}, "overridden": ["quantize"]})
        'preset[web]: set --weight-shard-size-bytes 4194304 (4.0 MiB); given explicitly instead: --quantize'
    """
    flags = []
    for name, value in preset["set"].items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif name == "weight_shard_size_bytes":
            flags.append(f"{flag} {value} ({human_bytes(value)})")
        else:
            flags.append(f"{flag} {value}")
    line = f"preset[{preset['name']}]: set " + (" ".join(flags) or "nothing")
    if preset.get("overridden"):
        line += "; given explicitly instead: " + " ".join("--" + n.replace("_", "-") for n in preset["overridden"])
    return line


def render_rewrites(rewrites: list[dict], indent: str = "") -> list[str]:
    """One line per rewrite --optimize applied (shared with the verify report).

    Example:
        >>> render_rewrites([{"rewrite": "fold_batchnorm", "removed": "BatchNorm_0", "into": "Conv_0"}])
        ['optimized[fold_batchnorm]: BatchNorm_0 -> Conv_0']
    """
    return [f"{indent}optimized[{r['rewrite']}]: {r['removed']} -> {r['into']}" for r in rewrites]


def _shape(shape: tuple | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
