"""The baseline of `bench`'s whole-process comparison: what a user would write without this tool.

Trains the tutorial's shallow MLP with the tutorial's loop, exports it with `torch.onnx.export`
(dynamo), and runs it once in onnxruntime. No gate, no checks, no versions. Standalone on purpose (it
imports nothing from `pipeline`): `python pipeline/naive_all.py OUT.onnx`.
"""

import sys

import numpy as np
import onnxruntime as ort
import torch


def main(out: str) -> None:
    torch.manual_seed(777)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sigmoid(), torch.nn.Linear(2, 1), torch.nn.Sigmoid())
    criterion = torch.nn.BCELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1)
    for step in range(10001):
        optimizer.zero_grad()
        cost = criterion(model(x), y)
        cost.backward()
        optimizer.step()
        if step % 100 == 0:
            print(step, cost.item())
    model.eval()
    torch.onnx.export(
        model, (x,), out, dynamo=True, input_names=["x"], output_names=["probability"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )  # fmt: skip
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    print(session.run(None, {"x": np.array(x.numpy(), dtype=np.float32)})[0].ravel())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "naive.onnx")
