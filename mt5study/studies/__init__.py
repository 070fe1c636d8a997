"""Studies: gradient noise scale (`noise`), pruned batch-size x learning-rate search (`search`)."""
