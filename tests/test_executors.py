"""Executors (retune.reproduce.executors): one process per GPU with the device list mocked (no GPU here), settings refused
in one line before any work, the sbatch script submitit writes from the profile (a fake sbatch on PATH), a run
trained in two processes (gloo) against one, and the main table by submitit's local executor against the local
executor's, byte for byte."""
import json
import os
import random
import stat
import time
from pathlib import Path

import pytest

from retune.reproduce import executors as E
from retune.training import fine_tune as T
from retune.reproduce.plan import Piece
from retune.config.profiles import ProfileError, load_profile
from retune.training.runs import RunSpec

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def small(tmp_path: Path, **over):
    """The smoke profile cut to one task and two methods (two runs, no study of its own), under tmp_path."""
    paths = {k: str(tmp_path / k) for k in ("data", "runs", "results", "figures")}
    return load_profile("smoke", {"paths": paths, "tasks": ["addition"], "methods": ["baseline", "retuning"],
                                  "studies": {"efficiency_n": [], "variants": [0], "ablations": ["retuning"]}}, over)


# --- one process per GPU -------------------------------------------------------------------------------------------
def test_gpus_one_worker_per_device_or_per_group_of_a_runs_processes(tmp_path, monkeypatch):
    gpus = small(tmp_path, executor={"kind": "gpus"})
    assert E.kind(gpus) == "gpus" and E.kind(small(tmp_path, workers="auto")) == "gpus"
    assert E.device_groups(gpus, ["0", "1", "2"]) == ["0", "1", "2"]
    assert E.device_groups(small(tmp_path, executor={"kind": "gpus", "gpus": 2}), ["4", "5", "6"]) == ["4", "5"]
    pairs = small(tmp_path, executor={"kind": "gpus"}, train={"processes": 2})
    assert E.device_groups(pairs, ["0", "1", "2", "3", "4"]) == ["0,1", "2,3"]  # a run's two ranks share a pair
    with pytest.raises(ProfileError, match=r"^executor.gpus: 4 asked, 2 visible here \(0, 1\)$"):
        E.device_groups(small(tmp_path, executor={"kind": "gpus", "gpus": 4}), ["0", "1"])
    with pytest.raises(ProfileError, match="no CUDA device is visible"):
        E.device_groups(gpus, [])
    with pytest.raises(ProfileError, match="train.processes: one run trains in 2 processes"):
        E.device_groups(pairs, ["0"])
    # the names are CUDA_VISIBLE_DEVICES's: a process given devices 3 and 5 pins its workers to 3 and 5
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert E.visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert E.visible_gpus() == ["0", "1"]


def _report_device(job):
    """A stand-in for a piece, in a worker of the gpus executor: what it is pinned to, and whether CUDA was touched."""
    import sys

    time.sleep(0.3)
    touched = "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()
    return {"seconds": {"work": 0}, "device": os.environ["CUDA_VISIBLE_DEVICES"] + ("!" if touched else "")}


def test_gpus_workers_are_pinned_each_to_its_own_device(tmp_path):
    profile = small(tmp_path, executor={"kind": "gpus"}, threads=1)
    pieces = [Piece("run", seed, RunSpec("addition", "baseline", seed)) for seed in range(6)]
    lines = []
    backend = E.Processes(profile, devices=["0", "1", "2"], work=_report_device)
    done = E.drive(profile, backend, lines.append, progress=False, pieces=([], pieces))
    assert done == pieces
    used = [line.split(" on GPU ")[1].split(":")[0] for line in lines[1:]]
    assert len(used) == 6 and set(used) <= {"0", "1", "2"} and len(set(used)) >= 2  # no "!": CUDA untouched
    assert "3 processes of 1 torch thread(s) each, pinned to GPU 0 | 1 | 2" in lines[0]


