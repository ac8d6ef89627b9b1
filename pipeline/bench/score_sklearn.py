"""The peer `bench --scoring` measures `predict` against: pyarrow read + scikit-learn + pyarrow write.

    python score_sklearn.py MODEL.pickle INPUT.csv OUTPUT.csv ID_COLUMN FEATURE...

MODEL.pickle is a fitted scikit-learn classifier (bench writes it: an MLPClassifier with the model's
hidden sizes). Writes ID_COLUMN, label and probability (of the last class), as score_script.py does.
Prints its phases (read, inference, write; seconds) as JSON on stderr.
"""

import json
import pickle
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

model, src, dst, key, *features = sys.argv[1:]
t0 = time.perf_counter()
table = pacsv.read_csv(src)
x = np.column_stack([table.column(f).to_numpy() for f in features])
t1 = time.perf_counter()
with open(model, "rb") as f:
    clf = pickle.load(f)
p = clf.predict_proba(x)[:, -1]
t2 = time.perf_counter()
pacsv.write_csv(
    pa.table({key: table.column(key), "label": clf.classes_[(p >= 0.5).astype(int)], "probability": p}), dst
)
t3 = time.perf_counter()
sys.stderr.write(json.dumps({"read": t1 - t0, "inference": t2 - t1, "write": t3 - t2}) + "\n")
