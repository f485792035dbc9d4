"""The dashboard's widgets, one per file; each has a `show(...)` that redraws it from the model."""
