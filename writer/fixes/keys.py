"""Key fixes: paths in the checkpoint that name the right tensors differently.

Three stages, each declared below as a :class:`~writer.fixes.base.Fix`:

* :func:`normalise_paths` (no model needed): NNX ``<name>/value`` leaves,
  ``.value`` suffixes, flat keys joined with ``.`` or ``/``.
* :func:`unwrap` (no model needed): wrapper levels around the variables
  (flax.optim ``target``, one wrapper such as ``state/`` or ``model/``).
* :func:`match_layers` (with the model's expected variables): layers stored
  under other names are matched by their shape signature (the set of variable
  names and shapes), in model order when several layers share a signature;
  variables named as in PyTorch or Keras (``weight``, ``gamma``,
  ``running_mean``) are matched to Flax names; layers the model does not use
  are ignored with a warning. Anything ambiguous is an error listing the
  candidates; anything missing is an error naming the path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from topology.vocabulary.errors import ConversionError, Notices
from topology.vocabulary.misfit import Misfit
from writer.fixes.base import FixFamily, Tree, apply, listing, rename_paths
from writer.fixes.leaf import ExpectedLeaf
from topology.vocabulary.tensors import TensorRef, TreePath, path_str

KEYS = FixFamily("keys")
WRAPPER_REMOVED = KEYS.fixed(
    "WRAPPER_REMOVED", "a wrapper level around the variables (flax.optim 'target', or one level such as "
    "'state/' or 'model/' holding 'params') was removed",
    "save {'params': params} (and 'batch_stats') at the top level",
)
NESTED_PARAMS = KEYS.fixed(
    "NESTED_PARAMS", "params/params/...: a whole variables dict saved under 'params'; the extra level was removed",
    "save the variables dict itself, not {'params': variables}",
)
NNX_VALUE_LEAVES = KEYS.fixed(
    "NNX_VALUE_LEAVES", "NNX variables saved as <variable>/value leaves were read as the variables",
    "save nnx.state(model).to_pure_dict()",
)
BOXED_VALUE_LEAVES = KEYS.fixed(
    "BOXED_VALUE_LEAVES", "boxed parameters (nn.with_logical_partitioning, nn.Partitioned) saved as "
    "<variable>/value leaves were read as the variables",
    "save nn.meta.unbox(variables), or keep them boxed: both convert",
)
VALUE_SUFFIX = KEYS.fixed(
    "VALUE_SUFFIX", "'.value' suffixes on key names were removed", "save the keys without '.value'",
)
KEYS_SPLIT = KEYS.fixed(
    "KEYS_SPLIT", "flat keys joined with '.' or '/' (e.g. 'Dense_0.kernel') were split into a tree",
    "save a nested dict, or an .npz whose keys are joined with '/'",
)
LAYER_RENAMED = KEYS.fixed(
    "LAYER_RENAMED", "layers stored under other names were matched to the model's layers by their shape signature",
    "rename the checkpoint's layers to the model's names (or name the modules as in the checkpoint)",
)
VARIABLE_RENAMED = KEYS.fixed(
    "VARIABLE_RENAMED", "variables named as in PyTorch or Keras (weight, gamma, running_mean, ...) were matched "
    "to the Flax names (kernel, scale, mean, ...)",
    "rename the variables to the Flax names",
)

# Variable names other frameworks use -> the Flax names they stand for (only used when the
# Flax name is absent; PyTorch calls a Linear's kernel and a BatchNorm's scale both `weight`).
ALIASES = {
    "weight": ("kernel", "scale", "embedding"), "w": ("kernel",), "b": ("bias",), "gamma": ("scale",),
    "beta": ("bias",), "running_mean": ("mean",), "moving_mean": ("mean",), "running_var": ("var",),
    "moving_variance": ("var",), "embeddings": ("embedding",),
}
# Training counters stored beside weights (PyTorch BatchNorm): never part of a Flax model.
COUNTERS = {"num_batches_tracked"}
# Flax lists and integer keys arrive as '0', '1', ...; readers already make every key a string.
_WRAPPER_MARKERS = ("params",)
_TRAINING_LEAVES = {"rngs", "rng", "count", "key"}
_DIGITS = re.compile(r"(\d+)")


# --------------------------------------------------------------- path normalisation


def normalise_paths(tree: Tree, source: str, notices: Notices, enabled: bool) -> Tree:
    """Undo ways of writing paths that hide the tree: NNX value leaves, '.value' suffixes, flat keys.

    Example:
        >>> import numpy as np
        >>> t = {("Dense_0.kernel.value",): TensorRef(("Dense_0.kernel.value",), (2, 2), np.dtype("float32"), None)}
        >>> n = Notices(); list(normalise_paths(t, "m.npz", n, True)), [x.code for x in n.items]
        ([('Dense_0', 'kernel')], ['VALUE_SUFFIX', 'KEYS_SPLIT'])
    """
    for step in (_strip_value_suffix, _split_flat_keys, _strip_value_leaves, _strip_boxed_leaves):
        tree = step(tree, source, notices, enabled)
    return tree


def _strip_value_suffix(tree: Tree, source: str, notices: Notices, enabled: bool) -> Tree:
    if not any(part.endswith(".value") for path in tree for part in path):
        return tree
    renamed = {path: tuple(p[: -len(".value")] if p.endswith(".value") else p for p in path) for path in tree}
    example = next(path for path in tree if renamed[path] != path)
    return rename_paths(tree, renamed, VALUE_SUFFIX, f"{source}: keys ending in '.value' (e.g. {path_str(example)}) "
                        "read without the suffix", notices, enabled)


def _split_flat_keys(tree: Tree, source: str, notices: Notices, enabled: bool) -> Tree:
    # Only when every key is one flat component holding separators: a tree saved flattened.
    if not tree or not all(len(path) == 1 for path in tree):
        return tree
    for separator in ("/", "."):
        if all(separator in path[0] for path in tree):
            renamed = {path: tuple(p for p in path[0].split(separator) if p) for path in tree}
            example = next(iter(tree))[0]
            return rename_paths(tree, renamed, KEYS_SPLIT, f"{source}: flat keys such as {example!r} split at "
                                f"{separator!r} into a tree", notices, enabled)
    return tree


def _strip_value_leaves(tree: Tree, source: str, notices: Notices, enabled: bool) -> Tree:
    # nnx.state(model) saved with Orbax: every leaf is <module path>/<variable>/value.
    if not tree or not all(len(path) >= 2 and path[-1] in ("value", "raw_value") for path in tree):
        return tree
    example = next(iter(tree))
    return rename_paths(tree, {path: path[:-1] for path in tree}, NNX_VALUE_LEAVES,
                        f"{source}: NNX variable leaves such as {path_str(example)} read as "
                        f"{path_str(example[:-1])}", notices, enabled)


# Variable names Flax layers create; a boxed one is stored as <name>/value.
_BOXABLE = {"kernel", "bias", "embedding", "scale", "mean", "var"}


def _strip_boxed_leaves(tree: Tree, source: str, notices: Notices, enabled: bool) -> Tree:
    # A Linen tree of nn.Partitioned / LogicallyPartitioned boxes: only the boxed leaves end in
    # <kernel|bias|...>/value (state dicts keep the box's 'value' field), the others are plain.
    renamed = {path: path[:-1] if len(path) >= 3 and path[-1] == "value" and path[-2] in _BOXABLE else path
               for path in tree}
    if all(new == old for old, new in renamed.items()):
        return tree
    example = next(path for path in tree if renamed[path] != path)
    return rename_paths(tree, renamed, BOXED_VALUE_LEAVES, f"{source}: boxed (partitioned) variables such as "
                        f"{path_str(example)} read as {path_str(example[:-1])}", notices, enabled)


# --------------------------------------------------------------- wrapper levels


def unwrap(tree: Tree, source: str, notices: Notices, enabled: bool) -> Tree:
    """Remove wrapper levels above the variables: flax.optim ``target``, or one level holding ``params``.

    Several subtrees that each hold ``params`` (e.g. ``model/`` and ``ema_model/``)
    are ambiguous: AMBIGUOUS_PARAMS lists them.

    Example:
        >>> import numpy as np
        >>> ref = lambda p: TensorRef(p, (2,), np.dtype("float32"), None)
        >>> t = {("state", "params", "Dense_0", "bias"): ref(("state", "params", "Dense_0", "bias"))}
        >>> list(unwrap(t, "ck", Notices(), True))
        [('params', 'Dense_0', 'bias')]
    """
    for _ in range(4):  # a few levels at most: {'checkpoint': {'state': {'params': ...}}}
        top = _top_keys(tree)
        if "params" in top:
            return tree
        if "target" in top:  # flax.optim Optimizer: {'target': params, 'state': ...}
            apply(WRAPPER_REMOVED, f"{source} is a flax.optim checkpoint: parameters taken from 'target'",
                  notices, enabled)
            tree = _subtree(tree, "target")
            continue
        holders = sorted(key for key in top if _WRAPPER_MARKERS[0] in _top_keys(_subtree(tree, key)))
        if not holders:
            return tree
        if len(holders) > 1:
            raise ConversionError(
                "AMBIGUOUS_PARAMS",
                f"{source} holds several parameter trees: {listing([h + '/params' for h in holders])}; "
                "it is not clear which one is the model",
                f"save the one you want as the top-level 'params' (e.g. {{'params': ckpt['{holders[0]}']['params']}})",
            )
        apply(WRAPPER_REMOVED, f"{source}: variables wrapped in '{holders[0]}/': "
                               f"parameters taken from '{holders[0]}/params'", notices, enabled)
        tree = _subtree(tree, holders[0])
    return tree


def _top_keys(tree: Tree) -> set[str]:
    return {path[0] for path in tree if path}


def _subtree(tree: Tree, key: str) -> Tree:
    return {path[1:]: ref for path, ref in tree.items() if len(path) > 1 and path[0] == key}


# --------------------------------------------------------------- matching to the model


@dataclass
class _Layer:
    """The variables stored under one module path: leaf name -> (collection, tensor)."""

    path: TreePath
    leaves: dict[tuple[str, str], TensorRef] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return path_str(self.path) or "(top level)"


@dataclass
class Matched:
    """Every expected variable bound to a checkpoint tensor (shapes not yet checked)."""

    pairs: list[tuple[ExpectedLeaf, TensorRef]]


Compatible = Callable[[ExpectedLeaf, TensorRef], bool]


def match_layers(expected: list[ExpectedLeaf], checkpoint: dict[str, Tree], compatible: Compatible, *,
                 any_collection: bool, model_order: bool, checkpoint_order: bool, source: str,
                 notices: Notices, enabled: bool) -> Matched:
    """Bind each expected variable to a checkpoint tensor, renaming layers by shape signature.

    ``checkpoint`` maps collection -> {path: tensor}. ``compatible(leaf, tensor)``
    says whether a tensor can serve as ``leaf`` (same shape, or one a shape fix
    repairs). ``any_collection``: NNX keeps no collections, so a variable may
    be found in any (so may those of a collection the checkpoint lacks, e.g.
    the BatchNorm statistics of a PyTorch state dict). ``model_order`` /
    ``checkpoint_order``: whether the expected list and the checkpoint's
    storage keep the model's call order (Orbax sorts keys, so it does not);
    layers with the same signature are paired in that order, or by the numbers
    in their names, or not at all.

    Example:
        >>> import numpy as np
        >>> ck = {"params": {("fc", "kernel"): TensorRef(("fc", "kernel"), (4, 2), np.dtype("float32"), None)}}
        >>> exp = [ExpectedLeaf("params", ("Dense_0", "kernel"), (4, 2))]
        >>> m = match_layers(exp, ck, lambda l, t: l.shape == t.shape, any_collection=False, model_order=True,
        ...                  checkpoint_order=True, source="ck", notices=Notices(), enabled=True)
        >>> m.pairs[0][1].path
        ('fc', 'kernel')
    """
    wanted = _expected_layers(expected)
    stored = _stored_layers(checkpoint, notices, source)
    absent = {leaf.collection for leaf in expected if not checkpoint.get(leaf.collection)}
    lenient = {leaf.collection for leaf in expected} if any_collection else absent
    bound: dict[TreePath, dict[ExpectedLeaf, TensorRef]] = {}
    renamed_vars: list[str] = []
    used: set[TreePath] = set()
    unmatched: list[TreePath] = []
    for layer_path, leaves in wanted.items():
        layer = stored.get(layer_path)
        pairing = _pair_leaves(leaves, layer, compatible, lenient, False, any_collection) if layer else None
        if pairing is None:
            unmatched.append(layer_path)
            continue
        bound[layer_path], aliases = pairing
        renamed_vars += aliases
        used.add(layer_path)
    if unmatched:
        renames = _rename(unmatched, wanted, [p for p in stored if p not in used], stored, compatible, lenient,
                          any_collection, model_order, checkpoint_order, source)
        missing = [p for p in unmatched if p not in renames]
        if missing:
            raise _missing(missing, wanted, stored, absent, any_collection, source)
        for layer_path, (stored_path, pairing, aliases) in renames.items():
            bound[layer_path] = pairing
            renamed_vars += aliases
            used.add(stored_path)
        shown = [f"{path_str(renames[p][0])} -> {path_str(p)}" for p in unmatched]
        apply(LAYER_RENAMED, f"{source}: {len(shown)} layer(s) stored under other names, matched by their "
                             f"variable shapes: {listing(shown)}", notices, enabled)
    if renamed_vars:
        apply(VARIABLE_RENAMED, f"{source}: variables named as in other frameworks, matched to the Flax "
                                f"names: {listing(renamed_vars)}", notices, enabled)
    _warn_unused(stored, bound, source, notices)
    return Matched([(leaf, bound[leaf.layer][leaf]) for leaf in expected])


def _expected_layers(expected: list[ExpectedLeaf]) -> dict[TreePath, list[ExpectedLeaf]]:
    layers: dict[TreePath, list[ExpectedLeaf]] = {}
    for leaf in expected:
        layers.setdefault(leaf.layer, []).append(leaf)
    return layers


def _stored_layers(checkpoint: dict[str, Tree], notices: Notices, source: str) -> dict[TreePath, _Layer]:
    layers: dict[TreePath, _Layer] = {}
    counters = []
    for collection, tree in checkpoint.items():
        for path, ref in tree.items():
            if not path:
                continue
            if path[-1] in COUNTERS:
                counters.append(path_str((collection, *path)))
                continue
            layer = layers.setdefault(path[:-1], _Layer(path[:-1]))
            layer.leaves[(collection, path[-1])] = ref
    if counters:
        notices.assume("IGNORED_SUBTREE", f"{source}: training counters {listing(counters, 4)} are not converted")
    return layers


def _pair_leaves(leaves: list[ExpectedLeaf], layer: _Layer, compatible: Compatible, lenient: set[str],
                 exact: bool, quiet: bool) -> tuple[dict[ExpectedLeaf, TensorRef], list[str]] | None:
    """Bind a layer's expected variables to one stored layer's tensors, by name (or alias).

    ``exact``: the stored layer must hold nothing else and every tensor must be
    compatible (used when matching renamed layers by signature). ``quiet``: a
    variable found in another collection is not a rename (NNX has no collections).
    """
    by_name: dict[str, list[tuple[str, TensorRef]]] = {}
    for (collection, name), ref in layer.leaves.items():
        by_name.setdefault(name, []).append((collection, ref))
    pairing: dict[ExpectedLeaf, TensorRef] = {}
    aliases: list[str] = []
    taken: set[tuple[str, str]] = set()
    for leaf in leaves:
        name, found = leaf.name, _find(leaf, leaf.name, by_name, lenient)
        if found is None:
            alias_names = [n for n, flax_names in ALIASES.items() if leaf.name in flax_names and n in by_name]
            hits = [(n, f) for n in alias_names if (f := _find(leaf, n, by_name, lenient)) is not None]
            if len(hits) != 1:
                return None
            name, found = hits[0]
        collection, ref = found
        if (collection, name) in taken or (exact and not compatible(leaf, ref)):
            return None
        if name != leaf.name or (collection != leaf.collection and not quiet):
            aliases.append(f"{path_str((collection, *layer.path, name))} -> {leaf.where}")
        taken.add((collection, name))
        pairing[leaf] = ref
    if exact and len(taken) != len(layer.leaves):
        return None
    return pairing, aliases


def _find(leaf: ExpectedLeaf, name: str, by_name: dict[str, list[tuple[str, TensorRef]]],
          lenient: set[str]) -> tuple[str, TensorRef] | None:
    options = by_name.get(name, [])
    same = [o for o in options if o[0] == leaf.collection]
    if same:
        return same[0]
    if leaf.collection in lenient and len(options) == 1:
        return options[0]
    return None


def _rename(unmatched: list[TreePath], wanted: dict[TreePath, list[ExpectedLeaf]], free: list[TreePath],
            stored: dict[TreePath, _Layer], compatible: Compatible, lenient: set[str], quiet: bool, model_order: bool,
            checkpoint_order: bool, source: str) -> dict[TreePath, tuple[TreePath, dict, list[str]]]:
    """Pair layers the checkpoint lacks with stored layers nobody uses, by shape signature."""
    pairings: dict[tuple[TreePath, TreePath], tuple[dict, list[str]]] = {}
    candidates: dict[TreePath, list[TreePath]] = {}
    for layer_path in unmatched:
        candidates[layer_path] = []
        for stored_path in free:
            pairing = _pair_leaves(wanted[layer_path], stored[stored_path], compatible, lenient, True, quiet)
            if pairing is not None:
                candidates[layer_path].append(stored_path)
                pairings[(layer_path, stored_path)] = pairing
    result: dict[TreePath, tuple[TreePath, dict, list[str]]] = {}
    for wanted_group, stored_group in _components(unmatched, candidates):
        if not stored_group:
            continue  # nothing can stand in: reported as missing
        complete = all(set(candidates[w]) == set(stored_group) for w in wanted_group)
        if not complete or len(wanted_group) != len(stored_group):
            raise _ambiguous(wanted_group, candidates, source)
        if len(wanted_group) > 1:  # same signature: pair in model order, or refuse
            in_model = _ordered(wanted_group, model_order)
            in_checkpoint = _ordered(sorted(stored_group, key=free.index), checkpoint_order)
            if in_model is None or in_checkpoint is None:
                raise _ambiguous(wanted_group, candidates, source, order=True)
            wanted_group, stored_group = in_model, in_checkpoint
        for layer_path, stored_path in zip(wanted_group, stored_group):
            pairing, aliases = pairings[(layer_path, stored_path)]
            result[layer_path] = (stored_path, pairing, aliases)
    return result


def _components(unmatched: list[TreePath], candidates: dict[TreePath, list[TreePath]]):
    """Connected groups of (expected layers, stored layers) linked by compatibility, in model order."""
    seen: set[TreePath] = set()
    for start in unmatched:
        if start in seen:
            continue
        wanted_group, stored_group = [start], set(candidates[start])
        seen.add(start)
        grew = True
        while grew:
            grew = False
            for other in unmatched:
                if other not in seen and set(candidates[other]) & stored_group:
                    seen.add(other)
                    wanted_group.append(other)
                    stored_group |= set(candidates[other])
                    grew = True
        yield [p for p in unmatched if p in wanted_group], list(stored_group)


def _ordered(paths: list[TreePath], order_known: bool) -> list[TreePath] | None:
    """``paths`` in model order: as given when the order is known, else by the numbers in their names."""
    if order_known:
        return paths
    keys = [tuple(int(n) for n in _DIGITS.findall(path_str(p))) for p in paths]
    if any(not k for k in keys) or len(set(keys)) != len(keys):
        return None
    return [p for _, p in sorted(zip(keys, paths))]


def _ambiguous(wanted_group: list[TreePath], candidates: dict[TreePath, list[TreePath]], source: str,
               order: bool = False) -> ConversionError:
    lines = [f"{path_str(w)} could be {' or '.join(path_str(c) for c in candidates[w])}" for w in wanted_group]
    why = ("these layers have the same shapes and nothing tells their order (the checkpoint's storage order "
           "is not the model's and their names carry no numbers)" if order else
           "several stored layers have the shapes of one model layer")
    return Misfit(
        "AMBIGUOUS_LAYER_MATCH",
        f"the checkpoint {source} names its layers differently from the model and {why}: {listing(lines, 6)}",
        "rename the checkpoint's layers to the model's names, or drop extra copies (e.g. EMA) before saving",
    )


def _missing(missing: list[TreePath], wanted: dict[TreePath, list[ExpectedLeaf]], stored: dict[TreePath, _Layer],
             absent: set[str], any_collection: bool, source: str) -> ConversionError:
    leaves = []
    for path in missing:
        here = stored.get(path)
        names = {name for _, name in here.leaves} if here else set()
        lacking = [leaf for leaf in wanted[path] if leaf.name not in names] or wanted[path]
        leaves += lacking
    needed = [f"{leaf.where} {leaf.shape}" for leaf in leaves]
    lacking_collections = sorted({leaf.collection for leaf in leaves} & absent)
    if lacking_collections and not any_collection:
        collection = lacking_collections[0]
        in_it = [leaf for leaf in leaves if leaf.collection == collection]
        what = ("BatchNorm statistics" if collection == "batch_stats" else "variables") + f" in '{collection}'"
        return ConversionError(
            "MISSING_COLLECTION",
            f"the model needs {what} ({listing([f'{l.where} {l.shape}' for l in in_it], 6)}), "
            f"but {source} has no '{collection}' collection",
            "save {'params': ..., 'batch_stats': ...} (or the whole TrainState) after training"
            if collection == "batch_stats" else f"save the '{collection}' collection with the parameters",
        )
    first = missing[0]
    have = ""
    if stored.get(first) is not None:
        held = [f"{path_str((c, *first, n))} {tuple(r.shape)}" for (c, n), r in stored[first].leaves.items()]
        have = f" (under {path_str(first)} it has {listing(held, 4)})"
    return Misfit(
        "MISSING_PARAMETER",
        f"the model needs {listing(needed, 6)}, which {source} does not have{have}",
        "check that the checkpoint was saved from this model (same layers, names, use_bias, features)",
    )


def _warn_unused(stored: dict[TreePath, _Layer], bound: dict, source: str, notices: Notices) -> None:
    taken = {id(ref) for pairing in bound.values() for ref in pairing.values()}
    unused = [path_str((collection, *layer_path, name))
              for layer_path, layer in stored.items()
              for (collection, name), ref in layer.leaves.items() if id(ref) not in taken]
    if not unused:
        return
    if all(set(path.split("/")) & _TRAINING_LEAVES for path in unused):
        notices.assume("IGNORED_SUBTREE", f"{source}: random-number state {listing(unused, 4)} is not converted")
        return
    notices.warn("IGNORED_SUBTREE", f"{source}: {listing(unused, 6)} not used by the model and not converted "
                                    "(an EMA copy or an unused layer?)")
