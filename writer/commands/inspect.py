"""``python -m writer inspect CKPT``: what a checkpoint holds, and the model a conversion would write.

The command's parser and its body, :func:`inspect_checkpoint` (also the studio's inspect).

Reads only metadata (shapes and dtypes of the lazy tensors), never weight data,
so inspecting a large checkpoint is instant. The report has four parts: the
detected format, the collections (which are converted, which are ignored and
why), the parameter tree with shape, dtype, parameter count and bytes for every
tensor and every subtree, and the layer graph that ``convert`` would write with
the same options (inferred from the tree, or traced from ``--module``) with its
assumptions. When no graph can be built the error is part of the report.

Example:
    >>> report = inspect_checkpoint("examples/mnist_ckpt")          # doctest: +SKIP
    >>> report.format, report.tree.params                            # doctest: +SKIP
    ('orbax', 824458)
    >>> print(report.render())                                        # doctest: +SKIP
    >>> build_inspect_parser().parse_args(["ck", "--all"]).all
    True
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from topology.graph import LayerGraph
from topology.vocabulary.errors import ConversionError, Notice, Notices
from topology.vocabulary.tensors import Checkpoint, TreePath, path_str
from topology.vocabulary.variables import Variables
from writer.convert import ConvertOptions, build_graph, choose_format, hf_folder_source
from writer.flags import add_format_option, add_model_options, add_optimize_option, add_output_options, command_parser, convert_options
from writer.graph_model import graph_model_summary
from writer.module_loader import instantiate, load_module_spec, user_code
from writer.option_parser import PROG
from writer.readers import read_checkpoint
from writer.sources import Source
from writer.term import Style, human_bytes, shape_text, table
from writer.variables import TRAINING_FIELDS, select_variables

INSPECT_EXAMPLES = f"""examples:
  {PROG} inspect examples/mnist_ckpt
  {PROG} inspect state.msgpack --all              # also list ignored subtrees (opt_state, ...)
  {PROG} inspect ckpt/ --depth 2                  # fold everything below two levels
  {PROG} inspect ckpt/ --module models/cnn.py:CNN --input-shape 28,28,1
  {PROG} inspect ckpt/ --json > tree.json          # schemas/inspect.schema.json
