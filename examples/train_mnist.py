"""Train the Flax MNIST CNN on 8,000 real digits and save it as ``examples/mnist_ckpt``.

The model is the ``CNN`` of the official Flax (Linen) MNIST example, unchanged,
so the checkpoint has the parameter tree real users have: ``params/Conv_0``,
``Conv_1``, ``Dense_0``, ``Dense_1``, each with ``kernel`` and ``bias``.
Training uses Adam with fixed seeds on CPU and takes well under two minutes.

Run from the repository root (either form works)::

    python -m examples.train_mnist
    python examples/train_mnist.py --epochs 8 --out examples/mnist_ckpt

Example:
    >>> import jax, jax.numpy as jnp
    >>> params = CNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    >>> mnist_cnn_apply(params, jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
"""
from __future__ import annotations

import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script: make `examples` and `writer` importable from the repo root.
    sys.path.insert(0, str(_REPO_ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

DEFAULT_OUT = _REPO_ROOT / "examples" / "mnist_ckpt"
DEFAULT_ACCURACY_FILE = _REPO_ROOT / "examples" / "mnist_ckpt_accuracy.json"
DEFAULT_EPOCHS = 8
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
SEED = 0


class CNN(nn.Module):
    """The CNN of the official Flax MNIST example (flax/examples/mnist/train.py).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> v = CNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
        >>> sorted(v["params"])
        ['Conv_0', 'Conv_1', 'Dense_0', 'Dense_1']
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(features=32, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.Conv(features=64, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))  # flatten
        x = nn.Dense(features=256)(x)
        x = nn.relu(x)
        x = nn.Dense(features=10)(x)
        return x


def mnist_cnn_apply(params: dict, x: jax.Array) -> jax.Array:
    """Logits ``(n, 10)`` of :class:`CNN` with ``params`` for images ``x`` ``(n, 28, 28, 1)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> p = CNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
        >>> mnist_cnn_apply(p, jnp.ones((3, 28, 28, 1))).shape
        (3, 10)
    """
    return CNN().apply({"params": params}, x)


def accuracy(params: dict, x, y, batch_size: int = 500) -> float:
    """Fraction of images in ``x`` whose arg-max logit equals the label in ``y``.

    Example:
        >>> import numpy as np, jax, jax.numpy as jnp
        >>> p = CNN().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
        >>> 0.0 <= accuracy(p, np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int32)) <= 1.0
        True
    """
    apply = jax.jit(mnist_cnn_apply)
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = apply(params, jnp.asarray(x[start:start + batch_size]))
        correct += int((jnp.argmax(logits, axis=-1) == jnp.asarray(y[start:start + batch_size])).sum())
    return correct / len(x)


def train(epochs: int = DEFAULT_EPOCHS, seed: int = SEED, log=print) -> tuple[dict, float]:
    """Train :class:`CNN` on the 8,000 training digits; return ``(params, test_accuracy)``.

    Example:
        >>> params, acc = train(epochs=1)                          # doctest: +SKIP
        >>> acc > 0.9                                               # doctest: +SKIP
        True
    """
    import numpy as np
    import optax

    from examples.mnist_data import load_mnist

    x_train, y_train, x_test, y_test = load_mnist()
    model = CNN()
    params = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
    optimizer = optax.adam(LEARNING_RATE)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, images, labels):
        def loss_fn(p):
            logits = model.apply({"params": p}, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # NumPy's legacy RandomState is frozen across versions: the batch order never changes.
    rng = np.random.RandomState(seed)
    steps_per_epoch = len(x_train) // BATCH_SIZE  # drop the ragged tail: one jit shape only
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(steps_per_epoch):
            idx = order[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]
            params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
            losses.append(loss)
        log(f"epoch {epoch}/{epochs}: train loss {float(jnp.mean(jnp.stack(losses))):.4f}, "
            f"test accuracy {accuracy(params, x_test, y_test):.4f}")
    return params, accuracy(params, x_test, y_test)


def save_checkpoint(params: dict, out: Path) -> None:
    """Save ``{'params': params}`` with Orbax's StandardCheckpointer into ``out``, replacing it.

    Example:
        >>> save_checkpoint(params, Path("/tmp/mnist_ckpt"))       # doctest: +SKIP
    """
    import orbax.checkpoint as ocp

    # The jax.Arrays exactly as training left them, so the folder looks like a user's
    # checkpoint (with its _sharding file), not a hand-tidied one.
    with ocp.StandardCheckpointer() as checkpointer:
        # force=True replaces an existing folder whole: no stale files from an older run.
        checkpointer.save(Path(out).resolve(), {"params": params}, force=True)
        checkpointer.wait_until_finished()


def main(argv: list[str] | None = None) -> int:
    """Train, save the checkpoint and write the accuracy record; return an exit status.

    Example:
        >>> main(["--epochs", "1", "--out", "/tmp/ck", "--accuracy-file", "/tmp/a.json"])  # doctest: +SKIP
        0
    """
    import argparse
    import json
    import time

    import flax

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--accuracy-file", type=Path, default=DEFAULT_ACCURACY_FILE)
    args = parser.parse_args(argv)

    from topology.vocabulary.errors import ConversionError

    started = time.perf_counter()
    try:
        params, test_accuracy = train(args.epochs)
    except ConversionError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_status
    seconds = time.perf_counter() - started
    save_checkpoint(params, args.out)
    record = {
        "test_accuracy": round(test_accuracy, 6),
        "n_test": 2000,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": f"adam(lr={LEARNING_RATE})",
        "seed": SEED,
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
    }
    args.accuracy_file.write_text(json.dumps(record, indent=2) + "\n")
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"test accuracy {test_accuracy:.4f} on 2000 held-out digits; "
          f"trained in {seconds:.1f} s; checkpoint {args.out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
