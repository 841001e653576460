"""Training: collator and sampler, end-to-end fitting, the run cache, kill-and-resume, LoRA, measurements, the CLI.

Tiny models (hidden 32, 2 layers) on one thread; every run here takes a second or a few."""
import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retune.training import fine_tune as T
from retune import files
from retune.training import trainer
from retune.models.causal_lm import char_tokenizer, encode_context, encode_example
from retune.config.profiles import load_profile
from retune.settings import ProfileError

torch.set_num_threads(1)

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
ROOT = Path(__file__).resolve().parents[1]


def write_addition(path: Path, n: int = 64, seed: int = 0, digits=(1, 3)) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            k = rng.randint(*digits)
            a, b = rng.randrange(10**k), rng.randrange(10**k)
            f.write(json.dumps({"input": f"{a} + {b}\nAnswer: ", "output": str(a + b), "task": "addition",
                                "method": "baseline", "size": k}) + "\n")
    return path


def quick(**overrides) -> T.TrainConfig:
    base = dict(max_steps=6, batch_size=8, save_steps=3, threads=1, logging_steps=2, progress=False)
    return T.TrainConfig(**{**base, **overrides})


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- collator and sampler ----------------------------------------------------------------------------------

def test_collator_masks_prompt_and_padding_keeps_eos():
    tok = char_tokenizer()
    a = encode_example(tok, "1 + 2\nAnswer: ", "3")
    b = encode_example(tok, "10 + 20\nAnswer: ", "30")
    collate = trainer.completion_collator(tok)
    batch = collate([{"input_ids": a[0], "labels": a[1]}, {"input_ids": b[0], "labels": b[1]}])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == (2, len(b[0]))
    n = len(a[0])
    # right padding: the short row's real tokens start at position 0
    assert ids[0, :n].tolist() == a[0] and (ids[0, n:] == tok.pad_token_id).all()
    assert mask[0].tolist() == [1] * n + [0] * (len(b[0]) - n)
    # loss only on the target and its EOS
    target = [x for x in labels[0].tolist() if x != -100]
    assert tok.decode(target[:-1]) == "3" and target[-1] == tok.eos_token_id
    assert (labels[0, : len(encode_context(tok, "1 + 2\nAnswer: "))] == -100).all()
    assert (labels[0, n:] == -100).all()
    counter = trainer.TokenCounter()
    counter.add(mask)
    assert counter.padded_tokens == len(b[0]) - n and counter.real_tokens == n + len(b[0])
    assert counter.padding_fraction == pytest.approx((len(b[0]) - n) / (2 * len(b[0])))


def test_collator_with_eos_as_pad_keeps_target_eos():
    """LLaMA tokenizers pad with EOS; the EOS target must survive padding."""
    tok = char_tokenizer()
    ids, labels = encode_example(tok, "ab", "c")
    tok.pad_token = tok.eos_token
    batch = trainer.completion_collator(tok)([{"input_ids": ids, "labels": labels},
                                        {"input_ids": ids + ids, "labels": labels + labels}])
    assert batch["input_ids"][0, len(ids):].tolist() == [tok.eos_token_id] * len(ids)  # padded with EOS ...
    assert batch["labels"][0].tolist().count(tok.eos_token_id) == 1  # ... yet only the target's EOS is learned
    assert tok.padding_side == "left"  # the caller's tokenizer still pads for generation


def test_length_grouped_sampler_is_a_seeded_permutation_with_little_padding():
    rng = random.Random(0)
    lengths = [rng.randint(10, 200) for _ in range(1000)]
    s = trainer.LengthGroupedSampler(lengths, batch_size=16, seed=3)
    first = list(s)
    assert sorted(first) == list(range(1000))  # every example exactly once
    assert list(s) == first  # a function of (seed, epoch): a resumed run sees the same order
    s.set_epoch(1)
    assert list(s) != first  # a new order each epoch
    batches = [first[i:i + 16] for i in range(0, 1000, 16)]
    shuffled = list(range(1000))
    rng.shuffle(shuffled)
    random_batches = [shuffled[i:i + 16] for i in range(0, 1000, 16)]
    grouped = trainer.padding_fraction(lengths, batches)
    assert grouped < 0.1 < trainer.padding_fraction(lengths, random_batches)


