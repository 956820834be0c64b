"""`star-export`: Hugging Face checkpoints (+ LoRA) -> GGUF + mmproj (quantized); SAM 2 -> ONNX (-> TensorRT),
as a verified bundle the engine opens. The Python API is `export.api.make_bundle`."""
