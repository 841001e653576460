"""Scored as the paper scores: the string each of its evaluation notebooks compares, per task and method (golden
cases for every way that differs from reading the answer as a number or a list), under both decoding semantics;
and the official semantics' control flow against an independent one-problem-at-a-time re-implementation."""
import pytest

from retune.decoding.recursive import decode
from retune.decoding.generators import OracleGenerator
from retune.tasks import get_task

from _tiny_model import fit_tiny

ADD, DP, PAR = get_task("addition"), get_task("dp"), get_task("parity")


# --- the string rules, on whole top-level texts ------------------------------------------------------------------
@pytest.mark.parametrize("problem, answer, right", [
    (("30", "35"), "Carry 0, Output 65", True),
    (("30", "35"), "Carry 0, Output 065", False),  # an integer reading says 65
    (("30", "35"), "Carry 0, Output 65\n", False),  # so does a stripped one
    (("30", "35"), "Carry 2, Output 65", True),  # the carry is only looked at for "1": we cannot parse it
    (("7", "8"), "Carry 1, Output 5", True),
    (("7", "8"), "Carry 0, Output 15", True),
    (("7", "8"), "Carry 1, Output 05", False),
])
def test_addition_reads_carry_and_output_as_strings(problem, answer, right):
    whole = f"{problem[0]} + {problem[1]}\nSolution: {answer}"
    assert ADD.is_correct(problem, "retuning", whole, answer) is right
    assert ADD.is_correct(problem, "scratchpad", f"{whole[:-len(answer)]}Carry 0, Output 9\n{answer}") is right


def test_addition_reads_the_last_word_when_the_third_last_is_no_carry_of_1():
    """The paper's reading is not stricter than ours everywhere: a bare sum is read as the output."""
    assert ADD.is_correct(("7", "8"), "retuning", "7 + 8\nSolution: 15", "15")
    assert not ADD.is_correct(("7", "8"), "retuning", "Answer: 15", "15")  # under three words: no reading


@pytest.mark.parametrize("generated, right", [("65", True), ("065", False), ("65\n", False), (" 65", False)])
def test_addition_baseline_is_its_answer_string(generated, right):
    context = ADD.baseline(("30", "35"))[0]
    assert ADD.is_correct(("30", "35"), "baseline", context + generated, generated) is right


@pytest.mark.parametrize("method, whole, right", [
    ("retuning", "...Return: [1, 2]\nAnswer: ", True),
    ("retuning", "...Return: [1,2]\nAnswer: ", False),  # a list reading accepts it
    ("retuning", "...Return: [1, 2] \nAnswer: ", False),
    ("retuning", "...Return: [1, 2]\nmore\nAnswer: ", True),  # only the return's first line is compared
    ("retuning", None, False),  # a top level that did not end at its second return: nothing to read
    ("baseline", "Input = [3, -1].\nAnswer:  [1, 2] \n", True),  # stripped
    ("baseline", "Input = [3, -1].\nAnswer: [1, 2, ]", False),
    ("scratchpad", "input = [3, -1].\n...output=[1, 2].", True),
    ("scratchpad", "input = [3, -1].\n...output=[1, 2]", False),  # the last character is dropped, not a period
    ("scratchpad", "input = [3, -1].\n...output=[01, 2].", False),
    ("no_carryover", "...Call: x\nAnswer: [1, 2]", True),
    ("no_carryover", "...Call: x\nAnswer: [1, 02]", False),
])
def test_dp_reads_the_list_as_python_prints_it(method, whole, right):
    assert DP.is_correct([3, -1], method, whole, "[1, 2]") is right


@pytest.mark.parametrize("method, whole, right", [
    ("retuning", "What is the parity of [1, 0]?\nSolution: 1", True),
    ("retuning", "What is the parity of [1, 0]?\nSolution: 1\n", False),
    ("retuning", "What is the parity of [1, 0]?\nSolution: 01", False),  # an integer reading says 1
    ("retuning", "What is the parity of [1, 0]?\nSolution: so 1", True),  # the text after the last space
    ("baseline", "What is the parity of [1, 0]?\nAnswer: 1\n", True),  # the last character not a space
    ("baseline", "What is the parity of [1, 0]?\nAnswer: x1", True),
    ("baseline", "What is the parity of [1, 0]?\nAnswer: ", False),
    ("scratchpad", "What is the parity of [1, 0]?\nSolution: Compute one element at a time. 1 1", True),
    ("scratchpad", "What is the parity of [1, 0]?\nSolution: Compute one element at a time. 1 1.", False),
])
def test_parity_reads_one_bit_string(method, whole, right):
    assert PAR.is_correct([1, 0], method, whole, whole.split(": ")[-1]) is right


# --- through the decoder: the verdict is the paper's, our error kinds stay --------------------------------------
def scripted(task, problem, method, last):
    """The oracle's texts, with the top level's last turn replaced by `last`."""
    targets = {e.input: e.output for e in task.examples(problem, method)}
    top = max((c for c in targets if c.startswith(task.tree(problem).prompt)), key=len)
    return OracleGenerator({**targets, top: last})


