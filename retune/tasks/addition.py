r"""Integer addition (docs/protocol.md, "Addition"). A problem is a pair of digit strings; its size is the longer
one's length.

The oracle's Re-Tuning solution of one small problem, every context as the model sees it (targets between « and »):

<!-- rendered: addition retuning ("57", "8") -->
```text
#1 depth 0
57 + 8
Solution: «Call: 7 + 8
»Return: Carry 1, Output 5
Answer: «Carry 0, Output 65»
→ final answer: 65

#2 depth 1, called by #1
7 + 8
Solution: «Carry 1, Output 5»
→ returns to #1: Carry 1, Output 5
```
"""
from __future__ import annotations

import random

from .base import BASELINE_SUFFIX, CALL_MARK, SOLUTION, Malformed, Node, Task, parse_int
from .methods import get_method

# Prompt phrasings: 0 is the paper's; the others keep the protocol (every call uses the same phrasing).
PROMPTS = ("{a} + {b}", "{a} plus {b}", "Add {a} and {b}", "What is {a} + {b}?")


def carry_output(a: str, b: str) -> tuple[int, str]:
    """(carry out, last k digits of a + b zero-filled to k) for two k-digit strings."""
    k = len(a)
    total = int(a) + int(b)
    return total // 10**k, str(total % 10**k).zfill(k)


class Addition(Task):
    name = "addition"
    size_name = "digits"
    variants = len(PROMPTS)
    depth_limit = staticmethod(lambda size: 2 * size)
    max_size = 1000  # well below Python's 4300-digit int/str limit
    trained_max = 8
    order = 0

    def sample(self, size: int, rng: random.Random) -> tuple[str, str]:
        return random_number(size, rng), random_number(size, rng)

    def size_of(self, problem) -> int:
        return max(len(problem[0]), len(problem[1]))

    def solve(self, problem) -> int:
        return int(problem[0]) + int(problem[1])

    def prompt(self, a: str, b: str) -> str:
        return PROMPTS[self.variant].format(a=a, b=b)

    def tree(self, problem) -> Node:
        a, b = problem
        width = max(len(a), len(b))
        pa, pb = a.zfill(width), b.zfill(width)
        node = None
        for k in range(1, width + 1):  # built bottom-up: the k-digit suffix problem calls the (k-1)-digit one
            ak, bk = pa[-k:], pb[-k:]
            carry, out = carry_output(ak, bk)
            final = f"Carry {carry}, Output {out}"
            # the top level keeps the operands as given; calls use the zero-padded suffixes
            prompt = self.prompt(a, b) if k == width else self.prompt(ak, bk)
            lengths = (len(a), len(b)) if k == width else (k, k)
            if node is None:
                node = Node(prompt, [final], size=k, meta={"lengths": lengths})
            else:
                node = Node(prompt, [f"{CALL_MARK}{node.prompt}\n", final], [node], k, {"lengths": lengths})
        return node

    def paper_problems(self, method, rng):
        """Digit counts 1 <= i <= j <= 15, 1000 pairs each, 1000 more for each of i >= 3, 6, 9, 12."""
        for i in range(1, 16):
            for j in range(i, 16):
                for _ in range(1000 * (1 + sum(i >= t for t in (3, 6, 9, 12)))):
                    a, b = random_number(i, rng), random_number(j, rng)
                    yield (b, a) if rng.random() < 0.5 else (a, b)

    def paper_repeats(self, example, method, rng):
        if not get_method(method).recursive:
            return 1
        la, lb = example.meta["lengths"]
        if la == lb and 3 <= la <= 11:  # the reference thins out equal-length mid-size prompts
            return 0 if rng.random() < (0.85 if la <= 7 else 0.65) else 1
        if la == lb == 1:
            return 1000
        if la + lb <= 3:
            return 100
        return 5 if min(la, lb) <= 2 else 1

    def baseline(self, problem):
        a, b = problem
        return f"{self.prompt(a, b)}\nAnswer: ", str(int(a) + int(b))

    def scratchpad(self, problem):
        a, b = problem
        width = max(len(a), len(b))
        pa, pb = a.zfill(width), b.zfill(width)
        lines = []
        for k in range(1, width + 1):
            carry, out = carry_output(pa[-k:], pb[-k:])
            lines.append(f"Carry {carry}, Output {out}")
        return self.prompt(a, b) + SOLUTION, "\n".join(lines)

    def official_answer(self, text, method):
        """The paper's reading of `Carry c, Output s` at the end of the whole text: the last three words split on
        spaces, c taken from the first of them without its comma, then s with a 1 in front when c is "1" (so
        `Output 065` and a trailing newline are wrong, `Carry 2, Output 65` reads as 65)."""
        words = text.split(" ")
        if len(words) < 3:  # the paper's code fails there; no answer
            return ""
        carry, output = words[-3][:-1], words[-1]
        return carry + output if carry == "1" else output

    def official_baseline(self, text):
        """The paper's baseline reading: everything after the prompt's last line mark, compared as it is."""
        return text.split(BASELINE_SUFFIX)[-1]

    def official_scratchpad(self, text):
        return self.official_answer(text, None)  # the paper reads a scratchpad's last line the same way

    def parse_answer(self, text: str) -> int:
        """`Carry c, Output s` -> the sum it states."""
        head, sep, digits = text.strip().partition(", Output ")
        if not sep or head not in ("Carry 0", "Carry 1"):
            raise Malformed("unparseable_answer", f"expected 'Carry c, Output s', got {text[:40]!r}")
        value = parse_int(digits, "digit string")
        return value + (10 ** len(digits.strip()) if head == "Carry 1" else 0)

    def parse_baseline(self, text: str) -> int:
        return parse_int(text)

    def parse_scratchpad(self, text: str) -> int:
        return self.parse_answer(text.strip().rsplit("\n", 1)[-1])


def random_number(digits: int, rng: random.Random) -> str:
    """A uniformly random number of exactly `digits` digits (1-digit numbers include 0)."""
    if digits == 1:
        return str(rng.randrange(10))
    return str(rng.randrange(10 ** (digits - 1), 10**digits))
