"""The ONNX graph: the export (torch), the contract a shipped file must meet and its safe parsing
(torch-free)."""
