"""ONNX export and the ONNX Runtime engine (the ``[onnx]`` extra: onnx, onnxruntime, onnxscript).

- :mod:`bsmamba2.onnx.graph`: what the exported graph computes and the metadata it carries (format version 1);
- :mod:`bsmamba2.model.mixers.ssd_export`: the export-friendly chunked SSD, the Mamba2 backend ``"export"``;
- :mod:`bsmamba2.onnx.exporter`: ``export_onnx(model, path)`` (torch.export + the dynamo ONNX exporter);
- :mod:`bsmamba2.onnx.optimizer`: the exporter's graph optimisation, without onnxscript's quadratic matcher;
- :mod:`bsmamba2.onnx.runtime`: ``OnnxModel(path)``, an exported file behind the torch model's interface;
- :mod:`bsmamba2.onnx.quantize`: ``quantize_int8(src, dst)``, the opt-in int8 file (``bsmamba2 export --int8``);
- :mod:`bsmamba2.cli.export`: ``bsmamba2 export``.

Nothing is imported here, so ``import bsmamba2.onnx.graph`` does not load onnxruntime.
"""