"""

def build_inspect_parser() -> argparse.ArgumentParser:
    """Arguments of ``inspect``.

    Example:
        >>> build_inspect_parser().parse_args(["ck", "--depth", "2"]).depth
        2
    """
    parser = command_parser(f"{PROG} inspect", "Show what a checkpoint holds: format, collections, the parameter tree "
                     "(shape, dtype, parameters and bytes per tensor and subtree) and the layer graph a conversion "
                     "would write, with its assumptions. Reads no weight data.", INSPECT_EXAMPLES)
    parser.add_argument("checkpoint", help="Flax msgpack file, Orbax folder or .npz")
    add_model_options(parser)
    add_optimize_option(parser)
    add_format_option(parser)
    view = add_output_options(parser, "print one JSON document (schemas/inspect.schema.json)")
    view.add_argument("--depth", type=int, metavar="N", help="list N levels of the tree (deeper levels are summed)")
    view.add_argument("--all", action="store_true", help="also list the inside of ignored subtrees (opt_state, ...)")
    return parser


def run_inspect(argv: Sequence[str]) -> int:
    """``inspect``; returns the exit status.

    Example:
        >>> run_inspect(["examples/mnist_ckpt", "--json"])   # doctest: +SKIP
        0
    """
    args = build_inspect_parser().parse_args(argv)
    if args.depth is not None and args.depth < 1:
        raise ConversionError("BAD_OPTION", f"--depth {args.depth}", "give 1 or more")
    with user_code("the model's code"):  # its sys.exit() is MODULE_EXITED, not a silent exit
        report = inspect_checkpoint(args.checkpoint, convert_options(args))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not args.quiet:
        print(report.render(Style(sys.stdout), depth=args.depth, expand_ignored=args.all))
    return 0


@dataclass
class TreeNode:
    """A node of the parameter tree: a group, a tensor or a scalar leaf, with subtree totals.

    ``status`` is ``converted`` (every tensor below is written), ``ignored``
    (none is) or ``partial``.

    Example:
        >>> leaf = TreeNode("bias", ("params", "Dense_0", "bias"), "tensor", (10,), "float32",
        ...                 params=10, bytes=40, tensors=1)
        >>> group = TreeNode("Dense_0", ("params", "Dense_0"), children=[leaf]); group.total()
        >>> group.params, group.bytes, group.tensors
        (10, 40, 1)
    """

    name: str
    path: TreePath
    kind: str = "group"  # "group" | "tensor" | "scalar"
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    value: Any = None  # scalars only (e.g. a TrainState's step)
    params: int = 0
    bytes: int = 0
    tensors: int = 0
    status: str = "converted"
    collection: str | None = None  # the model collection a converted tensor belongs to
    children: list["TreeNode"] = field(default_factory=list)

    def total(self) -> None:
        """Sum params, bytes and tensors of the subtree and settle its status (recursively)."""
        if self.kind != "group":
            return
        for child in self.children:
            child.total()
        self.params = sum(c.params for c in self.children)
        self.bytes = sum(c.bytes for c in self.children)
        self.tensors = sum(c.tensors for c in self.children)
        statuses = {c.status for c in self.children if c.kind != "scalar"}
        self.status = statuses.pop() if len(statuses) == 1 else ("partial" if statuses else "ignored")

    def to_json(self) -> dict:
        doc: dict[str, Any] = {"name": self.name, "path": path_str(self.path), "kind": self.kind,
                               "params": self.params, "bytes": self.bytes, "tensors": self.tensors,
                               "status": self.status}
        if self.kind == "tensor":
            doc.update(shape=list(self.shape), dtype=self.dtype, collection=self.collection)
        elif self.kind == "scalar":
            doc["value"] = _json_scalar(self.value)
        else:
            doc["children"] = [c.to_json() for c in self.children]
        return doc


@dataclass
class CollectionRow:
    """One collection the checkpoint holds and what a conversion does with it."""

    name: str
    status: str  # "converted" | "ignored"
    stored_at: str  # where in the tree it lives ("params", "target", "(root)")
    tensors: int
    params: int
    bytes: int
    reason: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "stored_at": self.stored_at, "tensors": self.tensors,
                "params": self.params, "bytes": self.bytes, "reason": self.reason}


@dataclass
class InspectReport:
    """Everything ``inspect`` found; :meth:`render` for people, :meth:`to_json` for scripts."""

    checkpoint: Path
    format: str
    step: int | None
    tree: TreeNode
    collections: list[CollectionRow]
    graph: LayerGraph | None = None
    topology: str | None = None  # "inferred" | "traced"
    graph_error: ConversionError | None = None
    notices: list[Notice] = field(default_factory=list)
    graph_model: dict | None = None  # with --format graph-model (or auto choosing it): what would be written

    def to_json(self) -> dict:
        graph = None
        if self.graph is not None:
            g = self.graph
            graph = {
                "topology": self.topology,
                "model_class": "Sequential" if g.is_chain() else "Functional",
                "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in g.inputs],
                "outputs": list(g.outputs),
                "layers": [{
                    "name": l.name, "class_name": l.class_name, "inputs": list(l.inputs),
                    "output_shape": None if l.output_shape is None else list(l.output_shape),
                    "params": l.param_count, "origin": l.origin,
                    "weights": [{"name": w.name, "shape": list(w.shape), "from": w.origin} for w in l.weights],
                } for l in g.layers],
                "param_count": g.param_count,
                "float32_bytes": g.param_count * 4,
            }
        error = None if self.graph_error is None else {
            "code": self.graph_error.code, "message": self.graph_error.message, "hint": self.graph_error.hint}
        return {
            "checkpoint": str(self.checkpoint), "format": self.format, "step": self.step,
            "totals": {"tensors": self.tree.tensors, "params": self.tree.params, "bytes": self.tree.bytes},
            "collections": [c.to_json() for c in self.collections],
            "tree": self.tree.to_json(),
            "graph": graph, "graph_error": error, "graph_model": self.graph_model,
            "notices": [n.to_json() for n in self.notices],
        }

    def render(self, style: Style | None = None, depth: int | None = None, expand_ignored: bool = False) -> str:
        """The report as aligned text; ignored subtrees are folded unless ``expand_ignored``.

        ``depth`` limits how many tree levels are listed (deeper levels are summed into their parent).
        """
        s = style or Style(enabled=False)
        step = f", step {self.step}" if self.step is not None else ""
        out = [f"{s.bold('checkpoint')}  {self.checkpoint} ({self.format}{step})",
               f"holds       {self.tree.tensors:,} tensors, {self.tree.params:,} parameters, "
               f"{human_bytes(self.tree.bytes)}", "", s.bold("collections")]
        rows = [("name", "stored at", "tensors", "params", "bytes", "")]
        for c in self.collections:
            what = "converted" if c.status == "converted" else f"ignored: {c.reason}"
            rows.append((c.name, c.stored_at, f"{c.tensors:,}", f"{c.params:,}", human_bytes(c.bytes), what))
        out.append(_tint(table(rows, right={2, 3, 4}, indent="  "), s, [c.status for c in self.collections]))
        out += ["", s.bold("parameter tree")]
        rows, statuses = [("path", "shape", "dtype", "params", "bytes")], [""]
        for child in self.tree.children:
            _tree_rows(child, 0, rows, statuses, depth, expand_ignored)
        out.append(_tint(table(rows, right={3, 4}, indent="  "), s, statuses[1:]))
        out.append("")
        if self.graph_model is not None:
            gm = self.graph_model
            ops = ", ".join(f"{op} {n}" for op, n in sorted(gm["ops"].items(), key=lambda item: (-item[1], item[0])))
            out += [f"{s.bold('GraphModel')} that would be written: {gm['nodes']} nodes, "
                    f"{gm['param_count']:,} parameters in {gm['parameters']} constants",
                    f"  ops: {ops}"]
        elif self.graph is not None:
            out += _graph_lines(self.graph, self.topology or "", s)
        elif self.graph_error is not None:
            out.append(s.bold("layer graph") + ": " + s.red("cannot be built"))
            out += ["  " + line for line in self.graph_error.render().splitlines()]
        if self.notices:
            out += ["", s.bold("notices")]
            out += ["  " + (s.yellow(n.render()) if n.kind == "warning" else n.render()) for n in self.notices]
        return "\n".join(out)


def inspect_checkpoint(path: str | Path, options: ConvertOptions | None = None) -> InspectReport:
    """Inspect the checkpoint at ``path``; ``options`` is a :class:`writer.convert.ConvertOptions`
    (``module``, ``input_shape``, ``input_dtype``, ``activation``, ``pool``, ``step``, ``fix`` are used).

    Raises ConversionError only when the checkpoint cannot be read or the module
    cannot be loaded; a graph that cannot be built is reported in ``graph_error``.

    Example:
        >>> r = inspect_checkpoint("examples/mnist_ckpt")              # doctest: +SKIP
        >>> [c.name for c in r.collections], r.topology                # doctest: +SKIP
        (['params'], 'inferred')
    """
    options = options or ConvertOptions()
    options.check()
    module = _load_module(options.module)  # a bad --module is a usage error, before any reading
    hf_notice = None
    if module is None:  # a Hugging Face folder names its own class
        path, module, options, hf_notice = hf_folder_source(Path(path), options)
    checkpoint = read_checkpoint(path, options.step)
    try:
        notices = Notices()
        if hf_notice:
            notices.assume("HF_FOLDER", hf_notice)
        variables, select_error = None, None
        try:
            variables = select_variables(checkpoint, notices, options.fix)
        except ConversionError as err:
            select_error = err
        tree, collections = _tree(checkpoint, variables)
        report = InspectReport(checkpoint.path, checkpoint.format, checkpoint.step, tree, collections,
                               graph_error=select_error)
        if variables is not None:
            source = Source(checkpoint.path.name, checkpoint.format, variables, module, checkpoint.step,
                            checkpoint.path, checkpoint=checkpoint)
            try:
                graphdef, _, traced = (choose_format(source, options, notices) if options.format != "layers-model"
                                       else (None, [], None))
                if graphdef is not None:
                    report.graph_model = graph_model_summary(graphdef)
                else:
                    report.graph, report.topology = build_graph(source, options, notices, traced=traced)
            except ConversionError as err:
                report.graph_error = err
        report.notices = list(notices.items)
        return report
    finally:
        checkpoint.close()


def _load_module(spec: Any) -> Any:
    if spec is None:
        return None
    return load_module_spec(spec) if isinstance(spec, str) else instantiate(spec)


def _tree(checkpoint: Checkpoint, variables: Variables | None) -> tuple[TreeNode, list[CollectionRow]]:
    # Key fixes may rename tensors (keeping their loader), so match by loader, then by path.
    used: dict[Any, str] = {}
    if variables is not None:
        for collection, refs in variables.collections.items():
            for ref in refs.values():
                used[ref.path] = collection
                if ref.loader is not None:
                    used[id(ref.loader)] = collection
    root = TreeNode(checkpoint.path.name, ())
    index: dict[TreePath, TreeNode] = {(): root}

    def parent_of(path: TreePath) -> TreeNode:
        node = index.get(path)
        if node is None:
            node = TreeNode(path[-1], path)
            index[path] = node
            parent_of(path[:-1]).children.append(node)
        return node

    for path, ref in checkpoint.tensors.items():
        collection = (used.get(id(ref.loader)) if ref.loader is not None else None) or used.get(path)
        leaf = TreeNode(path[-1] if path else "(value)", path, "tensor", tuple(ref.shape), ref.dtype_name,
                        params=ref.size, bytes=ref.nbytes, tensors=1,
                        status="converted" if collection else "ignored", collection=collection)
        parent_of(path[:-1]).children.append(leaf)
    for path, value in checkpoint.scalars.items():
        parent_of(path[:-1]).children.append(TreeNode(path[-1] if path else "(value)", path, "scalar", value=value,
                                                      status="ignored"))
    root.total()
    return root, _collections(root, variables)


def _collections(root: TreeNode, variables: Variables | None) -> list[CollectionRow]:
    rows = []
    if variables is not None:
        for name, refs in variables.collections.items():
            # Where the collection sits: each tensor's stored path minus its path inside the collection.
            prefixes = Counter(ref.path[:len(ref.path) - len(key)] if ref.path[len(ref.path) - len(key):] == key else ()
                               for key, ref in refs.items())
            prefix = prefixes.most_common(1)[0][0] if prefixes else ()
            rows.append(CollectionRow(name, "converted", path_str(prefix) or "(root)", len(refs),
                                      sum(r.size for r in refs.values()), sum(r.nbytes for r in refs.values())))
    for child in root.children:
        if child.kind != "scalar" and child.status == "ignored":
            reason = ("training state" if child.name in TRAINING_FIELDS
                      else "not a model collection" if variables is not None else "no model variables found")
            rows.append(CollectionRow(child.name, "ignored", path_str(child.path), child.tensors, child.params,
                                      child.bytes, reason))
        elif child.kind == "group" and child.status == "partial":
            for grandchild in child.children:  # e.g. a variables dict saved under 'params'
                if grandchild.status == "ignored" and grandchild.kind != "scalar":
                    rows.append(CollectionRow(grandchild.name, "ignored", path_str(grandchild.path),
                                              grandchild.tensors, grandchild.params, grandchild.bytes,
                                              "not a model collection"))
    return rows


def _tree_rows(node: TreeNode, level: int, rows: list, statuses: list, depth: int | None, expand: bool) -> None:
    name = "  " * level + node.name
    if node.kind == "scalar":
        rows.append((f"{name} = {_json_scalar(node.value)}", "", "scalar", "", ""))
        statuses.append("ignored")
        return
    if node.kind == "tensor":
        rows.append((name, shape_text(node.shape), node.dtype, f"{node.params:,}", human_bytes(node.bytes)))
        statuses.append(node.status)
        return
    folded = (node.status == "ignored" and not expand) or (depth is not None and level + 1 >= depth)
    label = name + (f"  ({node.tensors:,} tensors, {'ignored' if node.status == 'ignored' else 'folded'})"
                    if folded else "")
    rows.append((label, "", "", f"{node.params:,}", human_bytes(node.bytes)))
    statuses.append(node.status)
    if not folded:
        for child in node.children:
            _tree_rows(child, level + 1, rows, statuses, depth, expand)


def _graph_lines(graph: LayerGraph, topology: str, s: Style) -> list[str]:
    how = "inferred from the parameter tree (template)" if topology == "inferred" else "traced from the module"
    kind = "Sequential" if graph.is_chain() else "Functional"
    out = [f"{s.bold('layer graph')} that would be written: {kind}, {how}"]
    for spec in graph.inputs:
        out.append(f"  input: {spec.name} {shape_text(spec.shape)} {spec.dtype}")
    chain = graph.is_chain()
    header = ("layer", "class", "output", "params", "from") if chain else ("layer", "class", "inputs", "output", "params", "from")
    rows = [header]
    for l in graph.layers:
        cells = [l.name, l.class_name, shape_text(l.output_shape), f"{l.param_count:,}", l.origin]
        if not chain:
            cells.insert(2, ", ".join(l.inputs))
        rows.append(tuple(cells))
    out.append(table(rows, right={3} if chain else {4}, indent="  "))
    out.append(f"  {graph.param_count:,} parameters, {human_bytes(graph.param_count * 4)} as float32; "
               f"output {', '.join(graph.outputs)}")
    return out


def _tint(text: str, s: Style, statuses: list[str]) -> str:
    """Dim the lines (after the header) whose status is ``ignored``."""
    lines = text.split("\n")
    for i, status in enumerate(statuses, start=1):
        if status == "ignored" and i < len(lines):
            lines[i] = s.dim(lines[i])
    return "\n".join(lines)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
