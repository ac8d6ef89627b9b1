"""The baseline `bench --scoring` measures `predict` against: a 9-line pyarrow + onnxruntime script.

    python score_script.py csv|parquet MODEL.onnx INPUT OUTPUT ID_COLUMN FEATURE...

Reads the whole input (pyarrow.csv.read_csv / pyarrow.parquet.read_table), runs onnxruntime (CPU) on
the feature columns as one float32 matrix, writes ID_COLUMN, label (probability >= 0.5, as 0/1) and
probability (pyarrow.csv.write_csv / pyarrow.parquet.write_table). No checks at all: what a user
would write by hand. Prints its phases (read, inference, write; seconds) as JSON on stderr.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

fmt, model, src, dst, key, *features = sys.argv[1:]
t0 = time.perf_counter()
table = pacsv.read_csv(src) if fmt == "csv" else pq.read_table(src)
x = np.column_stack([table.column(f).to_numpy() for f in features]).astype(np.float32)
t1 = time.perf_counter()
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
p = session.run(None, {session.get_inputs()[0].name: x})[0][:, 0]
t2 = time.perf_counter()
out = pa.table({key: table.column(key), "label": (p >= 0.5).astype(np.int64), "probability": p})
pacsv.write_csv(out, dst) if fmt == "csv" else pq.write_table(out, dst)
t3 = time.perf_counter()
sys.stderr.write(json.dumps({"read": t1 - t0, "inference": t2 - t1, "write": t3 - t2}) + "\n")
