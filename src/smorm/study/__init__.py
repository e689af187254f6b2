"""Studies: methods × seeds trained on one budget and compared on the dev benchmarks (``smorm study``)."""
