"""GPU check of the training path: a ~100M-parameter tiny LLaMA (random init from a config, character vocabulary;
nothing downloaded) trained on Re-Tuning addition with full fine-tuning and with the paper's LoRA adapter.

    python3 benchmarks/gpu_train.py [--steps 300] [--batch-size 32] [--out DIR]
    .venv/bin/python benchmarks/gpu_train.py --small      # CPU dry run: hidden 64, 2 layers, 5 steps

Prints one JSON line per run (steps, tokens/s, examples/s, peak CUDA memory from measurements.json, wall time,
whether CUDA and bf16 were used) and a final JSON line with the environment. Results: gpu_train_results.md."""
import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout (no pip install)

import torch  # noqa: E402

from retune import data  # noqa: E402
from retune.model import TinyConfig, tiny_llama, with_lora  # noqa: E402
from retune.train import TrainConfig, train, training_arguments  # noqa: E402

# ~103M parameters: 12 x (4 * 768^2 attention + 3 * 768 * 2688 MLP); the 103-token vocabulary adds only 79k.
MODEL_100M = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 2688}
MODEL_SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
LORA = {"r": 64, "lora_alpha": 64, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="CPU dry run: a tiny model and 5 steps")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--per-size", type=int, default=200, help="addition problems per digit count (1-8)")
    ap.add_argument("--out", default=None, help="where data and runs go (default: a temporary directory)")
    ap.add_argument("--runs", default="full,lora", help="comma-separated: full, lora")
    args = ap.parse_args()
    steps = args.steps or (5 if args.small else 300)
    model_config = MODEL_SMALL if args.small else MODEL_100M
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_train_"))
    cuda = torch.cuda.is_available()

    path = out / "addition_retuning.jsonl"
    manifest = data.make("addition", "retuning", path, "scaled", (1, 8), args.per_size, 0, progress=False)
    n_params = sum(p.numel() for p in tiny_llama(TinyConfig(**model_config)).parameters())
    lora_trainable, _ = with_lora(tiny_llama(TinyConfig(**model_config)), dict(LORA)).get_nb_trainable_parameters()
    print(json.dumps({"data": str(path), "records": manifest["records"],
                      "model_config": model_config, "params_M": round(n_params / 1e6, 2),
                      "lora_trainable_M": round(lora_trainable / 1e6, 2)}), flush=True)

    settings = {
        # Full fine-tuning of a from-scratch 100M model: a gentler lr with warm-up.
        "full": dict(lora=False, lr=3e-4, warmup_steps=min(30, steps // 10)),
        # The paper's adapter (r=64, alpha=64, dropout .05 on q/k/v/o); 'tiny' bases default to full FT, so explicit.
        "lora": dict(lora=dict(LORA), lr=1e-3, warmup_steps=min(30, steps // 10)),
    }
    for name in args.runs.split(","):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated() / 2**20 if cuda else 0.0
        config = TrainConfig(max_steps=steps, batch_size=args.batch_size, save_steps=10**9, logging_steps=max(steps // 6, 1),
                             progress=False, bf16="auto", **settings[name])
        start = time.perf_counter()
        run_dir = train("tiny", [path], config, out / "runs", model_config)
        wall = time.perf_counter() - start
        m = json.loads((run_dir / "measurements.json").read_text())
        bf16 = training_arguments(config, out / "x", cuda).bf16
        print(json.dumps({
            "run": name, "steps": m["steps"], "batch_size": args.batch_size,
            "tokens_per_s": m["tokens_per_s"], "examples_per_s": m["examples_per_s"],
            "tokens_per_batch_mean": m["tokens_per_batch"]["mean"], "padding_fraction": m["padding_fraction"],
            "cuda_max_allocated_mb": m.get("cuda_max_allocated_mb"), "cuda_allocated_before_mb": round(before, 1),
            "rss_peak_mb": m["rss_peak_mb"], "train_seconds": m["train_seconds"], "wall_seconds": round(wall, 2),
            "first_loss": m["losses"][0][1] if m["losses"] else None, "train_loss": m["train_loss"],
            "last_loss": m["losses"][-1][1] if m["losses"] else None,
            "device": m["device"], "cuda": cuda, "bf16": bool(bf16),
        }), flush=True)

    env = {"python": platform.python_version(), **m["versions"], "cuda_available": cuda}
    if cuda:
        env |= {"gpu": torch.cuda.get_device_name(0), "cuda_runtime": torch.version.cuda}
    print(json.dumps({"env": env}), flush=True)


if __name__ == "__main__":
    main()
