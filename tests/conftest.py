"""Shared test set-up: one torch thread where torch exists (FIELD-NOTES: 2 threads on 2 shared cores is far slower)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
