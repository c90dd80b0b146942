"""Stage 2, fitting: device choice, the training loop (incl. distillation and weight averaging), calibration, metrics."""
