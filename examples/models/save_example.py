"""Save a randomly initialised checkpoint of one of the example models (for the guides).

    python -m examples.models.save_example bert bert_ckpt/       # Orbax folder
    python -m examples.models.save_example gpt2 gpt2.msgpack     # a .msgpack path: flax.serialization

Models: bert (BertClassifier, length 16), gpt2 (GPT2, length 16), lstm (LstmClassifier,
length 16), lm (TransformerLM, length 16, partitioned params). The weights are random:
train your own; the conversion does not care.
"""
from __future__ import annotations

import sys
from pathlib import Path

LENGTH = 16


def _model(name: str):
    import jax.numpy as jnp

    ones = jnp.ones((1, LENGTH), jnp.int32)
    if name == "bert":
        from examples.models.bert_classifier import BertClassifier
        return BertClassifier(), (ones, ones, ones)
    if name == "gpt2":
        from examples.models.gpt2_decoder import GPT2
        return GPT2(), (ones,)
    if name == "lstm":
        from examples.models.lstm_classifier import LstmClassifier
        return LstmClassifier(), (ones, jnp.full((1,), LENGTH, jnp.int32))
    if name == "lm":
        from examples.models.transformer_lm import TransformerLM
        return TransformerLM(), (ones,)
    raise SystemExit(f"unknown model {name!r}: choose bert, gpt2, lstm or lm")


def main(argv: list[str]) -> None:
    import flax
    import jax

    if len(argv) != 2:
        raise SystemExit(__doc__)
    model, example = _model(argv[0])
    variables = model.init(jax.random.PRNGKey(0), *example)
    out = Path(argv[1])
    if out.suffix == ".msgpack":
        out.write_bytes(flax.serialization.to_bytes(variables))
    else:
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(out.absolute(), variables)
    print(f"saved {argv[0]} -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
