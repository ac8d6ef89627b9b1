"""The artifact store: files and atomic writes, the typed manifest, the lock, strict JSON. Torch-free."""
