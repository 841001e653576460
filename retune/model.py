"""Models: a tiny LLaMA built from a config with a character tokenizer (CPU), or a pretrained causal LM.

The encoding functions here are the single source of token ids for both training and decoding, so the ids a
model is trained on are the ids it is fed at inference (no BOS, EOS after every target; docs/protocol.md, "Training examples").

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

# The paper's adapter (docs/protocol.md, "Reference training settings"). alpha = r, so the LoRA update is scaled by 1.
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


TRAIN_DEVICES = ("auto", "cpu", "cuda")  # Recipe.device


def bf16_supported() -> bool | None:
    """Whether this machine's CUDA device computes in bf16 (torch.cuda.is_bf16_supported); None without CUDA."""
    import torch

    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None


def check_training_device(device: str, bf16, where: str = "train") -> None:
    """A recipe's `device` and `bf16`: bf16 true needs a CUDA device that has bf16, checked against this machine's
    GPU where it has one (a machine without CUDA cannot tell: the one that trains checks again). `auto` needs no
    check: it is on exactly where the training device is a GPU with bf16."""
    from .settings import ProfileError

    if device not in TRAIN_DEVICES:
        raise ProfileError(f"{where}.device: expected one of {', '.join(TRAIN_DEVICES)}, got {device!r}")
    if bf16 is True and (device == "cpu" or bf16_supported() is False):
        here = f"{where}.device is cpu" if device == "cpu" else "this machine's GPU has no bf16"
        raise ProfileError(f"{where}.bf16: true needs a CUDA device with bf16, but {here}; set it to auto or false")


HUB_ENV = "RETUNE_ALLOW_HUB"  # set to 1 to let model names that are not local directories go to the hub


def hub_allowed(allow_hub: bool | None = None) -> bool:
    """Hub access only when the caller or the user (RETUNE_ALLOW_HUB=1) opted in; off by default."""
    import os

    return bool(allow_hub) if allow_hub is not None else os.environ.get(HUB_ENV, "").strip() == "1"


def looks_like_path(name: str) -> bool:
    """A name that can only mean a place on disk: absolute, relative with ./ ../ ~, or whose first component
    exists here (e.g. 'runs/addition-typo' beside a runs/ folder), or something that exists but is no dir."""
    import os

    first = name.split("/", 1)[0]
    return (name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.path.lexists(name)
            or ("/" in name and os.path.isdir(first)))


def resolve_model(name: str, allow_hub: bool | None = None) -> str:
    """What a model name stands for, decided without any network access: a local model directory (returned
    expanded) or, only when hub access is allowed, a hub id (returned as is). ValueError, at once, for a
    directory without config.json ("no model here"), a path that does not exist, or any other name while the
    hub is not allowed ("no such model directory")."""
    import os

    text = str(name or "").strip()
    if not text:
        raise ValueError("--model must name a model directory; got ''")
    from .presets import is_preset, require

    if is_preset(text):  # a named preset (e.g. smollm2-135m) is its converted local directory, fetched before
        return str(require(text))
    path = os.path.expanduser(text)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"no model here: {text!r} is a directory without config.json "
                             "(expected a Hugging Face model directory or a finished run)")
        return path
    if looks_like_path(text):
        raise ValueError(f"no such model directory: {text!r}")
    if not hub_allowed(allow_hub):
        raise ValueError(f"no such model directory: {text!r} (to download it from the Hugging Face hub, "
                         f"set {HUB_ENV}=1)")
    return text


def load_pretrained(path_or_id: str, dtype="float32", allow_hub: bool | None = None):
    """(model, tokenizer) of a pretrained causal LM from a local directory, a preset name (retune.presets,
    e.g. 'smollm2-135m', once fetched) or (when allowed) a hub id, weights
    in `dtype`. Names are resolved by `resolve_model` first: typos and empty directories fail at once, and
    nothing is downloaded unless hub access was allowed.

    LLaMA tokenizers have no pad token; EOS doubles as pad, which is safe because training labels are built before
    padding (the collator pads labels with -100, so a real EOS target is never masked).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(path_or_id, allow_hub)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    except OSError as err:  # a hub id that is not there, or no network: one line, not a traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model {path_or_id!r} could not be loaded: {first}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation pads on the left; the training collator pads on its own
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
