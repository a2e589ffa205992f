"""The model: ONNX Runtime sessions and providers, tokenisation, pooling, prompts."""
