"""The data builder: determinism, the paper's re-sampling counts, manifests, and bad input."""
import json
import random
from collections import Counter

import pytest

from retune.data import datasets as data
from retune.cli import main
from retune.tasks import Example, get_task


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = data.make("addition", "retuning", tmp_path / "a.jsonl", sizes=(1, 6), n=20, seed=7, progress=False)
    b = data.make("addition", "retuning", tmp_path / "b.jsonl", sizes=(1, 6), n=20, seed=7, progress=False)
    c = data.make("addition", "retuning", tmp_path / "c.jsonl", sizes=(1, 6), n=20, seed=8, progress=False)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a["sha256"] == b["sha256"] != c["sha256"]


def test_records_and_manifest(tmp_path):
    out = tmp_path / "dp.jsonl"
    manifest = data.make("dp", "retuning", out, sizes=(2, 4), n=5, seed=0, progress=False)
    records = data.read(out)
    assert set(records[0]) == {"input", "output", "task", "method", "size", "depth", "kind"}
    assert manifest["records"] == len(records)
    assert sum(manifest["by_kind"].values()) == len(records) and set(manifest["by_kind"]) == {"base", "call",
                                                                                             "combine"}
    assert manifest["char_tokens"]["total"] == sum(len(r["input"]) + len(r["output"]) + 1 for r in records)
    assert data.read_manifest(out)["sha256"] == manifest["sha256"]
    # each of the 15 problems has two top-level contexts, one per call (docs/protocol.md, "DP")
    assert sum(r["input"].startswith("Compute the maximum") for r in records) == 15 * 2


def test_distinct_deduplicates_recursive_steps_and_lifts_rare_sizes():
    scaled = data.build("parity", "retuning", "scaled", sizes=(1, 6), n=50, seed=0, progress=False)
    distinct = data.build("parity", "retuning", "distinct", sizes=(1, 6), n=50, seed=0, progress=False)
    assert {r["input"] for r in distinct} == {r["input"] for r in scaled}  # the same steps ...
    per_prompt = Counter(r["input"] for r in distinct)
    by_size = Counter(r["size"] for r in distinct)
    largest = [r["input"] for r in distinct if r["size"] == 6]
    assert all(per_prompt[p] == 1 for p in largest)  # ... the commonest size's once each ...
    assert min(by_size.values()) >= data.SIZE_FLOOR * max(by_size.values())  # ... every size lifted to the floor
    assert by_size[1] < Counter(r["size"] for r in scaled)[1]  # the 2 one-bit steps no longer dominate
    assert len(distinct) < len(scaled)
    # baseline and scratchpad have one example per problem: their data is the scaled data
    for method in ("baseline", "scratchpad"):
        assert data.build("dp", method, "distinct", sizes=(1, 3), n=10, progress=False) == \
            data.build("dp", method, "scaled", sizes=(1, 3), n=10, progress=False)


def test_efficiency_gives_distinct_problems(tmp_path):
    records = data.build("addition", "baseline", "efficiency", sizes=(1, 3), n=10, seed=0, progress=False)
    assert Counter(r["size"] for r in records) == {1: 10, 2: 10, 3: 10}
    assert len({r["input"] for r in records}) == 30
    parity = data.build("parity", "baseline", "efficiency", sizes=(1, 2), n=10, progress=False)
    assert Counter(r["size"] for r in parity) == {1: 2, 2: 4}  # only 2 and 4 such lists exist


def test_paper_addition_problem_counts():
    task = get_task("addition")
    counts = Counter()
    for a, b in task.paper_problems("baseline", random.Random(0)):
        counts[tuple(sorted((len(a), len(b))))] += 1
    assert len(counts) == 120
    for (i, j), count in counts.items():
        assert count == 1000 * (1 + sum(i >= t for t in (3, 6, 9, 12))), (i, j)


def test_paper_addition_resampling_rules():
    task, rng = get_task("addition"), random.Random(0)
    def repeats(lengths, draws=1):
        ex = Example("x", "y", meta={"lengths": lengths})
        return [task.paper_repeats(ex, "retuning", rng) for _ in range(draws)]
    assert repeats((1, 1)) == [1000] and repeats((1, 2)) == [100] and repeats((2, 1)) == [100]
    assert repeats((2, 2)) == [5] and repeats((2, 9)) == [5] and repeats((3, 9)) == [1] and repeats((12, 12)) == [1]
    kept_mid = sum(repeats((5, 5), 4000)) / 4000
    kept_long = sum(repeats((10, 10), 4000)) / 4000
    assert abs(kept_mid - 0.15) < 0.03 and abs(kept_long - 0.35) < 0.03
    assert task.paper_repeats(Example("x", "y", meta={"lengths": (1, 1)}), "baseline", rng) == 1


def test_paper_dp_counts_and_baseline_repeats():
    records = data.build("dp", "baseline", "paper", progress=False)
    assert Counter(r["size"] for r in records) == {2: 121 * 100, 3: 11**3 * 10, 4: 11**4 * 3, 5: 11**5}


def test_paper_recursive_data_is_deduplicated_then_reweighted():
    task = get_task("parity")
    rng = random.Random(0)
    seen, examples = set(), []
    for bits in [task.sample(6, rng) for _ in range(40)]:
        examples += task.examples(bits, "retuning", seen)
    inputs = [e.input for e in examples]
    assert len(inputs) == len(set(inputs))
    sizes = Counter(e.size for e in examples)
    assert sizes[1] == 2 * 1  # [0] and [1]: one base context each
    weights = Counter()
    for e in examples:
        weights[e.size] += task.paper_repeats(e, "retuning", rng)
    assert weights[1] == 250 * sizes[1] and weights[2] == 30 * sizes[2] and weights[3] == 4 * sizes[3]


@pytest.mark.parametrize("argv,message", [
    (["--task", "sorting", "--method", "retuning"], "invalid choice: 'sorting'"),
    (["--task", "dp", "--method", "cot"], "invalid choice: 'cot'"),
    (["--task", "dp", "--method", "retuning", "--sizes", "0-3"], "sizes start at 1"),
    (["--task", "dp", "--method", "retuning", "--sizes", "5-2"], "wrong order"),
    (["--task", "dp", "--method", "retuning", "--sizes", "a-b"], "must look like A-B"),
    (["--task", "dp", "--method", "retuning", "--n", "-3"], "n (problems per size) must be in 1.."),
    (["--task", "dp", "--method", "retuning", "--variant", "7"], "variant must be in 0..3"),
])
def test_bad_input_is_a_clear_error_and_leaves_no_file(tmp_path, capsys, argv, message):
    out = tmp_path / "x.jsonl"
    try:
        code = main(["data", *argv, "--out", str(out), "--quiet"])
    except SystemExit as exit_:  # argparse's own choice errors
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_nothing(tmp_path):
    records = [{"input": "a", "output": "b", "size": 1}, {"input": object(), "output": "c", "size": 1}]
    with pytest.raises(TypeError):
        data.write(records, tmp_path / "bad.jsonl", {})
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_file_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert main(["data", "--task", "parity", "--method", "scratchpad", "--sizes", "2-3", "--n", "4",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 8 and out.exists() and data.manifest_path(out).exists()
