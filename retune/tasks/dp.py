r"""Maximum-sum non-adjacent subsequence (docs/protocol.md, "DP"). A problem is a list of integers in [-5, 5]; the
answer marks each element 1 (chosen) or 2 (not chosen), the lexicographically smallest among optimal choices.

The top level only chains two calls (the dp array, then the chosen indices from it) and its answer is the second
call's return: nothing is generated after it, as in the reference decoder.

The oracle's Re-Tuning solution of one small problem, every context as the model sees it (targets between « and »):

<!-- rendered: dp retuning [3, -1] -->
```text
#1 depth 0
Compute the maximum sum of nonadjacent subsequences of [3, -1]
Solution: «Call: Create dp array [3, -1]
»Return: [3, 0]
Answer: «Call: Create chosen indices array: sum array [3, 0], item array [3, -1], can use item True
»
→ the context ends when #4 returns; its return is the answer: [1, 2]
→ final answer: [1, 2]

#2 depth 1, called by #1
Create dp array [3, -1]
Solution: «Call with array minus first element. Call: Create dp array [-1]
»Return: [0]
Answer: «Append max(return[0], array[0] + return[1]) to return.
Answer: [3, 0]»
→ returns to #1: [3, 0]

#3 depth 2, called by #2
Create dp array [-1]
Solution: «Return [0] if negative else element.
Answer: [0]»
→ returns to #2: [0]

#4 depth 1, called by #1
Create chosen indices array: sum array [3, 0], item array [3, -1], can use item True
Solution: «If there is only 1 item, return 1 if we should use it else 2. If we should use the first item to get the sum, call False else True. Call: Create chosen indices array: sum array [0], item array [-1], can use item False
»Return: [2]
Answer: «Append 1 if False else 2.
Answer: [1, 2]»
→ returns to #1: [1, 2]

#5 depth 2, called by #4
Create chosen indices array: sum array [0], item array [-1], can use item False
Solution: «If there is only 1 item, return 1 if we should use it else 2.
Answer: [2]»
→ returns to #4: [2]
```
"""
from __future__ import annotations

import itertools
import random

from .base import CALL_MARK, Malformed, Node, Task, node_answer, parse_int_list
from .methods import get_method

# (top, dp, chosen) prompts per phrasing; 0 is the paper's.
PROMPTS = (
    ("Compute the maximum sum of nonadjacent subsequences of {x}", "Create dp array {x}",
     "Create chosen indices array: sum array {dp}, item array {x}, can use item {flag}"),
    ("Find the largest sum of a subsequence of {x} with no two adjacent elements", "Build the dp array for {x}",
     "Build the chosen array: dp {dp}, items {x}, may use first {flag}"),
    ("What is the best non-adjacent subsequence of {x}?", "dp array of {x}",
     "Chosen indices for sums {dp}, items {x}, can use item {flag}"),
    ("Maximum non-adjacent sum selection for {x}", "Compute dp for {x}",
     "Choose items: sum array {dp}, item array {x}, can use item {flag}"),
)
BASELINE_PROMPT = (
    "Given a sequence of integers, find a subsequence with the highest sum, such that no two numbers in the "
    "subsequence are adjacent in the original sequence.\n\nOutput a list with \"1\" for chosen numbers and \"2\" "
    "for unchosen ones. If multiple solutions exist, select the lexicographically smallest. Input = {x}."
)
DP_CALL = "Call with array minus first element. "
DP_COMBINE = "Append max(return[0], array[0] + return[1]) to return.\nAnswer: "
DP_BASE = "Return [0] if negative else element.\nAnswer: "
CHOSEN_BASE = "If there is only 1 item, return 1 if we should use it else 2."
CHOSEN_CALL = " If we should use the first item to get the sum, call False else True. "
CHOSEN_COMBINE = "Append 1 if False else 2.\nAnswer: "
LOW, HIGH = -5, 5


def dp_array(x: list[int]) -> list[int]:
    """dp[i]: the best sum of non-adjacent elements of x[i:] (the empty choice counts, so dp >= 0)."""
    n = len(x)
    dp = [0] * n
    for i in reversed(range(n)):
        if i == n - 1:
            dp[i] = max(x[i], 0)
        elif i == n - 2:
            dp[i] = max(x[i + 1], x[i], 0)
        else:
            dp[i] = max(dp[i + 1], x[i] + dp[i + 2], 0)
    return dp


def chosen(dp: list[int], x: list[int], can_use: bool = True) -> list[int]:
    """Left-to-right reconstruction: take an element whenever it achieves the optimum and is allowed."""
    out = []
    n = len(x)
    for i in range(n):
        rest = dp[i + 2] if i + 2 < n else 0
        if can_use and dp[i] == x[i] + rest:
            out.append(1)
            can_use = False
        else:
            out.append(2)
            can_use = True
    return out


