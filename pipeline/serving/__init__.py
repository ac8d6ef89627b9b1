"""The torch-free side: `predict` and its inputs, `ship` (Triton), `serve` (the v2 protocol)."""
