"""The torch side: the model, the explicit kernels, training, the gate, the sweep, the loss plot."""
