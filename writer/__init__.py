"""flax2tfjs: JAX/Flax checkpoints and modules -> TensorFlow.js LayersModels, without TensorFlow.

Importing this package is cheap: nothing heavy (jax, tensorstore) is imported
until a conversion needs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from writer.errors import ConversionError
from writer.version import __version__

__all__ = ["ConversionError", "__version__", "to_tensorflowjs"]


def to_tensorflowjs(source: str | Path, out_dir: str | Path, **options: Any):
    """Convert ``source`` (a checkpoint path) into a TF.js LayersModel in ``out_dir``.

    ``options`` are the fields of :class:`writer.convert.ConvertOptions`
    (``input_shape``, ``quantize``, ``force``, ...). Returns a
    :class:`writer.report.Report`.

    Example:
        >>> from writer import to_tensorflowjs
        >>> report = to_tensorflowjs("examples/mnist_ckpt", "out", quantize="uint8")  # doctest: +SKIP
        >>> print(report.render())                                                    # doctest: +SKIP
    """
    from writer.convert import ConvertOptions, convert_checkpoint

    try:
        convert_options = ConvertOptions(**options)
    except TypeError as exc:
        raise ConversionError("BAD_OPTION", str(exc), "see help(writer.convert.ConvertOptions)") from exc
    return convert_checkpoint(source, out_dir, convert_options)
