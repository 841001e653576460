"""Task specs: golden strings (docs/protocol.md), solvers against brute force, oracle trees far beyond training."""
import itertools
import random
import re

import pytest

from retune.tasks import SOLUTION, TASKS, Malformed, get_task
from retune.tasks.base import node_answer

ADD, DP, PAR = get_task("addition"), get_task("dp"), get_task("parity")


def pairs(examples):
    return [(e.input, e.output) for e in examples]


# --- golden strings, written by hand from the paper's formats (docs/protocol.md) ----------------------
def test_addition_golden_equal_length():
    assert pairs(ADD.examples(("45", "67"), "retuning")) == [
        ("45 + 67\nSolution: ", "Call: 5 + 7\n"),
        ("45 + 67\nSolution: Call: 5 + 7\nReturn: Carry 1, Output 2\nAnswer: ", "Carry 1, Output 12"),
        ("5 + 7\nSolution: ", "Carry 1, Output 2"),
    ]
    assert pairs(ADD.examples(("45", "67"), "scratchpad")) == [
        ("45 + 67\nSolution: ", "Carry 1, Output 2\nCarry 1, Output 12")]
    assert pairs(ADD.examples(("45", "67"), "baseline")) == [("45 + 67\nAnswer: ", "112")]


def test_addition_golden_unequal_length_pads_calls():
    assert pairs(ADD.examples(("905", "96"), "retuning")) == [
        ("905 + 96\nSolution: ", "Call: 05 + 96\n"),
        ("905 + 96\nSolution: Call: 05 + 96\nReturn: Carry 1, Output 01\nAnswer: ", "Carry 1, Output 001"),
        ("05 + 96\nSolution: ", "Call: 5 + 6\n"),
        ("05 + 96\nSolution: Call: 5 + 6\nReturn: Carry 1, Output 1\nAnswer: ", "Carry 1, Output 01"),
        ("5 + 6\nSolution: ", "Carry 1, Output 1"),
    ]
    assert pairs(ADD.examples(("905", "96"), "scratchpad")) == [
        ("905 + 96\nSolution: ", "Carry 1, Output 1\nCarry 1, Output 01\nCarry 1, Output 001")]
    assert ADD.final_answer("retuning", "Carry 1, Output 001") == 1001


DP_CHOSEN_CALL = ("If there is only 1 item, return 1 if we should use it else 2. If we should use the first item "
                  "to get the sum, call False else True. Call: ")


def test_dp_golden_top_level_is_two_contexts():
    """The top level chains two calls; the answer is the second call's return, nothing follows it."""
    top = "Compute the maximum sum of nonadjacent subsequences of [3, -1, 2]\nSolution: "
    depth0 = [e for e in DP.examples([3, -1, 2], "retuning") if e.depth == 0]
    assert [(e.input, e.output, e.kind) for e in depth0] == [
        (top, "Call: Create dp array [3, -1, 2]\n", "call"),
        (top + "Call: Create dp array [3, -1, 2]\nReturn: [5, 2, 2]\nAnswer: ",
         "Call: Create chosen indices array: sum array [5, 2, 2], item array [3, -1, 2], can use item True\n",
         "call"),
    ]
    tree = DP.tree([3, -1, 2])
    assert tree.children[1].answer == "[1, 2, 1]" == str(DP.solve([3, -1, 2]))
    assert len(tree.contexts("retuning")) == 2
    # only the ablations write the answer after the last return: no_carryover has no return to stop at
    assert [t for _, t, _ in tree.contexts("no_carryover")][-1] == "[1, 2, 1]"
    assert DP.examples([3, -1, 2], "inline")[0].output.endswith("Return: [1, 2, 1]\nAnswer: [1, 2, 1]")


def test_dp_golden_tie_prefers_choosing():
    top = "Compute the maximum sum of nonadjacent subsequences of [0, 0]\nSolution: "
    first = top + "Call: Create dp array [0, 0]\nReturn: [0, 0]\nAnswer: "
    chosen = "Create chosen indices array: sum array [0, 0], item array [0, 0], can use item True\nSolution: "
    assert pairs(DP.examples([0, 0], "retuning")) == [
        (top, "Call: Create dp array [0, 0]\n"),
        (first, "Call: Create chosen indices array: sum array [0, 0], item array [0, 0], can use item True\n"),
        ("Create dp array [0, 0]\nSolution: ", "Call with array minus first element. Call: Create dp array [0]\n"),
        ("Create dp array [0, 0]\nSolution: Call with array minus first element. Call: Create dp array [0]\n"
         "Return: [0]\nAnswer: ", "Append max(return[0], array[0] + return[1]) to return.\nAnswer: [0, 0]"),
        ("Create dp array [0]\nSolution: ", "Return [0] if negative else element.\nAnswer: [0]"),
        (chosen, DP_CHOSEN_CALL + "Create chosen indices array: sum array [0], item array [0], can use item False\n"),
        (chosen + DP_CHOSEN_CALL + "Create chosen indices array: sum array [0], item array [0], can use item "
         "False\nReturn: [2]\nAnswer: ", "Append 1 if False else 2.\nAnswer: [1, 2]"),
        ("Create chosen indices array: sum array [0], item array [0], can use item False\nSolution: ",
         "If there is only 1 item, return 1 if we should use it else 2.\nAnswer: [2]"),
    ]


