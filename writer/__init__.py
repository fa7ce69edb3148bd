"""flax2tfjs: JAX/Flax checkpoints and modules -> TensorFlow.js LayersModels, without TensorFlow.

Importing this package is cheap: nothing heavy (jax, tensorstore) is imported
until a conversion needs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from topology.vocabulary.errors import ConversionError
from writer.version import __version__

__all__ = ["ConversionError", "__version__", "to_tensorflowjs"]


def to_tensorflowjs(source: Any, out_dir: str | Path, *, module: Any = None, variables: Any = None, **options: Any):
    """Convert a Flax model into a TF.js LayersModel in ``out_dir``; returns a report.

    ``source`` may be a checkpoint path (with or without ``module=``), a Linen
    module with ``variables=``, a live NNX module, a flax TrainState, or a
    variables dict / FrozenDict / nnx.State with ``module=``. ``module`` may be
    a module instance, class, zero-argument factory, or "file.py:Name" string.
    ``options`` are the fields of :class:`writer.convert.ConvertOptions`
    (``input_shape``, ``input_dtype``, ``quantize``, ``force``, ...), the CLI's flags.

    Example:
        >>> from writer import to_tensorflowjs
        >>> report = to_tensorflowjs("examples/mnist_ckpt", "out", quantize="uint8")   # doctest: +SKIP
        >>> report = to_tensorflowjs(model, "out", variables=variables, input_shape=(28, 28, 1))  # doctest: +SKIP
        >>> print(report.render())                                                      # doctest: +SKIP
    """
    from writer.convert import ConvertOptions, convert  # numpy and the pipeline: `import writer` stays cheap

    try:
        convert_options = ConvertOptions(**options)
    except TypeError as exc:
        raise ConversionError("BAD_OPTION", str(exc), "see help(writer.convert.ConvertOptions)") from exc
    return convert(source, out_dir, convert_options, module=module, variables=variables)