class DynamicProgramming(Task):
    name = "dp"
    size_name = "length"
    variants = len(PROMPTS)
    depth_limit = staticmethod(lambda size: 35)  # the reference decoder's cap (docs/protocol.md, "Decoding limits")
    max_size = 200
    trained_max = 5  # the paper's range
    order = 1

    def sample(self, size: int, rng: random.Random) -> list[int]:
        return [rng.randint(LOW, HIGH) for _ in range(size)]

    def size_of(self, problem) -> int:
        return len(problem)

    def solve(self, problem) -> list[int]:
        return chosen(dp_array(problem), problem)

    def tree(self, problem) -> Node:
        x = list(problem)
        top, dp_prompt, chosen_prompt = PROMPTS[self.variant]
        dp = dp_array(x)
        first = self.dp_node(x)
        second = self.chosen_node(dp, x, True)
        turns = [f"{CALL_MARK}{first.prompt}\n", f"{CALL_MARK}{second.prompt}\n", second.answer]
        return Node(top.format(x=x), turns, [first, second], len(x), answer_is_last_return=True)

    def dp_node(self, x: list[int]) -> Node:
        prompt = PROMPTS[self.variant][1].format(x=x)
        if len(x) == 1:
            return Node(prompt, [f"{DP_BASE}{dp_array(x)}"], size=1)
        child = self.dp_node(x[1:])
        turns = [f"{DP_CALL}{CALL_MARK}{child.prompt}\n", f"{DP_COMBINE}{dp_array(x)}"]
        return Node(prompt, turns, [child], len(x))

    def chosen_node(self, dp: list[int], x: list[int], can_use: bool) -> Node:
        prompt = PROMPTS[self.variant][2].format(dp=dp, x=x, flag=can_use)
        result = chosen(dp, x, can_use)
        if len(x) == 1:
            return Node(prompt, [f"{CHOSEN_BASE}\nAnswer: {result}"], size=1)
        child = self.chosen_node(dp[1:], x[1:], result[0] != 1)
        call = f"{CHOSEN_BASE}{CHOSEN_CALL}{CALL_MARK}{child.prompt}\n"
        return Node(prompt, [call, f"{CHOSEN_COMBINE}{result}"], [child], len(x))

    def paper_problems(self, method, rng):
        """Every list of length 2..5 over [-5, 5]."""
        for n in range(2, 6):
            yield from (list(x) for x in itertools.product(range(LOW, HIGH + 1), repeat=n))

    def paper_repeats(self, example, method, rng):
        if get_method(method).recursive:
            if example.size == 5:
                return 0 if rng.random() < 0.85 else 1
            return {1: 250, 2: 30, 3: 4}.get(example.size, 1)
        return {2: 100, 3: 10, 4: 3}.get(example.size, 1)

    def baseline(self, problem):
        x = list(problem)
        prompt = BASELINE_PROMPT if self.variant == 0 else PROMPTS[self.variant][0]
        return f"{prompt.format(x=x)}\nAnswer: ", str(self.solve(x))

    def scratchpad(self, problem):
        x = list(problem)
        subject = "Let's solve input = {x}" if self.variant == 0 else PROMPTS[self.variant][0]
        return f"Question: {subject.format(x=x)}.\n", scratchpad_trace(x)

    def parse_answer(self, text: str) -> list[int]:
        values = parse_int_list(text)
        if not values or any(v not in (1, 2) for v in values):
            raise Malformed("unparseable_answer", f"expected a non-empty list of 1s and 2s, got {text[:40]!r}")
        return values

    def official_answer(self, text, method):
        """The paper's reading: the first line after the last `Return: ` (Re-Tuning's answer is its second call's
        return; the decoder hands in the top-level text with that return appended). The ablations end with an
        answer turn: the first line after its last `\nAnswer: `, read the same way."""
        if method is not None and method.recursive and method.returns:
            return text.split("Return: ")[-1].split("\n")[0]
        return node_answer(text).split("\n")[0]

    def official_baseline(self, text):
        """The paper's baseline reading: after the last `Answer: `, white space stripped."""
        return text.split("Answer: ")[-1].strip()

    def official_scratchpad(self, text):
        """The paper's scratchpad reading: after the last `=`, less its last character (the closing period)."""
        return text.split("=")[-1][:-1]

    def parse_scratchpad(self, text: str) -> list[int]:
        head, sep, tail = text.rpartition("output=")
        if not sep or not tail.strip().endswith("."):
            raise Malformed("unparseable_answer", "no 'output=[...].' at the end of the scratchpad")
        return self.parse_answer(tail.strip()[:-1])


def scratchpad_trace(x: list[int]) -> str:
    """All intermediate steps in one context: the dp entries right to left, then each reconstruction decision."""
    n, dp = len(x), dp_array(x)
    lines = []
    for i in reversed(range(n)):
        if i == n - 1:
            lines.append(f"dp[{i}] = max(input[{i}], 0) = max({x[i]}, 0) = {dp[i]}")
        elif i == n - 2:
            lines.append(f"dp[{i}] = max(input[{i + 1}], input[{i}], 0) = max({x[i + 1]}, {x[i]}, 0) = {dp[i]}")
        else:
            lines.append(f"dp[{i}] = max(dp[{i + 1}], input[{i}] + dp[{i + 2}], 0) = "
                         f"max({dp[i + 1]}, {x[i]} + {dp[i + 2]}, 0) = {dp[i]}")
    result = chosen(dp, x)
    can_use = True
    for i in range(n):
        rest = f" + dp[{i + 2}]" if i + 2 < n else ""
        rest_value = f" + {dp[i + 2]}" if i + 2 < n else ""
        lines.append(f"can_use_item = {can_use}, dp[{i}] == input[{i}]{rest}: {dp[i]} == {x[i]}{rest_value}, "
                     f"so output[{i}] = {result[i]}")
        can_use = result[i] != 1
    lines.append(f"Reconstructing all together, output={result}.")
    return "\n".join(lines)