@pytest.mark.parametrize("semantics", ["strict", "official"])
@pytest.mark.parametrize("last, correct, predicted, error", [
    ("Carry 0, Output 65", True, 65, None),
    ("Carry 0, Output 065", False, 65, None),  # well formed, parsed to the right number, and wrong
    ("Carry 2, Output 65", True, None, "unparseable_answer"),  # we cannot read it; the paper counts it right
])
def test_the_decoder_scores_as_the_paper(semantics, last, correct, predicted, error):
    problem = ("30", "35")
    trace = decode(ADD, [problem], "retuning", scripted(ADD, problem, "retuning", last), semantics=semantics)[0]
    assert (trace.correct, trace.predicted, trace.error) == (correct, predicted, error)


def test_a_dp_top_level_that_answers_instead_of_calling_again_is_wrong():
    problem = [3, -1]
    targets = {e.input: e.output for e in DP.examples(problem, "retuning")}
    top = DP.tree(problem).prompt + "\nSolution: "
    generator = OracleGenerator({**targets, top: "[1, 2]"})
    for semantics in ("strict", "official"):
        trace = decode(DP, [problem], "retuning", generator, semantics=semantics)[0]
        assert trace.predicted == [1, 2] and not trace.correct, semantics


# --- the official control flow, re-implemented one problem at a time ------------------------------------------
def trained(task, problems, steps, seed=0):
    """A tiny LLaMA after `steps` full-batch Adam steps on the Re-Tuning examples of `problems`: it has learnt
    those, more or less, and writes calls, returns and answers, right and wrong, on others."""
    return fit_tiny({e.input: e.output for problem in problems for e in task.examples(problem, "retuning")},
                    steps, seed)


def notebook(task, problem, model, tok):
    """The paper's evaluation notebook for `task`, in its own few lines: plain greedy `generate`, one problem at a
    time, the recursion by hand, the notebook's string comparison. Returns (correct, top-level text)."""
    import torch

    cap, limit = (1024 if task.name == "dp" else 2048), task.depth_limit(task.size_of(problem))
    aborts = task.name != "addition"

    def generate(text):
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_length=cap, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        out = out[:out.index(tok.eos_token_id)] if tok.eos_token_id in out else out
        return tok.decode(out, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def solve(text, depth):  # -> (text, last generation, aborted, ended at a second return)
        gen = generate(text)
        text += gen
        if depth >= limit:
            return text, gen, aborts, False
        calls = 0
        while text.count("Call: ") > calls and not (task.name == "addition" and calls == 1):
            calls += 1
            call = text.split("Call: ")[-1]
            if "\n" not in call:
                return text, gen, aborts, False
            sub, sub_gen, aborted, _ = solve(call.split("\n")[0] + "\nSolution: ", depth + 1)
            if aborted:
                return text, gen, True, False
            value = {"addition": sub_gen, "dp": sub.split("\nAnswer: ")[-1], "parity": sub.split(" ")[-1]}[task.name]
            text = (text + "Return: " + value + "\nAnswer: ").replace("  ", " ")
            if task.name == "dp" and calls == 2:
                return text, gen, False, True
            gen = generate(text)
            text += gen
        return text, gen, False, False

    text, _, _, at_return = solve(task.tree(problem).prompt + "\nSolution: ", 0)
    if task.name == "addition":
        words = text.split(" ")
        carry, output = words[-3][:-1], words[-1]
        return (carry + output if carry == "1" else output) == str(int(problem[0]) + int(problem[1])), text
    if task.name == "dp":
        return at_return and text.split("Return: ")[-1].split("\n")[0] == str(task.solve(problem)), text
    return text.split(" ")[-1] == str(sum(problem) % 2), text


@pytest.mark.slow
@pytest.mark.parametrize("name, sizes", [("addition", (1, 2, 3, 3)), ("dp", (2, 2, 3)), ("parity", (2, 3, 4, 4))])
def test_the_batched_official_semantics_agrees_with_the_notebook_verdict_for_verdict(name, sizes):
    """The trained problems (mostly right) and as many fresh ones, a size larger (mostly wrong)."""
    import random

    import torch

    from retune.decoding.generators import HFGenerator

    torch.set_num_threads(1)
    task = get_task(name)
    rng = random.Random(0)
    learnt = [task.sample(size, rng) for size in sizes]
    model, tok = trained(task, learnt, steps=250)
    problems = learnt + [task.sample(size + 1, rng) for size in sizes]
    traces = decode(task, problems, "retuning", HFGenerator(model, tok, batch_size=16), semantics="official")
    expected = [notebook(task, p, model, tok) for p in problems]
    assert [t.correct for t in traces] == [right for right, _ in expected]
    assert [t.root.context for t in traces] == [text for _, text in expected]  # the same top-level texts
    verdicts = [t.correct for t in traces]
    assert any(verdicts) and not all(verdicts), verdicts  # a model that both solves and fails
