"""Models: a tiny LLaMA built from a config with a character tokenizer (CPU), or a pretrained causal LM.

The encoding functions here are the single source of token ids for both training and decoding, so the ids a
model is trained on are the ids it is fed at inference (SPEC §1: no BOS, EOS after every target).
"""
from __future__ import annotations

import string
from dataclasses import asdict, dataclass

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# Every printable ASCII character plus newline: covers all task strings and their prompt variants.
CHARS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))


def char_tokenizer():
    """A character-level PreTrainedTokenizerFast built offline; unknown characters map to <unk>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK] + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    tok.padding_side = "left"  # decoder-only generation pads on the left
    return tok


@dataclass
class TinyConfig:
    """A small LLaMA-architecture model; sizes as in litgpt-style test configs."""

    hidden_size: int = 128  # width of the residual stream
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512  # MLP width
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0  # RoPE base; matters for length generalization
    seed: int = 0  # initialisation seed


def tiny_llama(config: TinyConfig | dict | None = None, tokenizer=None):
    """A randomly initialised LlamaForCausalLM (fp32) sized by `config`, matching `tokenizer`'s vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = config if isinstance(config, TinyConfig) else TinyConfig(**(config or {}))
    tok = tokenizer or char_tokenizer()
    torch.manual_seed(cfg.seed)
    hf = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(hf)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.retune_config = asdict(cfg)
    return model


def encode_context(tokenizer, text: str) -> list[int]:
    """Token ids of a context (prompt), exactly as the decoder feeds it: no special tokens added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_target(tokenizer, text: str) -> list[int]:
    """Token ids of a target, encoded on its own (as generated after the context), then EOS."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode_example(tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one training example: loss on the target tokens only."""
    p, t = encode_context(tokenizer, prompt), encode_target(tokenizer, target)
    return p + t, [-100] * len(p) + t
