"""Layer graphs: built from a parameter tree (or, later, by tracing a module) and emitted as Keras-2 JSON."""
