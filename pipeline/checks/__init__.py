"""Running a model and comparing: one runner type with provider truth (torch-free at import), and
`verify` / `serve-check`."""
