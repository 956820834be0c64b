"""Shared test set-up: one torch thread where torch exists (FIELD-NOTES: 2 threads on 2 shared cores is
far slower), no network, and the tiny models every parity test uses, built once per session."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from tests import models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory):
    """A random shrunk SAM 2.1: config YAML, Meta-format checkpoint, and its hydra overrides."""
    return models.build_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2"))


@pytest.fixture(scope="session")
def tiny_sam2_onnx(tiny_sam2, tmp_path_factory):
    """The same SAM 2 exported to ONNX by the exporter `star-export` uses."""
    return models.export_tiny_sam2_onnx(tiny_sam2, tmp_path_factory.mktemp("tiny_sam2_onnx"))