# --- settings refused before any work -------------------------------------------------------------------------------
@pytest.mark.parametrize("sets, message", [
    (["executor.kind=slurm"], "executor.kind slurm: no Slurm here (sbatch or srun is not on PATH)"),
    (["executor.partitoin=gpu"], "unknown key 'partitoin' in executor; did you mean 'partition'?"),
    (["executor.kind=gpus", "executor.gpus=64"], "executor.gpus: 64 asked, 2 visible here (0, 1)"),
    (["executor.kind=slurmm"], "executor.kind: unknown 'slurmm'; allowed: local, gpus, slurm"),
    (["workers=none"], "workers: expected a number >= 1 or auto"),
    (["train.processes=3"], "train.processes: must be >= 1 and divide batch_size (16)"),
])
def test_bad_settings_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, sets, message):
    from retune.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    monkeypatch.setattr(E, "visible_gpus", lambda: ["0", "1"])
    paths = [f"paths.{k}={tmp_path / k}" for k in ("data", "runs", "results")]
    argv = ["reproduce", "--profile", "smoke"] + [a for s in sets + paths for a in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()  # nothing built, nothing trained


def fake_slurm(folder: Path) -> Path:
    """sbatch, sinfo and srun stand-ins: sbatch keeps the script it was given and answers with a job id."""
    folder.mkdir()
    (folder / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {folder}/submitted.sh\necho "Submitted batch job 4242"\n')
    (folder / "sinfo").write_text('#!/bin/sh\nprintf "gpu*\\ncpu\\n"\n')
    (folder / "srun").write_text("#!/bin/sh\nexit 1\n")
    for name in ("sbatch", "sinfo", "srun"):
        (folder / name).chmod(stat.S_IRWXU)
    return folder


def test_slurm_job_array_from_the_profile(tmp_path, monkeypatch):
    bin_dir = fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executor = {"kind": "slurm", "partition": "gpu", "gpus_per_job": 2, "cpus_per_job": 8, "time_min": 90,
                "mem_gb": 40, "array_parallelism": 3, "setup": ["module load cuda"], "sbatch": {"account": "proj"},
                "logs": str(tmp_path / "jobs")}
    profile = small(tmp_path, executor=executor)
    E.check(profile)
    with pytest.raises(ProfileError, match=r"executor.partition: 'gpux' is not a partition .*\(sinfo lists: gpu, cpu"):
        E.check(small(tmp_path, executor=dict(executor, partition="gpux")))
    with pytest.raises(ProfileError, match="executor.gpus_per_job: 2 GPU.*cannot hold the 4 processes"):
        E.check(small(tmp_path, executor=executor, train={"processes": 4}))
    pieces = [Piece("run", 0, RunSpec("addition", m, 0)) for m in ("baseline", "retuning")]
    jobs = E.Jobs(profile).start(profile, pieces)
    assert [job.job_id for _, job in jobs] == ["4242_0", "4242_1"]  # one array of two
    script = (bin_dir / "submitted.sh").read_text()
    for line in ("--array=0-1%2", "--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--time=90",
                 "--mem=40GB", "--account=proj", "--job-name=retune-smoke"):
        assert f"#SBATCH {line}\n" in script, line
    assert "module load cuda\n" in script


# --- one run in two processes ---------------------------------------------------------------------------------------
def write_addition(path: Path, n: int = 64) -> Path:
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(n):
            k = rng.randint(1, 3)
            a, b = rng.randrange(10**k), rng.randrange(10**k)
            f.write(json.dumps({"input": f"{a} + {b}\nAnswer: ", "output": str(a + b), "task": "addition",
                                "method": "baseline", "size": k}) + "\n")
    return path


@pytest.mark.slow
def test_two_processes_on_gloo_give_the_losses_of_one(tmp_path):
    """The same global batch (8) as one process of 8 or two of 4: the same first losses within 1e-5 (float sums
    in another order), the same cache key, and the world size recorded."""
    data = write_addition(tmp_path / "addition.jsonl")
    losses = {}
    for n in (1, 2):
        config = T.TrainConfig(max_steps=3, batch_size=8, threads=1, logging_steps=1, progress=False, processes=n)
        run_dir = T.train("tiny", [data], config, tmp_path / f"runs{n}", TINY)
        m = json.loads((run_dir / "measurements.json").read_text())
        assert m["processes"] == n and m["steps"] == 3 and m["batches_run"] == 3
        losses[n] = (run_dir.name, [loss for _, loss in m["losses"]])
    assert losses[1][0] == losses[2][0]  # one run, whatever the number of processes
    assert losses[2][1] == pytest.approx(losses[1][1], abs=1e-5)
    assert losses[2][1][0] == pytest.approx(losses[1][1][0], abs=1e-6)


# --- the same tables by either executor -----------------------------------------------------------------------------
@pytest.mark.slow
def test_submitit_jobs_give_the_tables_of_local_processes_byte_for_byte(tmp_path):
    from retune.reproduce.runner import reproduce

    tables = {}
    for name, over in (("local", {"workers": 2}),
                       ("submitit", {"executor": {"kind": "slurm", "cluster": "local", "cpus_per_job": 1,
                                                  "time_min": 20}})):
        profile = small(tmp_path / name, threads=2, **over)
        lines = []
        done = E.execute(profile, lines.append, progress=False)
        assert len(done) == 2 and all(" in " in line for line in lines[1:]), lines
        if name == "submitit":
            assert "submitit's local executor" in lines[0] and list((tmp_path / name / "runs" / "jobs").iterdir())
            assert set(E.execute(profile, lines.append, progress=False)) == set(done)  # a re-run finds both done
            assert "(2 done before)" in lines[-1]
        reproduce(profile, only="03", executed_dir=tmp_path / name / "executed", progress=False, log=lines.append)
        tables[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name / "results").glob("*.csv"))}
    assert {"main_table.csv", "per_problem.csv"} <= set(tables["local"])
    assert tables["submitit"] == tables["local"]


@pytest.mark.slow
def test_a_failed_job_is_named_with_its_log(tmp_path):
    profile = small(tmp_path, train={"max_length": 3},  # every example too long: training refuses
                    executor={"kind": "slurm", "cluster": "local", "cpus_per_job": 1, "time_min": 5})
    lines = []
    with pytest.raises(E.PieceFailed, match=r"2 of 2 pieces failed; the first: addition/\w+ seed 0 failed: "
                                            r"ValueError: no training examples.*\(log: .*\.err\)"):
        E.execute(profile, lines.append, progress=False)
    log = Path(lines[-1].rsplit("(log: ", 1)[1].rstrip(")"))
    assert "ValueError: no training examples" in log.read_text()  # the traceback is in the job's log


@pytest.mark.gpu
def test_gpus_executor_on_real_devices(tmp_path):
    """With CUDA present: the smoke runs, one process per device, each run on its own GPU."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    profile = small(tmp_path, executor={"kind": "gpus"})
    lines = []
    assert len(E.execute(profile, lines.append, progress=False)) == 2
    assert all(" on GPU " in line for line in lines[1:])
