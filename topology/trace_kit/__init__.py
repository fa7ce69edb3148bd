"""The plugin kit of tracing: what layer kinds (``topology/layers/``) and op families (``topology/ops/``)
import to take part in a trace, and nothing that imports them.

``builder`` (the :class:`Builder` protocol handlers receive, and ``Deferred``), ``values`` (what a jaxpr
variable stands for: ``Tensor``, ``Pending``, ``Const``, ``Lazy``), ``traced`` (the ``Trace`` and its
marked layer calls), ``call_context`` (the call a kind's ``read_attrs`` reads), ``markers`` (the
primitives that bracket a layer call in the jaxpr), ``merged_batch`` (layers that follow a merged batch
axis) and ``errors`` (``unsupported``). The engine that imports every plugin and walks the jaxpr is
``topology/trace/``; this kit never imports it (``tests/test_architecture.py`` checks).
"""
