"""`retune train`: one run, trained exactly as the notebooks train it, or on given JSONL files."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from ..training import fine_tune as train
from ..files import DEFAULT_PROFILE
from ..config.profiles import load_profile, merge, parse_sets, where
from ..training.checks import check_machine, check_source
from ..settings import check_seed
from ..training.trainer import read_jsonl
from ..training.runs import base_model, spec_for, train_config, trained, use_threads
from ..tasks import METHODS, TASKS


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune a model (cached by its inputs); print the run directory",
                              description="Train the profile's run of a task x method x seed (--task/--method: "
                                          "the same run the notebooks train, pre-training and per-task budgets "
                                          "included), or fine-tune the profile's base on JSONL files (--data) "
                                          "with its `train` recipe. Prints the run directory.")
    p.add_argument("--task", help=f"one of {', '.join(TASKS)} (with --method)")
    p.add_argument("--method", help=f"one of {', '.join(METHODS)} (with --task)")
    p.add_argument("--data", action="append", metavar="FILE.jsonl",
                   help="instead of --task/--method: training data (repeatable; the files are concatenated)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name (profiles/) or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                   help="override a profile key (repeatable), dotted into a section: --set train.max_steps=100")
    p.add_argument("--model", help="model.source: 'tiny', a run directory, a local model directory, or a hub id "
                   "when RETUNE_ALLOW_HUB=1 (never downloaded otherwise)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the profile's first)")
    p.set_defaults(func=run_cli)


def run_cli(args) -> Path:
    if bool(args.data) == bool(args.task or args.method):
        raise ValueError("give --task and --method (the profile's run), or --data FILE.jsonl (not both)")
    if not args.data and not (args.task and args.method):
        raise ValueError("--task and --method go together")
    if args.model is not None:  # at once: a profile with `pretrain` would build its base before the model is read
        check_source(args.model)
    model = {"model": {"source": args.model}} if args.model is not None else {}
    profile = load_profile(args.profile, merge(parse_sets(args.set), model))
    check_machine(profile, evaluation=False)  # bf16 true without CUDA: refused before anything is built
    if args.seed is not None:
        check_seed(args.seed, "--seed")
    if args.data:
        for path in args.data:  # before the base: a profile that pre-trains would build it first
            if not Path(path).is_file():
                raise FileNotFoundError(f"dataset {path!r} does not exist (--data expects a JSONL file)")
        seed = profile.seeds[0] if args.seed is None else args.seed
        for path in args.data:  # every record checked before a base is built (or pre-trained, for minutes)
            read_jsonl(path)
        source = base_model(profile, seed)
        tiny = asdict(profile.model.tiny) if source == "tiny" else None
        config = replace(train_config(profile, seed), threads=profile.threads)
        run_dir = train.train(source, args.data, config, where(profile, "runs"), tiny)
    else:
        use_threads(profile)
        run_dir = trained(profile, spec_for(profile, args.task, args.method, args.seed))
    print(run_dir)
    return run_dir
