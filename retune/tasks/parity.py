r"""Parity of a bit list (docs/protocol.md, "Parity"): the number of ones mod 2. A call drops the first bit.

The oracle's Re-Tuning solution of one small problem, every context as the model sees it (targets between « and »):

<!-- rendered: parity retuning [1, 0, 1] -->
```text
#1 depth 0
What is the parity of [1, 0, 1]?
Solution: «Call: What is the parity of [0, 1]?
»Return: 1
Answer: «0»
→ final answer: 0

#2 depth 1, called by #1
What is the parity of [0, 1]?
Solution: «Call: What is the parity of [1]?
»Return: 1
Answer: «1»
→ returns to #1: 1

#3 depth 2, called by #2
What is the parity of [1]?
Solution: «1»
→ returns to #2: 1
```
"""
from __future__ import annotations

import random

from .base import CALL_MARK, SOLUTION, Malformed, Node, Task, parse_int
from .methods import get_method

PROMPTS = (
    "What is the parity of {x}?",
    "Is the number of ones in {x} even (0) or odd (1)?",
    "Compute the parity of the bits {x}.",
    "Parity of {x}:",
)
SCRATCHPAD_HEAD = "Compute one element at a time."


def parity(bits: list[int]) -> int:
    return sum(bits) % 2


class Parity(Task):
    name = "parity"
    size_name = "bits"
    variants = len(PROMPTS)
    depth_limit = staticmethod(lambda size: 2 * size)
    max_size = 1000
    trained_max = 10
    order = 2

    def sample(self, size: int, rng: random.Random) -> list[int]:
        return [rng.randrange(2) for _ in range(size)]

    def size_of(self, problem) -> int:
        return len(problem)

    def solve(self, problem) -> int:
        return parity(problem)

    def prompt(self, bits: list[int]) -> str:
        return PROMPTS[self.variant].format(x=list(bits))

    def tree(self, problem) -> Node:
        bits = list(problem)
        node = Node(self.prompt(bits[-1:]), [str(parity(bits[-1:]))], size=1)
        for start in reversed(range(len(bits) - 1)):  # bottom-up: each call drops the first bit
            suffix = bits[start:]
            turns = [f"{CALL_MARK}{node.prompt}\n", str(parity(suffix))]
            node = Node(self.prompt(suffix), turns, [node], len(suffix))
        return node

    def paper_problems(self, method, rng):
        """Methods that write calls (Re-Tuning, its ablations): 250,000 random 21-bit lists (their suffixes are
        the calls). Baseline and scratchpad: min(15000, max(300, 20 % of 2^L)) lists drawn with replacement per
        length 1..21."""
        if get_method(method).writes_calls:
            for _ in range(250_000):
                yield self.sample(21, rng)
            return
        for length in range(1, 22):
            for _ in range(min(15000, max(300, int(0.2 * 2**length)))):
                yield self.sample(length, rng)

    def paper_repeats(self, example, method, rng):
        # The paper does not state the reference's weights toward short lists; we use the dynamic-programming
        # ones (docs/protocol.md, "Training distributions").
        if get_method(method).recursive:
            return {1: 250, 2: 30, 3: 4}.get(example.size, 1)
        return 1

    def baseline(self, problem):
        return f"{self.prompt(problem)}\nAnswer: ", str(parity(problem))

    def scratchpad(self, problem):
        bits = list(problem)
        prefixes = " ".join(str(parity(bits[: i + 1])) for i in range(len(bits)))
        return self.prompt(bits) + SOLUTION, f"{SCRATCHPAD_HEAD} {prefixes}"

    def parse_answer(self, text: str) -> int:
        value = parse_int(text, "bit")
        if value not in (0, 1):
            raise Malformed("unparseable_answer", f"a parity is 0 or 1, got {text[:40]!r}")
        return value

    def official_answer(self, text, method):
        """The paper's reading of a parity: the text after the last space of the whole text, as it is."""
        return text.split(" ")[-1]

    def official_baseline(self, text):
        """The paper's baseline reading: the last character that is not white space (a bare `1` or `x 1`)."""
        return text.rstrip()[-1:]

    def official_scratchpad(self, text):
        return text.split(" ")[-1]

    def parse_scratchpad(self, text: str) -> int:
        if not text.startswith(SCRATCHPAD_HEAD):
            raise Malformed("unparseable_answer", f"scratchpad must start with {SCRATCHPAD_HEAD!r}")
        rest = text[len(SCRATCHPAD_HEAD):].split()
        if not rest:
            raise Malformed("unparseable_answer", "scratchpad has no prefix parities")
        return self.parse_answer(rest[-1])
