import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The embedded tiny Mllama (random weights), written with save_pretrained."""
    from pipeline.demo.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny_mllama") / "model")


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    from pipeline.search.core import load

    return load(tiny_model_dir)


@pytest.fixture(scope="session")
def image():
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (90, 60), "white")
    d = ImageDraw.Draw(im)
    d.rectangle([10, 10, 30, 30], fill="red")
    d.ellipse([50, 20, 80, 50], fill="blue")
    return im
