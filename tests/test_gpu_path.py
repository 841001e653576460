"""What the GPU profiles (`smol`, `paper`) need, checked on CPU (issue 27): evaluation within a KV-cache budget and
the model's positions, limits in the model's tokens, a static-cache decoder that writes what `generate` writes, the
trained recipe's memory (and an out-of-memory said as such), the evaluation base loaded once in its dtype and
freed before the next, paths made absolute before the notebooks start, one device without a launcher, bf16 and the
training device checked, `threads` honoured. Every test names what it caught in the code before issue 27."""
import random
import subprocess
from pathlib import Path

import pytest
import torch

from retune.data import datasets as data
from retune.training import memory, runs
from retune.evaluation import pipeline
from retune.analysis import probe
from retune.training import fine_tune as T
from retune.training import trainer
from retune.decoding.recursive import Limits, decode, default_new_tokens
from retune.decoding.generators import Generation, HFGenerator, kv_bytes_per_token, oracle_targets
from retune.models.causal_lm import char_tokenizer, tiny_llama
from retune.config.profiles import load_profile
from retune.settings import ProfileError
from retune.tasks import get_task

from _tiny_pretrained import write_tiny_pretrained

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny LLaMA directory of the pretrained kind (byte-level BPE), 256 positions."""
    return write_tiny_pretrained(tmp_path_factory.mktemp("tiny") / "model", max_positions=256)


def parity_problems(n_per_size=3, sizes=range(1, 8), seed=0):
    task, rng = get_task("parity"), random.Random(seed)
    return task, [task.sample(n, rng) for n in sizes for _ in range(n_per_size)]


# --- 1. evaluation within a token budget ---------------------------------------------------------------------
def test_a_tiny_kv_budget_splits_batches_and_decodes_as_unsplit(parity_model):
    """Before: batches were counted in rows only (HFGenerator had no budget: a TypeError here)."""
    model, tok = parity_model
    task, problems = parity_problems()
    unsplit = HFGenerator(model, tok, batch_size=64)
    budget_tokens = 300
    split = HFGenerator(model, tok, batch_size=64, kv_budget_gib=budget_tokens * kv_bytes_per_token(model) / 2**30)
    assert split.budget == budget_tokens and unsplit.budget > 10**5  # 4 GiB on a CPU
    assert decode(task, problems, "retuning", split) == decode(task, problems, "retuning", unsplit)
    assert len(split.batches) > 2 * len(unsplit.batches)
    assert max(rows for rows, _ in unsplit.batches) > max(rows for rows, _ in split.batches)
    assert all(tokens <= budget_tokens for rows, tokens in split.batches if rows > 1)  # one row may exceed it alone
    # teacher forcing: the same budget, the same verdicts
    contexts, targets = zip(*oracle_targets(task, problems, "retuning").items())
    forced_split, forced_unsplit = split.exact(contexts, targets), unsplit.exact(contexts, targets)
    assert forced_split == forced_unsplit and 0 < sum(forced_split) < len(contexts)  # trained on 1-3 bits only
    assert all(tokens <= budget_tokens for rows, tokens in split.batches[-10:] if rows > 1)


def test_kv_bytes_per_token_reads_the_models_config(tiny_dir):
    """2 (keys, values) x layers x KV heads x head size x dtype bytes: grouped-query attention counts its KV heads.
    Before: no estimate existed (ImportError)."""
    from retune.models.causal_lm import load_pretrained

    model, _ = load_pretrained(str(tiny_dir))
    assert kv_bytes_per_token(model) == 2 * 2 * 2 * 8 * 4  # 2 layers, 2 KV heads of 32 / 4 = 8 dims, float32
    assert kv_bytes_per_token(model.to(torch.bfloat16)) == 2 * 2 * 2 * 8 * 2


def test_limits_are_counted_in_the_models_tokens(tiny_dir):
    """Before: 2 x the target's characters + 16, applied as tokens (5,714 tokens at 60-digit scratchpad)."""
    from retune.models.causal_lm import load_pretrained

    model, tok = load_pretrained(str(tiny_dir))
    generator = HFGenerator(model, tok)
    task = get_task("addition")
    problem = task.sample(6, random.Random(1))
    longest = max((e.output for e in task.examples(problem, "scratchpad")), key=len)
    tokens = len(tok(longest, add_special_tokens=False)["input_ids"])
    assert tokens < len(longest)  # the BPE merges: tokens and characters differ
    seen = []

    def recording(contexts, limits):
        seen.extend(limits)
        return [Generation("", True, 1, 1)] * len(contexts)

    generator.generate = recording
    decode(task, [problem], "scratchpad", generator)
    assert seen == [default_new_tokens(tokens)]


