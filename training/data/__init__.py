"""Stage 1, data: dataset specs, streaming readers, vocabulary/statistics, encoded splits, synthetic data."""
