"""The names of the file formats read and written (no imports, so the CLI's option choices cost nothing).

Read (`spec.tables`, `serving.inputs`): csv, parquet, jsonl (JSON Lines), json (one document), npy.
Written by `predict` (`serving.outputs`): csv, csv.gz, parquet, jsonl, json, and table (for a terminal).
"""

CSV, PARQUET, JSONL, JSON, NPY = "csv", "parquet", "jsonl", "json", "npy"
CSV_GZ, TABLE = "csv.gz", "table"
INPUT_FORMATS = (CSV, PARQUET, JSONL, JSON, NPY)
OUTPUT_FORMATS = (CSV, CSV_GZ, PARQUET, JSONL, JSON, TABLE)
