"""Every command-line flag, declared once, and the options it becomes.

The commands (:mod:`writer.commands`) share these groups: the model flags
(``--module``, ``--input-shape``, ...), the comparison flags of ``verify`` and
``convert --verify``, the weight flags and the output flags. Choices and
defaults come from their owners: :class:`writer.convert.ConvertOptions`,
:data:`writer.quantize.QUANTIZE_DTYPES`, :data:`writer.presets.PRESETS`,
:data:`topology.infer.POOL_CHOICES` and :data:`writer.tfjs_node.BACKENDS`. The comparison
flags default to None, so that :class:`writer.verify.VerifyOptions` fills in its own
defaults (and a conversion never imports verify). Values argparse cannot check are
checked once, by the options themselves (``error[BAD_OPTION]``).

Example:
    >>> parser = OptionParser(prog="demo")
    >>> add_model_options(parser)
    >>> options = convert_options(parser.parse_args(["--input-shape", "28,28,1", "--pool", "max"]))
    >>> options.input_shape, options.pool, options.activation
    ((28, 28, 1), 'max', 'relu')
"""
from __future__ import annotations

import argparse
from typing import Any

from topology.infer import POOL_CHOICES
from topology.vocabulary.errors import ConversionError
from writer.convert import FORMATS, INPUT_DTYPES, ConvertOptions
from writer.option_parser import OptionParser
from writer.presets import PRESETS, preset_fields
from writer.provenance import metadata_options
from writer.quantize import QUANTIZE_DTYPES
from writer.tfjs_node import BACKENDS


def default_of(options: type, name: str) -> Any:
    """The default of field ``name`` of the options dataclass ``options``.

    Example:
        >>> default_of(ConvertOptions, "weight_shard_size_bytes")
        4194304
    """
    return options.__dataclass_fields__[name].default


def command_parser(prog: str, description: str, epilog: str) -> OptionParser:
    """The parser of one command, its examples (``epilog``) printed as written."""
    return OptionParser(prog=prog, description=description, epilog=epilog,
                        formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_shape(text: str) -> tuple[int, ...]:
    """``--input-shape``: ``28,28,1`` (or ``28x28x1``); ``scalar`` or empty for one number per example.

    Example:
        >>> parse_shape("28x28x1"), parse_shape("scalar")
        ((28, 28, 1), ())
    """
    if text.strip() in ("", "scalar"):  # one number per example (e.g. sequence lengths): shape ()
        return ()
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 28,28,1") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 28,28,1")
    return shape


def add_model_options(parser: argparse.ArgumentParser, shape_help: str = "default: solved from the parameters",
                      all_steps: bool = False) -> None:
    """The topology flags: ``--module``, ``--input-shape``, ``--input-dtype``, ``--activation``, ``--pool``,
    ``--step`` (and ``--all-steps``), ``--no-fix``: the same for convert, inspect, verify and
    export-savedmodel, so that a user's convert flags can be copied to verify."""
    model = parser.add_argument_group("topology (traced from --module, else inferred from the parameter tree)")
    model.add_argument("--module", metavar="FILE.py:NAME", help="model code: a Linen/NNX module class, instance or "
                       "zero-argument factory, as path/to/model.py:Name or package.module:Name")
    model.add_argument("--call", metavar="'METHOD(*, key=value)'",
                       help="how the module is called, written like the call with * for each input array (in "
                            "--input-shape order), e.g. 'encode(*, train=False)' or '__call__(inputs=*, mask=*)'; "
                            "an input passed by keyword is named after it (default: __call__ with every input "
                            "positional, inference flags like train=False added)")
    model.add_argument("--method", metavar="NAME", help="call this method instead of __call__ (short for --call NAME)")
    model.add_argument("--input-shape", type=parse_shape, action="append", metavar="SHAPE",
                       help=f"input shape without batch, e.g. 28,28,1 (repeat for several inputs; {shape_help})")
    model.add_argument("--input-dtype", choices=INPUT_DTYPES, action="append",
                       metavar="{" + ",".join(INPUT_DTYPES) + "}",
                       help="input dtype (int32 for token ids); once for all inputs, or once per --input-shape")
    activation = default_of(ConvertOptions, "activation")
    model.add_argument("--activation", default=activation, help=f"activation between layers (default {activation})")
    pool = default_of(ConvertOptions, "pool")
    model.add_argument("--pool", default=pool, choices=POOL_CHOICES, help=f"pooling after each conv (default {pool})")
    model.add_argument("--step", type=int, help="checkpoint step to read (default: newest)")
    if all_steps:
        model.add_argument("--all-steps", action="store_true",
                           help="convert every step of a CheckpointManager or checkpoint_<N> folder into OUT/step_<N>/")
    model.add_argument("--no-fix", dest="fix", action="store_false",
                       help="report fixable mismatches (keys, shapes, dtypes) as errors instead of repairing them")


