"""`star-export`: Hugging Face checkpoints (+ LoRA) -> GGUF + mmproj (quantized); SAM 2 -> ONNX -> TensorRT.

Not built yet (issue: star-export); this package holds its place in the layout.
"""
