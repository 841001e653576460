"""A tiny LLaMA written as a GGUF file the way llama.cpp writes SmolLM2's, so the preset path (GGUF loader,
conversion, tokenizer) is tested without the 93 MB download.

The tokenizer is SmolLM2's kind: byte-level BPE ("gpt2" in GGUF), control tokens <|endoftext|>, <|im_start|>,
<|im_end|> at ids 0-2 (EOS = pad = <|im_end|>), every byte as a token, and a few merges that reproduce its
behaviour at our prompt/target boundary: ' +' and ' =' are one token, and a space merges into the word after it
(' Call'), so a prompt ending in 'Solution: ' ends in a lone space token while the same text inside a longer
string does not.
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# (left, right) pairs in merge order, written in the byte-level alphabet ('Ġ' is the space)
MERGES = [("Ġ", "+"), ("Ġ", "="), ("Ġ", "C"), ("ĠC", "a"), ("ĠCa", "l"), ("ĠCal", "l"), ("Ġ", "O"), ("a", "r"),
          ("C", "ar"), ("ĠC", "ar"), ("ĠCar", "r"), ("ĠCarr", "y"), ("S", "o"), ("So", "l")]


def byte_level_vocab() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = SPECIALS + [bytes_to_unicode()[b] for b in range(256)]
    return tokens + [a + b for a, b in MERGES]


def permute(weights, n_head: int):
    """llama.cpp's reordering of q/k rows (rotary halves interleaved); transformers' GGUF loader undoes it."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def tiny_hf_model(vocab_size: int, seed: int = 0):
    """A random LlamaForCausalLM with grouped-query attention (4 heads, 2 KV heads) and tied embeddings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so a mix-up of norm tensors shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_tensors(model) -> dict:
    """The model's weights under llama.cpp's tensor names (q/k permuted, output tied to the embedding)."""
    cfg = model.config
    out = {"token_embd.weight": model.model.embed_tokens.weight, "output_norm.weight": model.model.norm.weight}
    for i, layer in enumerate(model.model.layers):
        for hf_name, gguf_name in GGUF_NAMES.items():
            module = layer.get_submodule(hf_name)
            w = module.weight.detach().float().numpy()
            if gguf_name == "attn_q":
                w = permute(w, cfg.num_attention_heads)
            elif gguf_name == "attn_k":
                w = permute(w, cfg.num_key_value_heads)
            out[f"blk.{i}.{gguf_name}.weight"] = w
    return {k: (v if not hasattr(v, "detach") else v.detach().float().numpy()) for k, v in out.items()}


def write_tiny_gguf(path: Path, seed: int = 0):
    """Write a tiny llama GGUF (float32 tensors, byte-level BPE tokenizer) to `path`; return the HF model whose
    weights it holds, for comparing logits."""
    import gguf
    import numpy as np

    tokens = byte_level_vocab()
    model = tiny_hf_model(len(tokens), seed)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))  # 3 control, 1 normal
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    for name, array in gguf_tensors(model).items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def fake_wheel(path: Path, member: str, gguf_file: Path) -> Path:
    """A zip archive laid out like the preset's wheel, holding `gguf_file` at `member`."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.write(gguf_file, member)
        archive.writestr("fake-0.0.dist-info/METADATA", "Name: fake\n")
    return path
