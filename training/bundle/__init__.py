"""Stage 3, bundle: ONNX export (parity-checked), atomic bundle writer, training report, checkpoints, evaluation."""
