"""A tiny LLaMA directory of the pretrained kind, made offline in a second: a byte-level BPE tokenizer trained with
the `tokenizers` package on the tasks' own text (so digits and keywords merge into tokens longer than one
character, as a real model's do), and a random LlamaForCausalLM with grouped-query attention, saved as
transformers saves a downloaded model (config.json, model.safetensors, tokenizer.json). What the GPU profiles
fine-tune with LoRA, small enough for CPU tests (tests/test_rehearsal.py, tests/test_gpu_path.py)."""
from __future__ import annotations

import random
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # unk, bos, eos (= pad), as SmolLM2's


def corpus(per_size: int = 3, seed: int = 0) -> list[str]:
    """Every task's training text (inputs and outputs of each method's examples) at small sizes."""
    from retune.tasks import TASKS, get_task
    from retune.tasks.methods import MAIN_METHODS

    rng, out = random.Random(seed), []
    for name in TASKS:
        task = get_task(name)
        for size in range(1, min(task.trained_max, 6) + 1):
            for _ in range(per_size):
                problem = task.sample(size, rng)
                for method in MAIN_METHODS:
                    out += [text for e in task.examples(problem, method) for text in (e.input, e.output)]
    return out


def write_tiny_pretrained(path: Path | str, vocab_size: int = 400, max_positions: int = 1024, seed: int = 0) -> Path:
    """Write the tokenizer and a random model (hidden 32, 2 layers, 4 heads over 2 KV heads) to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                          show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token=SPECIALS[0], bos_token=SPECIALS[1],
                                  eos_token=SPECIALS[2], pad_token=SPECIALS[2])
    tok.save_pretrained(path)
    torch.manual_seed(seed)
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIALS]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, bos_token_id=ids[1], eos_token_id=ids[2], pad_token_id=ids[2])
    LlamaForCausalLM(config).save_pretrained(path)
    return path
