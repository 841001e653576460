"""Models and tokenization: the tiny LLaMA and its tokenizer round-trip, pretrained loading, and the parity between
the ids a model is trained on and the ids a decoder feeds it.

The tokenization contract (it matters for sub-word tokenizers, see test_subword_*): a context is always encoded
on its own with `encode_context`, and a target on its own with `encode_target`; the decoder feeds
`encode_context(context)`, decodes only the ids generated after it, and builds the next context as a string
(context + generated text + `Return: ...`) that it encodes afresh. Training uses exactly these encodings, so the
two agree even where encoding `prompt + target` as one string would split differently at the boundary (it does
for a SentencePiece-like tokenizer, which prefixes every separately encoded text with a word-boundary mark).
"""
import functools
import random
import tempfile
from pathlib import Path

import pytest
import torch

from retune.models.causal_lm import (EOS, PAD, UNK, TinyConfig, char_tokenizer, encode_context, encode_example,
                                     encode_target, load_pretrained, tiny_llama)
from retune.models.presets import is_fetched, preset_path
from retune.tasks import METHODS, TASKS, get_task

from _tiny_gguf import write_tiny_gguf

torch.set_num_threads(1)

TINY = TinyConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


# --- the tiny model ----------------------------------------------------------------------------------------

def test_char_tokenizer_round_trips_and_maps_unknowns():
    tok = char_tokenizer()
    text = "123 + 45\nSolution: Call: 23 + 45\n"
    ids = encode_context(tok, text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert encode_context(tok, "1é2") == [ids[0], tok.unk_token_id, encode_context(tok, "2")[0]]
    assert encode_target(tok, "7")[-1] == tok.eos_token_id and tok.bos_token_id is None


def test_tiny_llama_saves_loads_and_generates(tmp_path):
    tok = char_tokenizer()
    model = tiny_llama(TINY, tok).eval()
    assert model.config.vocab_size == len(tok) and model.config.num_hidden_layers == 2
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_pretrained(str(tmp_path), "float32")
    x = torch.tensor([encode_context(tok, "12 + 3\nSolution: ")])
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model(x).logits)
    out = again.generate(x, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, x.shape[1] + 4) and out[0, : x.shape[1]].tolist() == x[0].tolist()
    assert torch.equal(out, model.generate(x, max_new_tokens=4, do_sample=False))
    assert tok2.get_vocab() == tok.get_vocab() and tok2.padding_side == "left"


def test_tiny_llama_is_seeded():
    a, b, c = tiny_llama(TINY), tiny_llama(TINY), tiny_llama(TinyConfig(**{**TINY.__dict__, "seed": 1}))
    w = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w]) and not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_load_pretrained_dtype_and_errors(tmp_path):
    tiny_llama(TINY).save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    model, tok = load_pretrained(str(tmp_path), "bf16")
    assert model.dtype == torch.bfloat16 and tok.pad_token_id is not None
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_pretrained(str(tmp_path), "int3")
    with pytest.raises(ValueError, match="no such model directory"):
        load_pretrained(str(tmp_path / "missing"), "float32")


# --- tokenization parity ---------------------------------------------------------------------------------

def all_examples():
    """Examples of every task, prompt variant and method at a few sizes: every context kind the decoder meets."""
    rng, out = random.Random(0), []
    for name, cls in TASKS.items():
        for variant in range(cls.variants):
            task = get_task(name, variant)
            for method in METHODS:
                for size in (1, 2, 4):
                    try:
                        out += task.examples(task.sample(size, rng), method)
                    except NotImplementedError:  # a method a task does not define
                        pass
    return out


def next_contexts():
    """(context, call turn, next context) for every call of every oracle tree: what the decoder builds after a
    call returns, for each recursive method."""
    rng, out = random.Random(1), []
    for name in TASKS:
        task = get_task(name)
        for size in (2, 3):
            top = task.tree(task.sample(size, rng))
            for method in (m for m in METHODS.values() if m.recursive):
                for node, _ in top.walk():
                    turns = method.contexts(node)
                    for (ctx, turn, _), (nxt, _, _), child in zip(turns, turns[1:], node.children):
                        out.append((ctx, turn, nxt, method.return_text(child.answer)))
    return out


EXAMPLES = all_examples()
NEXT = next_contexts()