# --- training end to end -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_model_learns_its_data_and_generates_it(tmp_path):
    """Completion-only training on a few examples, then greedy generation from the decoder's context ids
    reproduces each target and stops at EOS."""
    data = tmp_path / "d.jsonl"
    pairs = [("12 + 7\nAnswer: ", "19"), ("5 + 5\nAnswer: ", "10"), ("40 + 2\nAnswer: ", "42")]
    data.write_text("".join(json.dumps({"input": p, "output": t, "task": "addition", "method": "baseline"}) + "\n"
                            for p, t in pairs))
    cfg = quick(max_steps=120, batch_size=3, lr=1e-2, save_steps=1000, lr_schedule="constant")
    run = T.train("tiny", [data], cfg, tmp_path / "runs", TINY)
    model, tok = T.load_trained(run)
    for prompt, target in pairs:
        ctx = encode_context(tok, prompt)
        out = model.generate(torch.tensor([ctx]), max_new_tokens=6, do_sample=False)[0].tolist()
        assert out[: len(ctx)] == ctx
        gen = out[len(ctx):]
        assert gen[: len(target) + 1] == tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    m = json.loads((run / "measurements.json").read_text())
    assert m["losses"][-1][1] < 0.1 < m["losses"][0][1]


def test_measurements_describe_the_run(tmp_path):
    data = write_addition(tmp_path / "d.jsonl", n=40)
    run = T.train("tiny", [data], quick(), tmp_path / "runs", TINY)
    m = json.loads((run / "measurements.json").read_text())
    lengths = [len(encode_example(char_tokenizer(), r["input"], r["output"])[0])
               for r in map(json.loads, data.read_text().splitlines())]
    assert m["examples"] == 40 and m["steps"] == 6 and m["batches_run"] == 6
    assert m["tokens_per_example"]["max"] == max(lengths)
    assert m["tokens_per_example"]["mean"] == pytest.approx(sum(lengths) / 40, abs=0.01)
    assert m["tokens_per_batch"]["max"] <= 8 * max(lengths)
    assert 0 <= m["padding_fraction"] < 0.5
    assert m["examples_per_s"] > 0 and m["tokens_per_s"] > m["examples_per_s"]
    assert m["rss_peak_mb"] > 50 and m["wall_seconds"] >= m["train_seconds"] > 0
    assert m["versions"]["torch"] == torch.__version__ and "peft" in m["versions"]
    assert m["seed"] == 0 and m["config"]["max_steps"] == 6 and m["device"] == "cpu"
    assert m["resumed_from"] is None
    assert not (run / "checkpoints").exists()  # cleaned up once finished


def test_a_run_without_progress_prints_nothing_per_step_and_keeps_its_losses(tmp_path, capsys):
    """Side-by-side workers share one log: one line per finished piece, not the Trainer's loss dicts."""
    run = T.train("tiny", [write_addition(tmp_path / "d.jsonl", n=40)], quick(), tmp_path / "runs", TINY)
    assert "'loss'" not in capsys.readouterr().out
    # every logging_steps (2), and at every checkpoint (3), so a resumed run can account for its whole loss
    assert [step for step, _ in json.loads((run / "measurements.json").read_text())["losses"]] == [2, 3, 4, 6]


def test_too_long_examples_are_dropped_and_counted(tmp_path):
    data = write_addition(tmp_path / "d.jsonl", n=30, digits=(1, 4))
    cfg = quick(max_length=16)
    run = T.train("tiny", [data], cfg, tmp_path / "runs", TINY)
    m = json.loads((run / "measurements.json").read_text())
    assert m["dropped_too_long"] > 0 and m["examples"] + m["dropped_too_long"] == 30
    assert m["tokens_per_example"]["max"] <= 16


