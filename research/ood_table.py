"""The out-of-distribution issue's evidence in one table per task: every candidate of research/ood_probe.py (its
latest line per run), step by step (teacher-forced call / combine / base, and decoded end to end) at each size,
with the mean beyond the trained maximum. Markdown on stdout:

    python research/ood_table.py [--task addition] [--log research/logs/ood_probe.jsonl]
"""
import argparse
import json
from pathlib import Path

import jsonlog

STEPS = ("call", "combine", "base", "decoded")


def latest_per_run(log: Path, task: str) -> list[dict]:
    """One record per run, the last one logged (a rerun adds the end-to-end decode to a cached run's probe)."""
    records = {}
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if r["task"] == task:
            records[r["run"]] = r
    return list(records.values())


def base_label(r: dict) -> str:
    examples = f", {r['pretrain_examples'] // 1000}k ex." if r.get("pretrain_examples") else ""
    heads = f", first items {r['heads']}" if r.get("heads") else ""
    return f"{r['surfaces']} surfaces, recalls {r['multiline']}{heads}, {r['pretrain_steps']} st{examples}"


def finetune_label(r: dict) -> str:
    how = "full"
    if r["lora"]:
        how = f"LoRA r={r['lora']}"
    elif r.get("frozen"):
        how = f"full, lowest {r['frozen']} layers frozen"
    weighing = ", example mean" if r.get("loss_mean") == "example" else ""
    lr = f", lr {r['lr']:g}" if r.get("lr") else ""
    return f"{r['method']}, {how}, {r['steps']} st{lr}, rehearsal {r['mix']}{weighing}, seed {r['seed']}"


def beyond_mean(by_size: dict, top: int) -> str:
    beyond = [v for size, v in by_size.items() if int(size) > top]
    return f"{sum(beyond) / len(beyond):.2f}" if beyond else ""


def table(records: list[dict]) -> str:
    sizes = sorted({int(s) for r in records for step in STEPS for s in r["steps_by_size"].get(step, {})})
    top = records[0]["top"]
    head = (f"| base | fine-tune | step | {' | '.join(str(s) for s in sizes)} | mean > {top} |\n"
            f"|---|---|---|{'---|' * len(sizes)}---|")
    rows = []
    for r in records:
        for step in STEPS:
            by_size = r["steps_by_size"].get(step) or {}
            if by_size:
                cells = " | ".join(f"{by_size[str(s)]:.2f}" if str(s) in by_size else "" for s in sizes)
                mean = beyond_mean(by_size, top)
                rows.append(f"| {base_label(r)} | {finetune_label(r)} | {step} | {cells} | {mean} |")
    return "\n".join([head, *rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="addition", choices=["addition", "parity", "dp"])
    ap.add_argument("--log", type=Path, default=jsonlog.LOGS / "ood_probe.jsonl")
    args = ap.parse_args()
    records = latest_per_run(args.log, args.task)
    if not records:
        raise SystemExit(f"no {args.task} candidate in {args.log}")
    print(table(records))


if __name__ == "__main__":
    main()
