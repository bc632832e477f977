"""granite_export: export Granite R2 (and BERT / XLM-R / ModernBERT) checkpoints to ONNX and OpenVINO, verified."""

from .pipeline import FORMATS, export_model, parse_formats

__all__ = ["FORMATS", "export_model", "parse_formats"]
