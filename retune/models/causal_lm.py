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
from pathlib import Path

from ..files import quiet_loader
from ..settings import ProfileError, at_least, check_seed, positive_finite

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


def check_tiny(tiny: TinyConfig, where: str = "model.tiny") -> TinyConfig:
    """The tiny LLaMA's shape, checked before a model is built (hidden_size 0 or 33 gave tracebacks from deep inside
    transformers): every size >= 1, and hidden_size split into heads of an even width (RoPE rotates pairs)."""
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings"):
        at_least(f"{where}.{key}", getattr(tiny, key), 1)
    if tiny.hidden_size % (2 * tiny.num_attention_heads):
        raise ProfileError(f"{where}.hidden_size: must be a multiple of 2 x num_attention_heads "
                           f"({2 * tiny.num_attention_heads}: heads of an even width), got {tiny.hidden_size}")
    positive_finite(f"{where}.rope_theta", tiny.rope_theta)
    check_seed(tiny.seed, f"{where}.seed")
    return tiny


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


def check_dtype(dtype: str, where: str = "dtype") -> str:
    """A dtype name of DTYPES, else an error naming the key, the value and the names allowed."""
    if dtype not in DTYPES:
        raise ProfileError(f"{where}: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def check_device(device: str, where: str = "device") -> str:
    """A device name a model can be put on: auto, cpu, cuda or cuda:N."""
    head, _, index = device.partition(":")
    if head not in ("auto", "cpu", "cuda") or (index and (head != "cuda" or not index.isdigit())):
        raise ProfileError(f"{where}: expected auto, cpu, cuda or cuda:N, got {device!r}")
    return device


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
    """(model, tokenizer) of a pretrained causal LM from a local directory, a preset name (retune.models.presets,
    e.g. 'smollm2-135m', once fetched) or (when allowed) a hub id, weights
    in `dtype`. Names are resolved by `resolve_model` first: typos and empty directories fail at once, and
    nothing is downloaded unless hub access was allowed; a local directory's files are checked (check_model_dir).

    LLaMA tokenizers have no pad token; EOS doubles as pad, which is safe because training labels are built before
    padding (the collator pads labels with -100, so a real EOS target is never masked).
    """
    import os

    path = resolve_model(path_or_id, allow_hub)
    if os.path.isdir(path):
        check_model_dir(path)
    tok = load_tokenizer(path, path_or_id)
    model = load_weights(path, dtype, path_or_id)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation pads on the left; the training collator pads on its own
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


# --- a model directory, checked before transformers reads it ---------------------------------------------------
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def check_model_dir(path, tokenizer: bool = True) -> None:
    """A ValueError with the one reason a model directory cannot be loaded, before transformers reads it: its own
    errors name a repo id, a header or a report table rather than the missing or damaged file. Checks config.json
    (a JSON object), a weights file, every safetensors file's length against its header, and (with `tokenizer`)
    a tokenizer file."""
    import json

    d = Path(path)
    names = {f.name for f in d.iterdir()} if d.is_dir() else set()
    problem = None
    try:
        config = json.loads((d / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            problem = "config.json is not a JSON object"
    except (OSError, ValueError):
        problem = "config.json is missing or not JSON" if "adapter_config.json" not in names else None
    if problem is None and not names & set(WEIGHT_FILES):
        problem = f"no weights file (one of {', '.join(WEIGHT_FILES)})"
    for f in sorted(d.glob("*.safetensors")):
        problem = problem or safetensors_problem(f)
    if problem is None and tokenizer and not names & set(TOKENIZER_FILES):
        problem = f"no tokenizer (one of {', '.join(TOKENIZER_FILES)})"
    if problem:
        raise ValueError(f"model directory {str(d)!r}: {problem}")


def safetensors_problem(path) -> str | None:
    """Why a .safetensors file is not whole, from its header alone (None: it is): a file cut short, one that is
    no safetensors file, or one whose length differs from what its header accounts for."""
    import json

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= size - 8:
            return f"{path.name} is cut short or is no safetensors file ({size} bytes)"
        try:
            header = json.loads(f.read(length))
            end = max([0] + [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return f"{path.name} has a damaged header"
    if 8 + length + end != size:
        what = "is cut short" if size < 8 + length + end else "is longer than its header says"
        return f"{path.name} {what}: {size} bytes where its header accounts for {8 + length + end}"
    return None


def _failed(name, err: BaseException) -> ValueError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ValueError(f"model {str(name)!r} could not be loaded: {first}")


def load_tokenizer(path, name=None):
    """transformers' AutoTokenizer, its failures (a missing file, no network for a hub id) one line."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _failed(name or path, err) from None


def load_weights(path, dtype=None, name=None):
    """transformers' AutoModelForCausalLM in `dtype`, refused in one line when it cannot be read or when its
    config.json does not match its weights: transformers then initialises the missing weights at random (or
    drops the unexpected ones) and only prints a table."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        kwargs = {"dtype": torch_dtype(dtype)} if dtype else {}  # none: as saved
        with quiet_loader():  # its report of missing keys is ours to give, in one line
            model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise _failed(name or path, err) from None
    odd = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(odd.values()):
        kind, keys = next((k, v) for k, v in odd.items() if v)
        raise ValueError(f"model {str(name or path)!r}: config.json does not match the weights "
                         f"({len(keys)} {kind.replace('_', ' ')}, e.g. {keys[0]})")
    refuse_nonfinite(model, name or path)
    return model


def nonfinite(model) -> str | None:
    """The first weight (parameter or buffer) holding NaN or inf, with how many of its values do; None when every
    value is finite. A model with one such value computes NaN logits everywhere: evaluated, it scores 0 without a
    word; trained from, it stays NaN."""
    import torch

    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                return f"{key} has {bad} of {tensor.numel()} values NaN or inf"
    return None


def refuse_nonfinite(model, name) -> None:
    """A ValueError in one line when `model` (loaded from `name`) holds a non-finite weight."""
    problem = nonfinite(model)
    if problem:
        raise ValueError(f"model {str(name)!r} has non-finite weights ({problem}): it is damaged or was saved from "
                         f"a diverged run; it is neither evaluated nor trained from")


def lora_config(lora=True):
    """A peft LoraConfig: the paper's (r=64, alpha=64, dropout 0.05 on q/k/v/o) updated by `lora` when a dict."""
    from peft import LoraConfig

    options = dict(PAPER_LORA, **(lora if isinstance(lora, dict) else {}))
    return LoraConfig(task_type="CAUSAL_LM", bias="none", **options)


def check_lora(lora, where: str = "train") -> None:
    """A `lora` dict's keys are LoraConfig's (task type and bias are ours), so a typo is named when the profile
    loads, not when a run starts training."""
    if not isinstance(lora, dict):
        return
    from dataclasses import fields

    from peft import LoraConfig

    from ..settings import unknown_key

    allowed = sorted(f.name for f in fields(LoraConfig) if f.init and f.name not in ("task_type", "bias"))
    for key in lora:
        if key not in allowed:
            raise unknown_key(key, allowed, f"{where}.lora")
    _check_lora_values(lora, f"{where}.lora")


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LLaMA's linear layers


def _check_lora_values(lora: dict, where: str) -> None:
    """The adapter's values, checked here with the key named: peft accepted lora_alpha -5, and named r 0 or an
    unknown module only after the dataset was built (r NaN was a TypeError traceback)."""
    import math

    def number(value) -> bool:  # a finite int or float, never a bool
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    checks = {"r": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 2**16, "an integer in "
                    "1..65536"),
              "lora_alpha": (lambda v: number(v) and v > 0, "a finite number > 0"),
              "lora_dropout": (lambda v: number(v) and 0 <= v < 1, "a number in [0, 1)"),
              "target_modules": (lambda v: v == "all-linear" or (isinstance(v, list) and v and all(
                  m in LORA_TARGETS for m in v)), f"all-linear or a list of {', '.join(LORA_TARGETS)}")}
    for key, (good, allowed) in checks.items():
        if key in lora and not good(lora[key]):
            raise ProfileError(f"{where}.{key}: expected {allowed}, got {lora[key]!r}")


def with_lora(model, lora=True):
    """`model` wrapped in a fresh LoRA adapter; only the adapter's weights train."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(lora))


def freeze_lower(model, layers: int):
    """Keep the input embeddings and the lowest `layers` decoder layers of a LLaMA-style model at their weights
    (full fine-tuning trains the rest): what a base learned low down, such as reading positions, stays as it was."""
    decoder = model.get_decoder()
    if not 0 <= layers <= len(decoder.layers):
        raise ValueError(f"frozen_layers must be in 0..{len(decoder.layers)} (the model's decoder layers); "
                         f"got {layers}")
    if layers:
        for module in [decoder.embed_tokens, *decoder.layers[:layers]]:
            module.requires_grad_(False)
    return model