def add_optimize_option(parser: argparse.ArgumentParser) -> None:
    """``--optimize/--no-optimize``."""
    parser.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=default_of(ConvertOptions, "optimize"),
                        help="exact graph rewrites: fold BatchNorm into Dense/Conv, drop Dropout and identities, fuse "
                             "activations, merge Rescaling layers (default on; --no-optimize writes the literal graph)")


def add_format_option(parser: argparse.ArgumentParser) -> None:
    """``--format layers-model|graph-model|auto``."""
    default = default_of(ConvertOptions, "format")
    parser.add_argument("--format", choices=FORMATS, default=default,
                        help=f"what to write (default {default}): a Keras-layers LayersModel, a GraphModel of TF ops "
                             "traced from the jaxpr (needs --module; any JAX ops, often faster), or auto: a LayersModel "
                             "when the model can be one, else a GraphModel (docs/graph-model.md)")


def add_weight_options(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--quantize``, ``--quantize-weights``, ``--weight-shard-size-bytes``, ``--allow-nonfinite``,
    ``--allow-sparse``."""
    weights = parser.add_argument_group("weights")
    weights.add_argument("--preset", choices=tuple(PRESETS), help="web: float16 + 4 MiB shards; mobile: uint8 + "
                         "1 MiB shards + optimisation (explicit options win)")
    weights.add_argument("--quantize", choices=QUANTIZE_DTYPES, help="store weights quantized")
    weights.add_argument("--quantize-weights", action="append", default=[], metavar="PATTERN",
                         help="only quantize weights whose <layer>/<weight> name matches (wildcards; repeatable)")
    weights.add_argument("--weight-shard-size-bytes", type=int, metavar="N",
                         help=f"shard file size (default {default_of(ConvertOptions, 'weight_shard_size_bytes')})")
    weights.add_argument("--allow-nonfinite", action="store_true", help="write NaN/Inf weights instead of refusing")
    weights.add_argument("--allow-sparse", action="store_true",
                         help="write more than 100x the checkpoint's stored bytes + 16 MiB (a legitimately sparse "
                              "checkpoint, e.g. zero-filled tensors saved compressed); refused by default")


def add_samples_option(group: argparse._ArgumentGroup, default: int | None, help_text: str) -> None:
    """``--samples N``."""
    group.add_argument("--samples", type=int, default=default, metavar="N", help=help_text)


def add_seed_option(group: argparse._ArgumentGroup, default: int | None = None) -> None:
    """``--seed``: of the random inputs (None: VerifyOptions' own default, 0)."""
    group.add_argument("--seed", type=int, default=default, help="seed of the random inputs (default 0)")


def add_tolerance_option(group: argparse._ArgumentGroup, help_text: str) -> None:
    """``--tolerance T`` (the default depends on the weights' quantization: see VerifyOptions)."""
    group.add_argument("--tolerance", type=float, metavar="T", help=help_text)


def add_backend_option(group: argparse._ArgumentGroup, help_text: str = "TF.js backend in Node (default wasm)") -> None:
    """``--backend``: the TF.js backend in Node (unset: VerifyOptions' own default, wasm)."""
    group.add_argument("--backend", choices=BACKENDS, help=help_text)


def add_verify_options(group: argparse._ArgumentGroup) -> None:
    """The comparison flags of ``verify`` and ``convert --verify``."""
    group.add_argument("--data", metavar="FILE.npz", help="inputs x (and labels y) to compare on; default: random inputs")
    add_samples_option(group, None, "random samples (default 64), or the first N of --data")
    add_seed_option(group)
    add_backend_option(group)
    add_tolerance_option(group, "pass when max abs error <= T x max(1, max|JAX output|) (default 1e-4; "
                                "1e-2 for float16/uint16 weights, 5e-2 for uint8)")


def add_output_options(parser: argparse.ArgumentParser, json_help: str) -> argparse._ArgumentGroup:
    """``-q/--quiet``, ``--json``, ``--debug``."""
    out = parser.add_argument_group("output")
    out.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (no progress bars)")
    out.add_argument("--json", action="store_true", help=json_help)
    out.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return out


# ---------------------------------------------------------------------------------------------
# Parsed flags -> options


def input_dtype(args: argparse.Namespace) -> Any:
    """One dtype for all inputs, a list (one per ``--input-shape``), or None when ``--input-dtype`` is not given."""
    dtypes = getattr(args, "input_dtype", None)
    if not dtypes:
        return None  # ConvertOptions' default: float32, or int32 ids for an nn.Embed (reported)
    return dtypes[0] if len(dtypes) == 1 else dtypes


def input_shape(args: argparse.Namespace) -> Any:
    """None, one shape, or a list of shapes (several inputs)."""
    if not args.input_shape:
        return None
    return args.input_shape[0] if len(args.input_shape) == 1 else args.input_shape


def call_option(args: argparse.Namespace) -> str | None:
    """``--call`` text, or ``--method NAME`` as the call ``NAME`` (both at once: BAD_OPTION).

    Example:
        >>> call_option(argparse.Namespace(call=None, method="encode"))
        'encode'
    """
    call, method = getattr(args, "call", None), getattr(args, "method", None)
    if call is not None and method is not None:
        raise ConversionError("BAD_OPTION", f"--call {call!r} and --method {method} both say which method to call",
                              "give one: --method NAME, or --call 'NAME(*, key=value)'")
    return call if call is not None else method


def convert_options(args: argparse.Namespace, **extra: Any) -> ConvertOptions:
    """ConvertOptions from ``extra`` (e.g. :func:`weight_options`) and the model flags, which win
    (``--optimize`` too, where the command has it)."""
    fields = dict(extra)
    fields.update(input_shape=input_shape(args), input_dtype=input_dtype(args), module=args.module, call=call_option(args),
                  activation=args.activation, pool=args.pool, step=args.step, fix=args.fix,
                  optimize=getattr(args, "optimize", default_of(ConvertOptions, "optimize")),
                  format=getattr(args, "format", None) or fields.get("format") or default_of(ConvertOptions, "format"))
    return ConvertOptions(**fields)


def weight_options(args: argparse.Namespace) -> dict:
    """The weight fields of ConvertOptions: ``--preset``'s, overridden by the explicit flags.

    Example:
        >>> args = argparse.Namespace(preset="mobile", quantize=None, weight_shard_size_bytes=None, optimize=False,
        ...                           quantize_weights=["Dense*"], metadata=[], force=False, allow_nonfinite=False)
        >>> w = weight_options(args); w["quantize"], w["weight_shard_size_bytes"], w["optimize"]
        ('uint8', 1048576, False)
        >>> w["preset"]
        {'name': 'mobile', 'set': {'quantize': 'uint8', 'weight_shard_size_bytes': 1048576}, 'overridden': ['optimize']}
    """
    fields = preset_fields(args.preset) if args.preset else {}
    given = {"quantize": args.quantize, "weight_shard_size_bytes": args.weight_shard_size_bytes,
             "optimize": getattr(args, "optimize", None)}
    preset = None
    if args.preset:  # what the preset set, and which of its options explicit flags replaced
        overridden = [name for name in fields if given.get(name) is not None and given[name] != fields[name]]
        preset = {"name": args.preset, "set": {k: v for k, v in fields.items() if k not in overridden},
                  "overridden": overridden}
    fields.setdefault("weight_shard_size_bytes", default_of(ConvertOptions, "weight_shard_size_bytes"))
    if args.quantize is not None:
        fields["quantize"] = args.quantize
    if args.weight_shard_size_bytes is not None:
        fields["weight_shard_size_bytes"] = args.weight_shard_size_bytes
    if getattr(args, "optimize", None) is not None:
        fields["optimize"] = args.optimize
    fields["quantize_weights"] = tuple(p for item in args.quantize_weights for p in item.split(",") if p)
    fields["metadata"] = metadata_options(args.metadata)
    fields.update(force=args.force, allow_nonfinite=args.allow_nonfinite, preset=preset,
                  allow_sparse=getattr(args, "allow_sparse", False), full_hash=getattr(args, "full_hash", False))
    return fields


def verify_fields(args: argparse.Namespace, comparison: bool = True) -> dict:
    """The :class:`writer.verify.VerifyOptions` fields given by the model flags and ``--backend`` (with
    ``comparison``: also ``--data``, ``--samples``, ``--seed``, ``--tolerance``); unset flags are left
    out, so VerifyOptions keeps its own defaults.

    Example:
        >>> args = argparse.Namespace(module=None, input_shape=[(8,)], activation="relu", pool="avg", step=None,
        ...                           backend=None, fix=True)
        >>> verify_fields(args, comparison=False)
        {'activation': 'relu', 'pool': 'avg', 'fix': True, 'input_shape': (8,)}
    """
    names = ("module", "activation", "pool", "step", "backend", "fix")
    names += ("data", "samples", "seed", "tolerance") if comparison else ()
    fields = {name: getattr(args, name) for name in names}
    fields["input_shape"] = input_shape(args)
    fields["call"] = call_option(args)
    if getattr(args, "input_dtype", None):  # checked against model.json's, like --input-shape
        fields["input_dtype"] = input_dtype(args)
    return {name: value for name, value in fields.items() if value is not None}
