"""Fixtures of the training tests: the tiny Mllama (written once per session) and synthetic shards."""
from __future__ import annotations

import pytest

from pipeline.demo.tiny_model import write_tiny_model
from tests.pipeline.train.synthetic import write_shards


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="session")
def processor(tiny_model):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model)