def test_dp_golden_baseline_and_scratchpad():
    assert pairs(DP.examples([3, -1, 2], "baseline")) == [(
        "Given a sequence of integers, find a subsequence with the highest sum, such that no two numbers in the "
        "subsequence are adjacent in the original sequence.\n\nOutput a list with \"1\" for chosen numbers and "
        "\"2\" for unchosen ones. If multiple solutions exist, select the lexicographically smallest. "
        "Input = [3, -1, 2].\nAnswer: ", "[1, 2, 1]")]
    assert pairs(DP.examples([3, -1, 2], "scratchpad")) == [(
        "Question: Let's solve input = [3, -1, 2].\n",
        "dp[2] = max(input[2], 0) = max(2, 0) = 2\n"
        "dp[1] = max(input[2], input[1], 0) = max(2, -1, 0) = 2\n"
        "dp[0] = max(dp[1], input[0] + dp[2], 0) = max(2, 3 + 2, 0) = 5\n"
        "can_use_item = True, dp[0] == input[0] + dp[2]: 5 == 3 + 2, so output[0] = 1\n"
        "can_use_item = False, dp[1] == input[1]: 2 == -1, so output[1] = 2\n"
        "can_use_item = True, dp[2] == input[2]: 2 == 2, so output[2] = 1\n"
        "Reconstructing all together, output=[1, 2, 1].")]


def test_dp_golden_negative_base_case():
    assert pairs(DP.examples([-4], "retuning"))[-1] == (
        "Create chosen indices array: sum array [0], item array [-4], can use item True\nSolution: ",
        "If there is only 1 item, return 1 if we should use it else 2.\nAnswer: [2]")
    assert ("Create dp array [-4]\nSolution: ", "Return [0] if negative else element.\nAnswer: [0]") in pairs(
        DP.examples([-4], "retuning"))


def test_parity_golden():
    assert pairs(PAR.examples([1, 0, 1], "retuning")) == [
        ("What is the parity of [1, 0, 1]?\nSolution: ", "Call: What is the parity of [0, 1]?\n"),
        ("What is the parity of [1, 0, 1]?\nSolution: Call: What is the parity of [0, 1]?\nReturn: 1\nAnswer: ",
         "0"),
        ("What is the parity of [0, 1]?\nSolution: ", "Call: What is the parity of [1]?\n"),
        ("What is the parity of [0, 1]?\nSolution: Call: What is the parity of [1]?\nReturn: 1\nAnswer: ", "1"),
        ("What is the parity of [1]?\nSolution: ", "1"),
    ]
    assert pairs(PAR.examples([1, 1], "scratchpad")) == [
        ("What is the parity of [1, 1]?\nSolution: ", "Compute one element at a time. 1 0")]
    assert pairs(PAR.examples([1, 1], "baseline")) == [("What is the parity of [1, 1]?\nAnswer: ", "0")]
    assert pairs(PAR.examples([0], "retuning")) == [("What is the parity of [0]?\nSolution: ", "0")]


def test_ablation_formats():
    inline = pairs(ADD.examples(("45", "67"), "inline"))
    assert inline == [("45 + 67\nSolution: ", "Call: 5 + 7\nSolution: Carry 1, Output 2\n"
                       "Return: Carry 1, Output 2\nAnswer: Carry 1, Output 12")]
    no_carry = pairs(ADD.examples(("45", "67"), "no_carryover"))
    assert no_carry[1] == ("45 + 67\nSolution: Call: 5 + 7\nAnswer: ", "Carry 1, Output 12")
    assert ADD.final_answer("inline", inline[0][1]) == 112


# --- solvers against brute force ---------------------------------------------------------------------
def brute_force_dp(x):
    """Every non-adjacent subset; the best sum, then the lexicographically smallest 1/2 marking."""
    best = None
    for mask in itertools.product((1, 2), repeat=len(x)):
        if any(a == b == 1 for a, b in zip(mask, mask[1:])):
            continue
        total = sum(v for v, m in zip(x, mask) if m == 1)
        key = (-total, list(mask))
        best = key if best is None or key < best else best
    return best[1]


def test_dp_solver_matches_brute_force():
    lists = [list(x) for n in range(1, 5) for x in itertools.product(range(-5, 6), repeat=n)]
    rng = random.Random(0)
    lists += [[rng.randint(-5, 5) for _ in range(n)] for n in (5, 6, 7) for _ in range(1500)]
    lists += [[rng.choice((-1, 0, 1)) for _ in range(7)] for _ in range(500)]  # many ties
    for x in lists:
        assert DP.solve(x) == brute_force_dp(x), x