def subword_tokenizer():
    """A SentencePiece-like BPE (Metaspace word marks, prefix mark on every encoded text) trained offline on task
    strings, so it learns merges such as '\\nSolution:' that cross our prompt/target boundary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    core.train_from_iterator([e.input + e.output for e in EXAMPLES],
                             trainers.BpeTrainer(vocab_size=400, special_tokens=[PAD, EOS, UNK]))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK)


@functools.lru_cache(maxsize=None)
def gguf_tokenizer():
    """SmolLM2's kind of tokenizer (byte-level BPE where ' +' and ' Call' are merges), read from a tiny GGUF file
    by the loader the smollm2-135m preset goes through."""
    from retune.models.presets import load_gguf

    path = Path(tempfile.mkdtemp()) / "tiny.gguf"
    write_tiny_gguf(path)
    return load_gguf(path)[1]


def smollm2_tokenizer():
    """The real SmolLM2-135M tokenizer, from the converted preset (`make smollm2`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(preset_path("smollm2-135m"))


SMOLLM2 = pytest.param(smollm2_tokenizer, id="smollm2", marks=[
    pytest.mark.model, pytest.mark.skipif(not is_fetched("smollm2-135m"), reason="SmolLM2 not fetched (make smollm2)")])
TOKENIZERS = [pytest.param(char_tokenizer, id="char"), pytest.param(subword_tokenizer, id="subword"),
              pytest.param(gguf_tokenizer, id="gguf-bpe"), SMOLLM2]


def test_examples_cover_every_context_kind():
    assert {e.kind for e in EXAMPLES} == {"call", "combine", "base", "full"}
    assert len(NEXT) > 20


@pytest.mark.parametrize("make", TOKENIZERS)
def test_training_ids_are_decoder_context_then_generated_target(make):
    """What the model trains on is exactly what the decoder feeds (the context's ids) followed by what it must
    generate (the target's ids and EOS), with loss on the latter only; and those target ids decode to the
    target text, which is what the decoder parses."""
    tok = make()
    for e in EXAMPLES:
        ids, labels = encode_example(tok, e.input, e.output)
        context, target = encode_context(tok, e.input), encode_target(tok, e.output)
        assert ids == context + target
        assert labels == [-100] * len(context) + target and target[-1] == tok.eos_token_id
        assert tok.unk_token_id not in ids
        assert tok.decode(target[:-1]) == e.output


@pytest.mark.parametrize("make", TOKENIZERS)
def test_next_context_is_reencoded_from_text(make):
    """After a call returns, the decoder's next context is the text context + decoded call + `Return: ...`,
    encoded afresh; that text is the next training example's prompt, so its ids are the ids trained on."""
    tok = make()
    for ctx, turn, nxt, returned in NEXT:
        generated = encode_target(tok, turn)[:-1]  # what a perfect model generates after encode_context(ctx)
        rebuilt = ctx + tok.decode(generated) + returned
        assert rebuilt == nxt
        assert encode_context(tok, rebuilt) == encode_context(tok, nxt)


def test_char_tokenizer_ids_also_concatenate():
    """With one token per character, encoding prompt + target as one string gives the same ids: the decoder may
    also extend a context's ids with the generated ids instead of re-encoding."""
    tok = char_tokenizer()
    for e in EXAMPLES:
        assert encode_context(tok, e.input + e.output) == encode_context(tok, e.input) + encode_target(tok, e.output)[:-1]
    for ctx, turn, nxt, returned in NEXT:
        assert encode_context(tok, nxt) == (encode_context(tok, ctx) + encode_target(tok, turn)[:-1]
                                            + encode_context(tok, returned))


def test_subword_ids_do_not_concatenate_hence_the_contract():
    """Why contexts and targets are encoded separately: a SentencePiece-like tokenizer encodes a target on its
    own with a leading word mark ('▁1'), but inside prompt + target it would split differently. Training on the
    joint encoding would teach ids the decoder never produces from the context's own ids."""
    tok = subword_tokenizer()
    differ = [e for e in EXAMPLES
              if encode_context(tok, e.input + e.output) != encode_context(tok, e.input) + encode_target(tok, e.output)[:-1]]
    assert len(differ) > len(EXAMPLES) // 2
    first = tok.convert_ids_to_tokens(encode_target(tok, differ[0].output))[0]
    assert first.startswith("▁")


@pytest.mark.parametrize("make", [pytest.param(gguf_tokenizer, id="gguf-bpe"), SMOLLM2])
def test_byte_level_bpe_merges_across_the_boundary_hence_the_contract(make):
    """SmolLM2's tokenizer merges a space into the word after it: a prompt encoded on its own ends in a lone
    space token ('Ġ' after 'Solution:'), while prompt + target as one string would write ' Call' as one token.
    The contract keeps training on the former, which is what the decoder feeds."""
    tok = make()
    assert len(encode_context(tok, " +")) == 1
    calls = [e for e in EXAMPLES if e.output.startswith("Call:")]
    for e in calls:
        context = tok.convert_ids_to_tokens(encode_context(tok, e.input))
        assert context[-1] == "Ġ"
        assert encode_context(tok, e.input + e.output) != encode_context(tok, e.input) + encode_target(tok, e.output)[:-1]
    assert calls
