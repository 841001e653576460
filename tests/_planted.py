"""Traces with known failures, decoded without a model: the oracle, except that the leaves of a Re-Tuning call
tree (sub-problems solved without a call) answer with a space, and single-context methods answer with a space
everywhere. Failed Re-Tuning traces therefore nest as deep as their problem's call tree, which a smoke model
(20 training steps: it never writes a call) cannot show."""
from retune.evaluation import pipeline
from retune.training import runs
from retune.decoding.recursive import decode
from retune.decoding.generators import Generation, OracleGenerator
from retune.tasks import get_task


class LeafFaulty(OracleGenerator):
    def __init__(self, targets, tops):
        super().__init__(targets)
        self.tops = tops  # top contexts of Re-Tuning problems; empty: fail every context

    def _fails(self, context: str) -> bool:
        if not self.tops:
            return True
        return context in self.targets and "Call" not in self.targets[context] and context not in self.tops

    def generate(self, contexts, max_new_tokens):
        out = super().generate(contexts, max_new_tokens)
        return [Generation(" ", True, 1, 1) if self._fails(c) else g for c, g in zip(contexts, out)]


def planted(task_name: str, method: str, problems: list) -> list:
    """Every other problem fails (at its leaves for Re-Tuning), the rest are solved by the oracle."""
    task = get_task(task_name)
    failing, solved = problems[::2], problems[1::2]
    tops = {task.top_context(p, method) for p in failing} if method == "retuning" else set()
    bad = decode(task, failing, method, LeafFaulty(OracleGenerator.for_problems(task, failing, method).targets,
                                                   tops), progress=False)
    good = decode(task, solved, method, OracleGenerator.for_problems(task, solved, method), progress=False)
    return [t for pair in zip(bad, good) for t in pair] + bad[len(good):]


def planted_runs(profile) -> list[tuple[dict, dict, list]]:
    """(run spec, labels, traces) for every main run of the profile, on its own evaluation problems."""
    out = []
    for spec in runs.main_runs(profile):
        problems = pipeline.eval_problems(spec.task, tuple(profile.eval.sizes[spec.task]),
                                          profile.eval.problems_per_size, spec.seed)
        out.append((spec, spec.labels(profile, f"{spec.task}-{spec.method}-planted"),
                    planted(spec.task, spec.method, problems)))
    return out
