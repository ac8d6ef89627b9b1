"""Train small PyTorch MLPs, export them to ONNX, and prove the shipped file computes what was trained.

Stages, one module each: `train` (with the accuracy gate in `validate`), `export`, `verify`
(serve-check and the cross-runtime report share its engine), `predict` (torch-free inference),
`bench`, `ship`. Shared pieces: `archs` (architectures), `artifacts` (files, manifest, locking),
`runtime` (onnxruntime sessions and provider truth), `errors` (the one exception family).
"""
