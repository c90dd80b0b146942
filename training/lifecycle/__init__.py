"""Stage 4, lifecycle: retrain a candidate, warm start from CURRENT, the promotion gate and its record."""
