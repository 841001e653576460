"""Print research/results.jsonl as a markdown table (one row per run): python research/table.py"""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "research/results.jsonl"
print("| run | task | pos | model | pretrain | finetune | eval pos | ID exact | OOD exact | ID first call | OOD first call | wall s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for line in open(path):
    r = json.loads(line)
    a = r["args"]
    model = f"h{a['hidden']} L{a['layers']} ({r['params'] / 1e6:.2f}M)"
    pt = r.get("pretrain")
    pts = f"{a['pt_min']} min, {pt['steps']} st, len {a['pt_len']}" if pt else ("loaded" if a["load"] else "none")
    ft = r.get("finetune")
    fts = f"{a['ft_min']} min, {ft['steps']} st, lr {a['ft_lr']}, mix {a['mix']}" if ft else "none"
    for k in [x for x in ("eval_plain", "eval_random") if x in r]:
        e = r[k]
        print(f"| {r['name']} | {a['task']} | {a['pos']} | {model} | {pts} | {fts} | {k[5:]} | {e['ID']['exact']:.3f} | "
              f"{e['OOD']['exact']:.3f} | {e['ID']['first']:.3f} | {e['OOD']['first']:.3f} | {r['wall_seconds']:.0f} |")
