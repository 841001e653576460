"""Which main-grid runs of a profile with a candidate overlay are trained already (issue 28).

A run's cache key is made of its base's key, its datasets' bytes and its recipe, so a run the ood probe trained is
the committed profile's run once the profile describes the same base, data and recipe. The probe writes its data
to runs/probe-data; the check reads the keys from there (nothing is built, trained or loaded).

    python research/candidate_runs.py research/candidates/parity_own_base.yaml --task parity
"""
import argparse

from retune.training import runs
from retune.config.profiles import load_profile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("overlay", help="a YAML overlay over the cpu profile")
    ap.add_argument("--task", default="parity")
    ap.add_argument("--data", default="runs/probe-data", help="where the candidate's datasets were built")
    args = ap.parse_args()
    profile = load_profile("cpu", args.overlay, {"paths": {"data": args.data}})
    for seed in profile.seeds:
        base = runs.base_model(profile, seed, build=False, task=args.task)
        print(f"seed {seed} base: {base or 'not trained'}")
        for method in profile.methods:
            run = runs.finished_run(profile, runs.spec_for(profile, args.task, method, seed))
            print(f"  {method:<10} {run or 'not trained'}")


if __name__ == "__main__":
    main()