def test_addition_against_python_integers():
    rng = random.Random(1)
    for _ in range(300):
        a, b = str(rng.randrange(10 ** rng.randint(1, 100))), str(rng.randrange(10 ** rng.randint(1, 100)))
        assert ADD.solve((a, b)) == int(a) + int(b)
        assert ADD.final_answer("retuning", ADD.tree((a, b)).turns[-1]) == int(a) + int(b)
        assert ADD.final_answer("scratchpad", ADD.scratchpad((a, b))[1]) == int(a) + int(b)
        assert ADD.final_answer("baseline", ADD.baseline((a, b))[1]) == int(a) + int(b)


def test_parity_solver():
    rng = random.Random(2)
    for _ in range(300):
        bits = [rng.randrange(2) for _ in range(rng.randint(1, 80))]
        assert PAR.solve(bits) == bits.count(1) % 2
        assert PAR.final_answer("scratchpad", PAR.scratchpad(bits)[1]) == bits.count(1) % 2


# --- the oracle tree, walked as the recursive decoder would ------------------------------------------
def walk(node):
    """Solve a node in a fresh context: follow its calls, feed back the returns, return its answer (the last
    return where the context ends there)."""
    context, returned = node.prompt + SOLUTION, None
    for i, turn in enumerate(node.turns[:-1]):
        call = re.fullmatch(r"(?s).*?Call: (.*)\n", turn)
        assert call and call.group(1) == node.children[i].prompt
        returned = walk(node.children[i])
        context += turn + f"Return: {returned}\nAnswer: "
    assert ("Return: " in context) == bool(node.children)
    return returned if node.answer_is_last_return else node_answer(node.turns[-1])


def independent_node_check(task, node):
    """Each node's answer is right for its own sub-problem, computed without the task's code."""
    if task.name == "addition":
        a, b = node.prompt.split(" + ")
        c, s = re.fullmatch(r"Carry (\d), Output (\d+)", node.answer).groups()
        assert len(a) == len(b) == len(s) or node.prompt == task.tree((a, b)).prompt
        assert int(c) * 10 ** len(s) + int(s) == int(a) + int(b)
    elif task.name == "parity":
        bits = eval(node.prompt[len("What is the parity of "):-1])
        assert int(node.answer) == sum(bits) % 2


@pytest.mark.parametrize("name,top", [("addition", 60), ("dp", 30), ("parity", 60)])
def test_oracle_tree_reproduces_ground_truth_far_beyond_training(name, top):
    task = get_task(name)
    rng = random.Random(3)
    for size in list(range(1, 12)) + list(range(12, top + 1, 4)) + [top]:
        for _ in range(3):
            problem = task.sample(size, rng)
            tree = task.tree(problem)
            assert task.parse_answer(walk(tree)) == task.solve(problem)
            for node, _ in tree.walk():
                independent_node_check(task, node)
    if name == "dp":  # a second, independent check of long lists: the chosen elements reach the best sum
        for _ in range(20):
            x = task.sample(30, rng)
            marks = task.parse_answer(walk(task.tree(x)))
            best = {}
            def f(i):
                if i >= len(x):
                    return 0
                if i not in best:
                    best[i] = max(f(i + 1), x[i] + f(i + 2))
                return best[i]
            assert sum(v for v, m in zip(x, marks) if m == 1) == f(0)
            assert not any(a == b == 1 for a, b in zip(marks, marks[1:]))


@pytest.mark.parametrize("name", list(TASKS))
def test_prompt_variants_keep_the_protocol(name):
    rng = random.Random(4)
    prompts = set()
    for variant in range(TASKS[name].variants):
        task = get_task(name, variant)
        problem = task.sample(6, rng)
        assert task.parse_answer(walk(task.tree(problem))) == task.solve(problem)
        for method in ("baseline", "scratchpad", "retuning", "inline", "no_carryover"):
            examples = task.examples(problem, method)
            assert examples and all(e.output for e in examples)
        prompts.add(task.tree(task.sample(3, random.Random(0))).prompt)
    assert len(prompts) == TASKS[name].variants >= 4


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="task must be one of addition, dp, parity"):
        get_task("sorting")
    with pytest.raises(ValueError, match="variant must be in 0..3"):
        get_task("parity", 9)
    with pytest.raises(ValueError, match="method must be one of"):
        ADD.examples(("1", "2"), "cot")


ADVERSARIAL = ["", " ", "\n", "Carry 2, Output 5", "Carry 1, Output ", "Carry 1, Output 1a", "[1, 2", "[]",
               "[1, x]", "[3, 1]", "٣", "１２", "1" * 5000, "Call: 1 + 2", "<unk>", "Answer: [1]", "None",
               "Reconstructing all together, output=[1, 2]", "Compute one element at a time.", "2", "-1"]


@pytest.mark.parametrize("name", list(TASKS))
def test_parsers_never_raise_anything_but_malformed(name):
    task = get_task(name)
    for method in ("baseline", "scratchpad", "retuning", "inline"):
        for text in ADVERSARIAL:
            try:
                task.final_answer(method, text)
            except Malformed as err:
                assert err.kind == "unparseable_answer"