def test_no_row_runs_past_the_models_positions(tiny_dir):
    """A context that fills the model's 256 positions is the token_limit error without a generation; one that
    leaves room generates only up to it. Before: generation ran past max_position_embeddings."""
    from retune.models.causal_lm import load_pretrained

    model, tok = load_pretrained(str(tiny_dir))
    long, short = "1" * 300, "1" * 200
    assert len(tok(long)["input_ids"]) >= 256 > len(tok(short)["input_ids"])
    for decoder in ("generate", "static"):
        generator = HFGenerator(model, tok, decoder=decoder)
        full, room = generator.generate([long, short], [100, 100])
        assert (full.text, full.stopped, full.tokens_out) == ("", False, 0)
        assert room.tokens_in + room.tokens_out <= 256
    task = get_task("addition")
    problem = task.sample(3, random.Random(0))
    trace = decode(task, [problem], "baseline", HFGenerator(model, tok), Limits(new_tokens=10**4))[0]
    assert trace.error == "token_limit" and trace.tokens_in + trace.tokens_out <= 256


# --- 7. a static KV cache behind the same interface --------------------------------------------------------
@pytest.mark.parametrize("pad_shapes", [False, True], ids=["as-is", "padded-shapes"])
def test_the_static_cache_decoder_writes_what_generate_writes(parity_model, pad_shapes):
    """Calls, returns, EOS and limits from a model that really calls; with the compiled decoder's shape padding
    (rows and the cache length to powers of two) too. Before: no decoder but `generate`."""
    model, tok = parity_model
    task, problems = parity_problems(2)
    static = HFGenerator(model, tok, batch_size=8, decoder="static")
    static.pad_shapes = pad_shapes
    reference = decode(task, problems, "retuning", HFGenerator(model, tok, batch_size=8))
    assert decode(task, problems, "retuning", static) == reference
    assert len({t.outcome for t in reference}) > 1 and any(t.contexts > 1 for t in reference)


def test_the_static_cache_decoder_forces_as_generate_does():
    """A random model with the oracle's tokens forced, every 11th left to the model (benchmarks/decode.py)."""
    task, rng = get_task("addition"), random.Random(3)
    problems = [task.sample(n, rng) for n in (2, 4, 6) for _ in range(2)]
    tok = char_tokenizer()
    model = tiny_llama({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 64}, tok).eval()
    forced = oracle_targets(task, problems, "retuning")
    traces = [decode(task, problems, "retuning", HFGenerator(model, tok, batch_size=4, forced=forced, holes=11,
                                                             decoder=d)) for d in ("generate", "static")]
    assert traces[0] == traces[1]
    assert HFGenerator(model, tok, decoder="auto").decoder == "generate"  # compiled only on CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_compiled_decoder_is_chosen_on_cuda_and_writes_what_generate_writes(parity_model):
    model, tok = parity_model
    model = model.to("cuda")
    task, problems = parity_problems(4)
    compiled = HFGenerator(model, tok, decoder="auto")
    assert compiled.decoder == "compiled"
    assert decode(task, problems, "retuning", compiled) == \
        decode(task, problems, "retuning", HFGenerator(model, tok, decoder="generate"))
    model.to("cpu")


# --- 2. the memory notebook measures the recipe that is trained ----------------------------------------------
def gpu_profile(tmp_path, name, model, over=None):
    """A GPU profile on CPU: device and dtype cpu/float32, bf16 off, tiny budgets."""
    dirs = {key: str(tmp_path / key) for key in ("data", "runs", "results", "figures")}
    layer = {"paths": dirs, "model": {"source": str(model)}, "seeds": [0], "threads": 1, "workers": 1,
             "train": {"max_steps": 2, "device": "cpu", "dtype": "float32", "bf16": False, "problems_per_size": 2,
                       "sizes": {"addition": 3, "dp": 3, "parity": 4}},
             "eval": {"device": "cpu", "dtype": "float32", "problems_per_size": 2,
                      "sizes": {"addition": [2, 4], "dp": [2, 4], "parity": [2, 5]}}}
    return load_profile(name, layer, over or {})


