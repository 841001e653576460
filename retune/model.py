"""Models: a tiny LLaMA built from a config with a character tokenizer (CPU), or a pretrained causal LM.

The encoding functions here are the single source of token ids for both training and decoding, so the ids a
model is trained on are the ids it is fed at inference (SPEC §1: no BOS, EOS after every target).

The contract decoders must keep (tests/test_model.py checks it with the character tokenizer, a SentencePiece-like
BPE and SmolLM2's byte-level BPE): a context is encoded on its own (`encode_context`), the model generates from
exactly those ids, only the generated ids are decoded, and the next context (context + generated text +
`Return: ...`) is built as text and encoded afresh. With sub-word tokenizers `encode(prompt + target)` differs from
`encode(prompt) + encode(target)` at the boundary, so never extend a context's ids with generated ids across turns;
with the character tokenizer the two agree.
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


# --- pretrained models and LoRA ------------------------------------------------------------------------------

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}

# SPEC §5: the paper's adapter. alpha = r, so the LoRA update is scaled by 1.
PAPER_LORA = {"r": 64, "lora_alpha": 64, "lora_dropout": 0.05,
              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def torch_dtype(dtype):
    """A torch dtype from a name ('float32', 'bf16', ...) or a torch dtype; raises ValueError naming the choices."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return getattr(torch, DTYPES[dtype])


def is_local_path(source: str) -> bool:
    """Whether `source` names a directory on disk (as opposed to a hub id such as 'huggyllama/llama-7b')."""
    import os

    return os.path.exists(source) or source.startswith(("/", "./", "../", "~"))


def load_pretrained(path_or_id: str, dtype="float32"):
    """(model, tokenizer) of a pretrained causal LM from a local directory, a preset name (retune.presets, e.g.
    'smollm2-135m', once fetched) or a hub id, weights in `dtype`.

    A local path that does not exist is an error here rather than a hub look-up: typos must not turn into downloads.
    LLaMA tokenizers have no pad token; EOS doubles as pad, which is safe because training labels are built before
    padding (the collator pads labels with -100, so a real EOS target is never masked).
    """
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .presets import is_preset, require

    if is_preset(path_or_id):  # a named preset is its converted local directory; a missing one is an error
        path_or_id = str(require(path_or_id))
    if is_local_path(path_or_id) and not os.path.isdir(os.path.expanduser(path_or_id)):
        raise ValueError(f"model path {path_or_id!r} does not exist (expected a directory with config.json)")
    path = os.path.expanduser(path_or_id)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation pads on the left; the training collator pads on its own
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def lora_config(lora=True):
    """A peft LoraConfig: the paper's (r=64, alpha=64, dropout 0.05 on q/k/v/o) updated by `lora` when a dict."""
    from peft import LoraConfig

    options = dict(PAPER_LORA, **(lora if isinstance(lora, dict) else {}))
    return LoraConfig(task_type="CAUSAL_LM", bias="none", **options)


def with_lora(model, lora=True):
    """`model` wrapped in a fresh LoRA adapter; only the adapter's weights train."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(lora))