def test_finished_run_is_cached_and_key_tracks_inputs(tmp_path, monkeypatch):
    data = write_addition(tmp_path / "d.jsonl")
    run = T.train("tiny", [data], quick(), tmp_path / "runs", TINY)
    assert run.parent == tmp_path / "runs" and run.name.startswith("addition-baseline-")

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run must not train")

    monkeypatch.setattr(T, "make_trainer", no_training)
    monkeypatch.setattr(T, "load_base", no_training)
    assert T.train("tiny", [data], quick(save_steps=99, threads=2), tmp_path / "runs", TINY) == run
    # anything that changes the result changes the key
    ident = T.base_identity("tiny", TINY)[1]
    d = [T.data_identity(data)]
    key = T.run_key(ident, d, quick())
    assert T.run_key(ident, d, quick(lr=2e-3)) != key
    assert T.run_key(T.base_identity("tiny", {**TINY, "seed": 1})[1], d, quick()) != key
    write_addition(data, seed=1)
    assert T.run_key(ident, [T.data_identity(data)], quick()) != key


def test_loss_mean_enters_the_key_only_when_it_is_not_the_default(tmp_path):
    """Runs cached before loss_mean existed keep their keys; an example-mean run is another run."""
    data = write_addition(tmp_path / "d.jsonl")
    ident, d = T.base_identity("tiny", TINY)[1], [T.data_identity(data)]
    before = {k: v for k, v in T.key_config(vars(quick())).items() if k != "loss_mean"}
    assert T.key_config(vars(quick(loss_mean="token"))) == before
    assert T.run_key(ident, d, quick(loss_mean="example")) != T.run_key(ident, d, quick())


def test_example_mean_loss_weighs_every_example_alike():
    """A 1-token target weighs as much as a 3-token one (a token mean would give it a quarter of the weight)."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, -100, -100, 4], [-100, 1, 2, 3, -100]])
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                                  reduction="none")
    first, second = per_token[0, 3], per_token[1, :3].mean()
    loss = trainer.example_mean_loss(SimpleNamespace(logits=logits), labels)
    assert torch.isclose(loss, (first + second) / 2)
    token_mean = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert torch.isclose(token_mean, (first + 3 * second) / 4) and not torch.isclose(loss, token_mean)


def test_an_example_mean_run_trains_and_a_bad_loss_mean_is_named(tmp_path):
    data = write_addition(tmp_path / "d.jsonl")
    run = T.train("tiny", [data], quick(loss_mean="example"), tmp_path / "runs", TINY)
    assert json.loads((run / "run.json").read_text())["config"]["loss_mean"] == "example"
    assert all(loss == loss for _, loss in json.loads((run / "measurements.json").read_text())["losses"])
    with pytest.raises(ValueError, match="train.loss_mean: unknown 'mean'; allowed: token, example"):
        T.train("tiny", [data], quick(loss_mean="mean"), tmp_path / "runs", TINY)
    assert list((tmp_path / "runs").iterdir()) == [run]  # refused before a run directory was made


def test_only_a_manifest_naming_the_files_sha_is_trusted(tmp_path):
    data = write_addition(tmp_path / "d.jsonl")
    sha = files.file_sha256(data)
    manifest = tmp_path / "d.jsonl.manifest.json"
    manifest.write_text(json.dumps({"sha256": sha, "parameters": {"task": "parity", "method": "retuning"}}))
    assert T.data_identity(data) == {"sha256": sha, "task": "parity", "method": "retuning"}
    manifest.write_text(json.dumps({"sha256": "abc", "parameters": {"task": "parity", "method": "retuning"}}))
    assert T.data_identity(data) == {"sha256": sha, "task": "addition", "method": "baseline"}  # stale: ignored


KILLER = """
import os, signal, sys
from transformers import TrainerCallback
from retune.training import fine_tune as T
sys.path.insert(0, {tests!r})
from test_train import TINY, quick

class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGKILL)

T.train("tiny", [{data!r}], quick(max_steps=8, save_steps=2, lora={lora!r}), {runs!r}, TINY,
        callbacks=[KillAtStep()])
