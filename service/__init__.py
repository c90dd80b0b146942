"""Online serving: FastAPI app over an ONNX model bundle."""
