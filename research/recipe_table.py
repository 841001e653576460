"""The SmolLM2 recipe candidates of research/logs/smol_recipes.jsonl as one table: per candidate and probed step,
teacher-forced accuracy of each step kind pooled in distribution (sizes up to the candidate's trained maximum) and
beyond, with the wall time so far.   python research/recipe_table.py"""
import json

import jsonlog

LOG = jsonlog.LOGS / "smol_recipes.jsonl"


def pooled(rows, kind, inside, top):
    chosen = [r for r in rows if r["kind"] == kind and (r["size"] <= top) == inside]
    total = sum(r["total"] for r in chosen)
    return f"{sum(r['right'] for r in chosen) / total:.2f}" if total else "-"


def main():
    print("| candidate | step | loss | call in / beyond | combine in / beyond | base in / beyond | wall s |")
    print("|---|---|---|---|---|---|---|")
    for line in LOG.read_text().splitlines():
        d = json.loads(line)
        cells = [f"{pooled(d['rows'], k, True, d['top'])} / {pooled(d['rows'], k, False, d['top'])}"
                 for k in ("call", "combine", "base")]
        print(f"| {d['candidate']} | {d['step']} | {d['loss']:.3f} | {' | '.join(cells)} | {d['wall_seconds']} |")


if __name__ == "__main__":
    main()