"""


@pytest.mark.parametrize("lora", [False, {"r": 4, "lora_alpha": 8, "lora_dropout": 0.05}], ids=["full", "lora"])
@pytest.mark.slow
def test_killed_run_resumes_from_checkpoint_and_matches_uninterrupted(tmp_path, lora):
    """SIGKILL after step 5 (last checkpoint at 4); the restarted run resumes there and ends where an uninterrupted
    run ends (with LoRA, its dropout draws come from the restored RNG state)."""
    data = write_addition(tmp_path / "d.jsonl", n=48)  # 6 batches an epoch: the run crosses an epoch boundary
    runs = tmp_path / "runs"
    script = KILLER.format(tests=str(ROOT / "tests"), data=str(data), runs=str(runs), lora=lora)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]
    (run_dir,) = runs.iterdir()
    assert not (run_dir / "measurements.json").exists()
    assert T.last_checkpoint(run_dir / "checkpoints").name == "checkpoint-4"

    resumed = T.train("tiny", [data], quick(max_steps=8, save_steps=2, lora=lora), runs, TINY)
    assert resumed == run_dir
    m = json.loads((resumed / "measurements.json").read_text())
    assert m["resumed_from"] == "checkpoint-4" and m["steps"] == 8
    assert m["batches_run"] == 8  # the whole run's: 4 before the checkpoint (saved with it), 4 after the restart

    straight = T.train("tiny", [data], quick(max_steps=8, save_steps=2, lora=lora), tmp_path / "other", TINY)
    a = weights(T.load_trained(resumed, merge=True)[0])
    b = weights(T.load_trained(straight, merge=True)[0])
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    untrained = weights(T.load_base("tiny", TINY)[0])
    assert not torch.allclose(a["model.layers.0.self_attn.q_proj.weight"],
                              untrained["model.layers.0.self_attn.q_proj.weight"])


# --- LoRA, and continuing from a run ------------------------------------------------------------------------

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}


def test_lora_adapter_round_trip_and_merge(tmp_path):
    data = write_addition(tmp_path / "d.jsonl")
    run = T.train("tiny", [data], quick(lora=LORA, lr=1e-2), tmp_path / "runs", TINY)
    assert (run / "adapter" / "adapter_config.json").is_file() and not (run / "model").exists()
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == 4
    loaded, tok = T.load_trained(run)
    x = torch.tensor([encode_context(tok, "12 + 34\nAnswer: 4")])
    with torch.no_grad():
        out = loaded(x).logits
        base = T.load_base("tiny", TINY)[0].eval()(x).logits
        merged = T.load_trained(run, merge=True)[0](x).logits
    assert not torch.allclose(out, base, atol=1e-4)  # the adapter learned something
    torch.testing.assert_close(merged, out, rtol=1e-4, atol=1e-4)  # merged == unmerged in fp32


def test_lora_defaults_to_paper_adapter_for_pretrained_bases():
    from retune.models.causal_lm import PAPER_LORA, lora_config

    cfg = lora_config(True)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (64, 64, 0.05)
    assert set(cfg.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"} == set(PAPER_LORA["target_modules"])
    assert T.use_lora(T.TrainConfig(), "pretrained") is True
    assert T.use_lora(T.TrainConfig(), "tiny") is False and T.use_lora(T.TrainConfig(), "run") is False
    assert T.use_lora(T.TrainConfig(lora={"r": 8}), "tiny") == {"r": 8}


def test_frozen_lower_layers_keep_the_bases_weights_and_the_rest_trains(tmp_path):
    """frozen_layers 1 of TINY's 2: embeddings (tied to the output head) and layer 0 stay the base's, layer 1
    moves; a new key only when set; too many layers, or with LoRA, named."""
    base = T.train("tiny", [write_addition(tmp_path / "a.jsonl")], quick(), tmp_path / "runs", TINY)
    run = T.train(str(base), [write_addition(tmp_path / "b.jsonl", seed=5)], quick(frozen_layers=1, lr=1e-2),
                  tmp_path / "runs")
    before, after = weights(T.load_trained(base)[0]), weights(T.load_trained(run)[0])
    kept = [k for k in before if "embed_tokens" in k or ".layers.0." in k]
    moved = [k for k in before if ".layers.1." in k and k.endswith("proj.weight")]
    assert kept and moved and all(torch.equal(before[k], after[k]) for k in kept)
    assert all(not torch.equal(before[k], after[k]) for k in moved)
    assert T.key_config(vars(quick(frozen_layers=0))) == T.key_config(vars(quick()))
    assert "frozen_layers" not in T.key_config(vars(quick()))
    assert T.key_config(vars(quick(frozen_layers=1)))["frozen_layers"] == 1
    with pytest.raises(ValueError, match=r"frozen_layers must be in 0\.\.2"):
        T.train(str(base), [tmp_path / "b.jsonl"], quick(frozen_layers=3), tmp_path / "runs")
    with pytest.raises(ProfileError, match="frozen_layers: for full fine-tuning"):
        load_profile("smoke", {"train": {"frozen_layers": 1, "lora": True}})


@pytest.mark.parametrize("lora", [False, LORA])
def test_continue_from_a_run(tmp_path, lora):
    """A finished run is a base model: further training starts from its weights (full or LoRA)."""
    first = T.train("tiny", [write_addition(tmp_path / "a.jsonl")], quick(), tmp_path / "runs", TINY)
    data = write_addition(tmp_path / "b.jsonl", seed=5)
    second = T.train(str(first), [data], quick(lora=lora, lr=1e-2), tmp_path / "runs")
    assert second != first
    run = json.loads((second / "run.json").read_text())
    assert run["base"] == {"run": json.loads((first / "run.json").read_text())["key"]}
    x = torch.tensor([[10, 11, 12, 13]])
    with torch.no_grad():
        before = T.load_trained(first)[0](x).logits
        after = T.load_trained(second)[0](x).logits
        scratch = T.load_base("tiny", TINY)[0].eval()(x).logits
    assert not torch.allclose(before, after, atol=1e-4)
    assert not torch.allclose(scratch, before, atol=1e-4)
    # a second run on a pretrained-like local model (our saved weights) by path is cached by content
    assert (second / ("adapter" if lora else "model")).is_dir()


def test_pretrained_local_model_trains_with_lora_by_default(tmp_path):
    from retune.models.causal_lm import TinyConfig, tiny_llama

    tok = char_tokenizer()
    tiny_llama(TinyConfig(**TINY), tok).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    run = T.train(str(tmp_path / "base"), [write_addition(tmp_path / "d.jsonl")],
                  quick(lora={"r": 2, "lora_alpha": 2}), tmp_path / "runs")
    assert (run / "adapter").is_dir()
    model, _ = T.load_trained(run)
    assert type(model).__name__ == "PeftModelForCausalLM"
    auto = T.train(str(tmp_path / "base"), [tmp_path / "d.jsonl"], quick(max_steps=2), tmp_path / "runs")
    assert json.loads((auto / "run.json").read_text())["lora"] == "paper"  # r=64 on q/k/v/o
    with pytest.raises(ValueError, match="frozen_layers applies to full fine-tuning"):  # LoRA by default: not ignored
        T.train(str(tmp_path / "base"), [tmp_path / "d.jsonl"], quick(max_steps=2, frozen_layers=1), tmp_path / "runs")


# --- configuration and the CLI ---------------------------------------------------------------------------

def cli(argv):
    from retune.commands import train as train_command

    top = argparse.ArgumentParser()
    train_command.add_cli(top.add_subparsers(dest="command"))
    args = top.parse_args(["train", *argv])
    return args.func(args)


def test_cli_trains_with_a_profile_and_set_overrides(tmp_path):
    data = write_addition(tmp_path / "d.jsonl")
    profile = tmp_path / "p.yaml"
    profile.write_text("model: {tiny: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
                       "intermediate_size: 64}}\ntrain: {max_steps: 4, batch_size: 8, lr: 0.01, logging_steps: 1}\n"
                       f"paths: {{runs: {tmp_path / 'runs'}}}\nthreads: 1\n")
    run = cli(["--data", str(data), "--profile", str(profile), "--set", "train.max_steps=3", "--set", "train.lr=3e-3"])
    m = json.loads((run / "measurements.json").read_text())
    assert m["steps"] == 3 and m["config"]["lr"] == 3e-3 and m["config"]["batch_size"] == 8
    assert json.loads((run / "run.json").read_text())["model_config"]["hidden_size"] == 32
    assert run.parent == tmp_path / "runs"


def test_cli_trains_the_notebooks_run_pretraining_budgets_and_model_overrides_included(tmp_path):
    """`retune train --task --method` is the run the notebooks train: the same function, the same checked profile."""
    from retune.training import runs
    from retune.config.profiles import load_profile

    dirs = [f"paths.{k}={tmp_path / k}" for k in ("runs", "data")]
    sets = dirs + ["pretrain={examples: 64, max_length: 6, train: {max_steps: 2, batch_size: 8}}",
                   "train.by_task={parity: {max_steps: 3}}"]
    argv = ["--task", "parity", "--method", "retuning", "--profile", "smoke"]
    run = cli(argv + [a for s in sets for a in ("--set", s)])
    profile = load_profile("smoke", {"paths": {"runs": str(tmp_path / "runs"), "data": str(tmp_path / "data")},
                                     "pretrain": {"examples": 64, "max_length": 6,
                                                  "train": {"max_steps": 2, "batch_size": 8}},
                                     "train": {"by_task": {"parity": {"max_steps": 3}}}})
    # the notebooks' grid (notebook 02 trains runs.main_runs), not the command's own spec_for
    grid = [r for r in runs.main_runs(profile) if (r.task, r.method, r.seed) == ("parity", "retuning", 0)]
    assert len(grid) == 1 and run == runs.finished_run(profile, grid[0])
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["model_kind"] == "run" and recorded["config"]["max_steps"] == 3  # the base, the task's budget
    wider = cli(argv + [a for s in dirs + ["model.tiny.hidden_size=48"] for a in ("--set", s)])
    assert json.loads((wider / "run.json").read_text())["model_config"]["hidden_size"] == 48  # --set model.* kept
    with pytest.raises(ValueError, match="--task and --method"):
        cli(["--task", "parity", "--data", "x.jsonl"])


def test_cli_errors_name_the_parameter(tmp_path):
    data = write_addition(tmp_path / "d.jsonl")
    runs = f"paths.runs={tmp_path / 'runs'}"
    with pytest.raises(ValueError, match=r"unknown key 'lrr' in train; did you mean 'lr'\? \(allowed: lr, epochs"):
        cli(["--data", str(data), "--set", "train.lrr=1", "--set", runs])
    with pytest.raises(ValueError, match="no such model directory: .*/nope"):
        cli(["--data", str(data), "--model", str(tmp_path / "nope"), "--set", runs])
    with pytest.raises(FileNotFoundError, match="dataset .*missing.jsonl.* does not exist"):
        cli(["--data", str(tmp_path / "missing.jsonl"), "--set", runs])
    with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
        cli(["--data", str(data), "--set", "lr"])
    assert not (tmp_path / "runs").exists()


def test_retune_cli_reports_errors(tmp_path, capsys):
    cli_module = pytest.importorskip("retune.cli")
    code = cli_module.main(["train", "--data", str(tmp_path / "missing.jsonl")])
    assert code == 2 and "missing.jsonl" in capsys.readouterr().err


# --- GPU -----------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_training_uses_cuda_and_bf16(tmp_path):
    run = T.train("tiny", [write_addition(tmp_path / "d.jsonl")], quick(), tmp_path / "runs", TINY)
    m = json.loads((run / "measurements.json").read_text())
    assert m["device"] == "cuda" and m["cuda_max_allocated_mb"] > 0
    args = trainer.training_arguments(quick(), tmp_path / "x", cuda=True)
    assert args.bf16 is True


def test_config_values_are_coerced_or_rejected():
    cfg = T.make_config({"lr": "3e-4", "max_steps": 5, "epochs": 2})
    assert (cfg.lr, cfg.max_steps, cfg.epochs) == (3e-4, 5, 2.0)
    assert isinstance(cfg.epochs, float) and isinstance(cfg.max_steps, int)
    with pytest.raises(ValueError, match="train.max_steps: expected an integer, got 2.5"):
        T.make_config({"max_steps": 2.5})
    with pytest.raises(ValueError, match="train.lr: expected a number, got 'fast'"):
        T.make_config({"lr": "fast"})
    assert T.make_config({"lora": {"r": 8}}).lora == {"r": 8}