@pytest.mark.slow  # three child processes, each importing torch and transformers
def test_the_memory_row_is_the_trained_recipe(tmp_path, tiny_dir):
    """LoRA, the recipe's batch (paper: 4) and dtype, the training device and threads. Before: the base without
    LoRA at the train section's batch, on whatever device, with torch's threads."""
    profile = gpu_profile(tmp_path, "paper", tiny_dir)
    row = pipeline.training_memory(profile, "addition", "retuning")
    assert row["status"] == "ok" and row["lora"] is True and row["trainable_params"] < row["params"]
    assert (row["batch_size"], row["dtype"], row["bf16"], row["device"], row["threads"]) == \
        (4, "float32", False, "cpu", 1)
    smol = gpu_profile(tmp_path, "smol", tiny_dir, {"train": {"by_task": {"dp": {"batch_size": 8}}}})
    assert pipeline.training_memory(smol, "dp", "retuning")["batch_size"] == 8  # train.by_task.dp


def test_an_out_of_memory_step_is_a_row_that_says_so(monkeypatch, tmp_path):
    """Before: subprocess's "returned non-zero exit status" from the notebook."""
    def killed(argv, **kwargs):
        return subprocess.CompletedProcess(argv, -9, "", "")

    monkeypatch.setattr(memory, "run_child", killed)
    assert memory.measure_in_child({"data": "x"})["status"] == "OOM"

    def oom(**job):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(memory, "measure", oom)
    row = memory.child_main({"data": "x", "device": "cuda"})
    assert row["status"] == "OOM" and "Tried to allocate" in row["error"]
    monkeypatch.setattr(memory, "measure", lambda **job: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # any other failure stays a failure
        memory.child_main({"data": "x"})

    def failed(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 1, "", "Traceback ...\nValueError: no such model\n")

    monkeypatch.setattr(memory, "run_child", failed)
    with pytest.raises(RuntimeError, match="no such model"):
        memory.measure_in_child({"data": "x"})


# --- 3. paths, the evaluation base, freeing models -------------------------------------------------------------
def lora_run(tmp_path, tiny_dir) -> Path:
    path = tmp_path / "d.jsonl"
    task, rng = get_task("addition"), random.Random(0)
    records = [{"input": e.input, "output": e.output, "task": "addition", "method": "retuning", "size": 2}
               for _ in range(8) for e in task.examples(task.sample(2, rng), "retuning")]
    data.write(records, path, {"task": "addition", "method": "retuning", "seed": 0, "variant": 0})
    config = T.make_config({"max_steps": 2, "batch_size": 4, "lr": 1e-2, "lora": {"r": 4, "lora_alpha": 8},
                            "progress": False, "threads": 1})
    return T.train(str(tiny_dir), [path], config, tmp_path / "runs")


@pytest.mark.slow  # a LoRA run trained
def test_the_evaluation_base_loads_once_in_the_evaluation_dtype(tmp_path, tiny_dir, monkeypatch):
    """Before: the base was rebuilt in float32 (the training dtype) on the CPU, merged there, then cast."""
    run = lora_run(tmp_path, tiny_dir)
    loads = []
    real = T.load_pretrained

    def recording(source, dtype="float32", *args, **kwargs):
        loads.append(dtype)
        return real(source, dtype, *args, **kwargs)

    monkeypatch.setattr(T, "load_pretrained", recording)
    model, _ = T.load_trained(run, merge=True, device="cpu", dtype="bfloat16")
    assert loads == ["bfloat16"] and T.placement(model) == {"device": "cpu", "dtype": "bfloat16"}
    assert type(model).__name__ == "LlamaForCausalLM"  # merged
    reference, _ = T.load_trained(run, merge=True)  # float32, merged in float32
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        close = torch.allclose(model(ids).logits.float(), reference(ids).logits, atol=0.1)
    assert close


def test_the_step_probe_frees_each_model_before_the_next_loads(tmp_path, monkeypatch):
    """Before: the previous generator stayed alive while the next model loaded."""
    made = []

    class Fake:
        def __init__(self):
            assert all(g.closed for g in made), "the previous model is still held"
            self.closed = False
            made.append(self)

        def exact(self, contexts, targets):
            return [True] * len(contexts)

        def close(self):
            self.closed = True

    profile = load_profile("smoke", {"paths": {"runs": str(tmp_path)}, "step_probe": {"model": "some/model"}})
    monkeypatch.setattr(runs, "trained", lambda *a, **k: tmp_path / "a")
    monkeypatch.setattr(probe, "pretrained_run", lambda *a, **k: tmp_path / "b")
    monkeypatch.setattr(pipeline, "hf_generator", lambda *a: Fake())
    monkeypatch.setattr(pipeline, "trained_contexts", lambda *a: set())
    assert len(probe.step_probe(profile)) > 0 and len(made) == 2 and all(g.closed for g in made)


def test_relative_model_paths_are_absolute_before_the_notebooks_start(tmp_path, monkeypatch):
    """`make reproduce MODEL=./llama` passes --model ./llama; `--set model.source=...` and a profile's YAML may
    name a relative directory too. Papermill runs the notebooks in notebooks/, so each must be absolute. Before:
    only --model was resolved."""
    from retune.commands import reproduce as command
    from retune.cli import main

    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(command, "reproduce", lambda profile, **kw: seen.append(profile) or [])
    main(["reproduce", "--profile", "smoke", "--model", "./llama"])
    main(["reproduce", "--profile", "smoke", "--set", "model.source=llama", "--set", "step_probe.model=./llama"])
    assert [p.model.source for p in seen] == [str(tmp_path / "llama")] * 2
    assert seen[1].step_probe.model == str(tmp_path / "llama")
    main(["reproduce", "--profile", "smoke", "--set", "step_probe.model=smollm2-135m"])
    assert (seen[2].model.source, seen[2].step_probe.model) == ("tiny", "smollm2-135m")  # names stay names
    make = subprocess.run(["make", "-n", "-C", str(ROOT), "reproduce", "MODEL=./llama"], capture_output=True,
                          text=True, check=True).stdout
    assert "--model ./llama" in make  # ... which run_cli resolves, as above


# --- 4. one device, bf16, the training device, threads ----------------------------------------------------------
def fake_gpus(monkeypatch, count=2, bf16=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a, **k: None)


def test_several_gpus_without_a_launcher_train_on_one(tmp_path, monkeypatch, capsys):
    """Before: the Trainer counted 2 GPUs and wrapped the model in DataParallel (twice the recipe's batch)."""
    fake_gpus(monkeypatch)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = trainer.training_arguments(T.TrainConfig(bf16=False), tmp_path, cuda=True)
    assert args.n_gpu == 1 and "2 GPUs visible and no launcher" in capsys.readouterr().err


def test_bf16_is_checked_against_the_gpu_when_the_profile_is(monkeypatch, tmp_path):
    """Before: bf16 true loaded on a GPU without bf16 and failed in the first training step; auto turned it on."""
    fake_gpus(monkeypatch, count=1, bf16=False)
    with pytest.raises(ProfileError, match=r"train.bf16: true needs a CUDA device with bf16, but this machine"):
        load_profile("smol")
    assert trainer.training_arguments(T.TrainConfig(bf16="auto"), tmp_path, cuda=True).bf16 is False
    with pytest.raises(ProfileError, match=r"train.bf16: true needs a CUDA device with bf16, but train.device is cpu"):
        load_profile("smoke", {"train": {"bf16": True, "device": "cpu"}})


def test_the_training_device_is_a_checked_recipe_key_outside_the_cache_key(tmp_path):
    """Before: no such key (an unknown-key error)."""
    assert load_profile("smoke", {"train": {"device": "cpu"}}).train.device == "cpu"
    with pytest.raises(ProfileError, match=r"train.by_task.dp.device: expected one of auto, cpu, cuda"):
        load_profile("smoke", {"train": {"by_task": {"dp": {"device": "gpu"}}}})
    assert T.key_config({"lr": 1.0, "device": "cpu"}) == T.key_config({"lr": 1.0, "device": "cuda"})
    assert trainer.on_cuda("cpu") is False and trainer.on_cuda("auto") is torch.cuda.is_available()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device here"):
            trainer.on_cuda("cuda")


@pytest.mark.slow  # a child process
def test_threads_are_honoured_by_every_notebook_and_the_memory_child(tmp_path, tiny_dir):
    """Before: notebook 02 trained and the memory child measured with torch's default threads."""
    from retune.reproduce.notebook import setup
    from retune.reproduce.runner import parameters

    torch.set_num_threads(2)
    try:
        setup(parameters(load_profile("smoke", {"threads": 1})))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)
    profile = gpu_profile(tmp_path, "paper", tiny_dir, {"threads": 2})
    assert pipeline.training_memory(profile, "parity", "baseline")["threads"] == 2
