import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks use local models and data only
