"""Fixtures shared by several test files, and the fast subset.

`make test-fast` runs `pytest -m "not slow"`: it leaves out the tests marked `slow` (every notebook run, the
browser, training runs over tens of steps, a model trained for a fixture), for the edit-test loop; `make test`
runs everything. A test that takes more than a few seconds on a laptop CPU gets `@pytest.mark.slow`."""
import pytest


@pytest.fixture(scope="session")
def parity_model():
    """(model, tokenizer): the tiny LLaMA that has memorised every parity Re-Tuning context of 1-3 bits
    (tests/_tiny_model.py), trained once per session on one CPU thread."""
    import torch

    from _tiny_model import memorised_parity_model

    torch.set_num_threads(1)
    return memorised_parity_model()
