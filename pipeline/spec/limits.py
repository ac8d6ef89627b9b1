"""Numeric limits shared across the pipeline, each defined once (no imports: every layer may use it)."""

FLOAT32_MAX = 3.4028234663852886e38  # float32's largest finite value (numpy.finfo(numpy.float32).max)
# verify's wide inputs reach this many spans (max - min) beyond a feature's training range; the data
# check refuses a column whose values that far out, less its mean, would leave float32's range.
WIDE_FACTOR = 10.0
