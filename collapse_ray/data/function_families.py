"""The embedded executable benchmark: small Python functions with a docstring and hidden tests,
generated from documented families, with parameters drawn per problem.

A family fixes a function's shape (name, signature, docstring and body templates); a problem is a
family plus one point of the family's parameter grid, so the docstring states the parameters and
the body must use them (a model that copies its family's usual body fails). Problems are
HumanEval-shaped dicts (``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``,
``test``), so code generation's evaluation runs them unchanged, plus ``family`` and ``params``.

Hidden tests: ``check(candidate)`` asserts the candidate's result on inputs drawn per problem
(seeded by the problem's identity) next to the values at which the parameters change the answer;
the expected values come from the family's reference implementation (trusted code of this module),
and every canonical body is tested against them in the sandbox (tests/test_function_families.py).

Splits are disjoint by (family, parameters): each family's grid is sampled without replacement
once, and the sample is dealt to test, pool and train in that order.
"""
from __future__ import annotations

import itertools
import math
import random
import string
from dataclasses import dataclass
from typing import Callable

from collapse_ray.data import DataError

# Short literals for string parameters: plain ASCII, no quotes or backslashes, so that repr()
# is the same literal in the docstring and the body.
AFFIXES = ("<", ">", "[", "]", "(", ")", "*", "#", "-", "_", "+", "=", ":", "!", "?", "~",
           "ab", "xy", "no", "ok", "re", "un", "pre", "end")
WORDS = ("low", "high", "small", "big", "cold", "hot", "yes", "no", "left", "right", "odd", "even")
LETTERS = string.ascii_lowercase
COMPARISONS = {">": "greater than", "<": "less than", ">=": "at least", "<=": "at most"}
ARITHMETIC = {"+": "plus", "-": "minus", "*": "times", "//": "floor-divided by", "%": "modulo"}
OPERATOR_WORDS = {**ARITHMETIC, **COMPARISONS}  # the two sets share no operator
CASES = {"": "", ".upper()": ", in upper case", ".lower()": ", in lower case",
         "[::-1]": ", reversed"}
TESTS_PER_PROBLEM = 8  # random inputs per problem, before the family's boundary inputs


@dataclass(frozen=True)
class Family:
    """One family of problems. ``doc`` and ``body`` are ``str.format`` templates over the
    parameters (``{p!r}`` writes a string literal); ``reference(params)`` is the function the
    canonical body computes; ``inputs(rng, params)`` draws argument tuples for the tests."""

    name: str
    kind: str  # arithmetic | strings | lists | conditionals | loops (kinds in docs/tasks.md)
    signature: str
    doc: str
    body: str
    axes: dict[str, tuple]
    reference: Callable[[dict], Callable]
    inputs: Callable[[random.Random, dict], list[tuple]]
    valid: Callable[[dict], bool] = lambda p: True

    @property
    def entry_point(self) -> str:
        return self.signature.split("(")[0]

    def grid(self) -> list[dict]:
        """Every valid parameter point, in a fixed order."""
        names = list(self.axes)
        points = (dict(zip(names, values)) for values in itertools.product(*self.axes.values()))
        return [p for p in points if self.valid(p)]


def _ints(rng, lo=-30, hi=80, n=TESTS_PER_PROBLEM, extra=()):
    return [rng.randint(lo, hi) for _ in range(n)] + list(extra)


def _text(rng, alphabet=LETTERS[:8], lo=0, hi=12):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _texts(rng, alphabet=LETTERS[:8], n=TESTS_PER_PROBLEM):
    return [_text(rng, alphabet, lo=3) for _ in range(n)] + [""]


def _lists(rng, extra=(), n=TESTS_PER_PROBLEM // 2):
    lists = [[rng.randint(-20, 60) for _ in range(rng.randint(0, 8))] for _ in range(n)]
    return lists + ([list(extra)] if extra else [])


def _around(*points):
    return [x + d for x in points for d in (-1, 0, 1)]


def _compare(op: str, a, b) -> bool:
    return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]


def _arith(op: str, a: int, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b, "//": a // b, "%": a % b}[op]


def _slice(mode: str, s: str, n: int) -> str:
    return {"first": s[:n], "last": s[-n:], "drop_first": s[n:], "drop_last": s[:-n]}[mode]


def _case(case: str, s: str) -> str:
    return {"": s, ".upper()": s.upper(), ".lower()": s.lower(), "[::-1]": s[::-1]}[case]


def _repeat_apply(a, b, n):
    def f(x):
        for _ in range(n):
            x = x * a + b
        return x
    return f


def _piecewise(p):
    def f(x):
        if x < p["t1"]:
            return _arith(p["op1"], x, p["k1"])
        if x >= p["t2"]:
            return _arith(p["op2"], x, p["k2"])
        return p["c"]
    return f


_SLICE_DOC = {"first": "the first {n} characters of s", "last": "the last {n} characters of s",
              "drop_first": "s without its first {n} characters",
              "drop_last": "s without its last {n} characters"}
_SLICE_CODE = {"first": "s[:{n}]", "last": "s[-{n}:]", "drop_first": "s[{n}:]", "drop_last": "s[:-{n}]"}
_FOLD = {"sum": ("the sum of", "x", lambda x: x), "count": ("the count of", "1", lambda x: 1),
         "squares": ("the sum of the squares of", "x * x", lambda x: x * x)}

FAMILIES: tuple[Family, ...] = (
    # --- arithmetic
    Family("linear", "arithmetic", "scale_shift(x)", "Return x times {a} plus {b}.",
           "    return x * {a} + {b}\n", {"a": tuple(range(2, 13)), "b": tuple(range(1, 41))},
           lambda p: lambda x: x * p["a"] + p["b"], lambda rng, p: _ints(rng, extra=(0, 1))),
    Family("binary_op", "arithmetic", "combine(x)", "Return x {word} {k}.",
           "    return x {op} {k}\n", {"op": tuple(ARITHMETIC), "k": tuple(range(2, 61))},
           lambda p: lambda x: _arith(p["op"], x, p["k"]), lambda rng, p: _ints(rng, extra=(0, 1))),
    # --- strings
    Family("wrap", "strings", "decorate(s)", "Return s with {prefix!r} in front and {suffix!r} at the end.",
           "    return {prefix!r} + s + {suffix!r}\n", {"prefix": AFFIXES, "suffix": AFFIXES},
           lambda p: lambda s: p["prefix"] + s + p["suffix"], lambda rng, p: _texts(rng)),
    Family("slice_case", "strings", "cut(s)", "Return {part}{case_word}.", "    return {code}{case}\n",
           {"mode": tuple(_SLICE_DOC), "n": tuple(range(1, 16)), "case": tuple(CASES)},
           lambda p: lambda s: _case(p["case"], _slice(p["mode"], s, p["n"])),
           lambda rng, p: [_text(rng, LETTERS + "ABC", lo=max(0, p["n"] - 2), hi=p["n"] + 8)
                           for _ in range(TESTS_PER_PROBLEM)]),
    Family("count_chars", "strings", "count_in(s)", "Return how many characters of s are in {chars!r}.",
           "    count = 0\n    for ch in s:\n        if ch in {chars!r}:\n            count += 1\n    return count\n",
           {"chars": tuple("".join(c) for c in itertools.combinations(LETTERS, 2))},
           lambda p: lambda s: sum(ch in p["chars"] for ch in s),
           lambda rng, p: _texts(rng, LETTERS + p["chars"] * 5)),
    # --- lists
    Family("map_list", "lists", "map_all(xs)", "Return a list of each element of xs {word} {k}.",
           "    return [x {op} {k} for x in xs]\n", {"op": tuple(ARITHMETIC), "k": tuple(range(2, 61))},
           lambda p: lambda xs: [_arith(p["op"], x, p["k"]) for x in xs], lambda rng, p: _lists(rng, extra=(0, 1))),
    Family("filter_list", "lists", "keep(xs)", "Return the elements of xs that are {word} {t}, in order.",
           "    return [x for x in xs if x {op} {t}]\n", {"op": tuple(COMPARISONS), "t": tuple(range(-20, 61))},
           lambda p: lambda xs: [x for x in xs if _compare(p["op"], x, p["t"])],
           lambda rng, p: _lists(rng, extra=_around(p["t"]))),
    # --- conditionals
    Family("threshold", "conditionals", "label(x)", "Return {yes!r} if x is {word} {t}, otherwise {no!r}.",
           "    if x {op} {t}:\n        return {yes!r}\n    return {no!r}\n",
           {"op": tuple(COMPARISONS), "t": tuple(range(0, 51)), "yes": WORDS, "no": WORDS},
           lambda p: lambda x: p["yes"] if _compare(p["op"], x, p["t"]) else p["no"],
           lambda rng, p: _ints(rng, -10, 60, extra=_around(p["t"])), valid=lambda p: p["yes"] != p["no"]),
    Family("clamp", "conditionals", "clamp(x)", "Return x limited to the range {lo} to {hi}.",
           "    if x < {lo}:\n        return {lo}\n    if x > {hi}:\n        return {hi}\n    return x\n",
           {"lo": tuple(range(-20, 21)), "hi": tuple(range(-19, 51))},
           lambda p: lambda x: min(max(x, p["lo"]), p["hi"]),
           lambda rng, p: _ints(rng, p["lo"] - 15, p["hi"] + 15, extra=_around(p["lo"], p["hi"])),
           valid=lambda p: 0 < p["hi"] - p["lo"] <= 30),
    # --- loops
    Family("sum_multiples", "loops", "sum_multiples(n)",
           "Return the sum of the numbers from {start} to n inclusive that are divisible by {k}.",
           "    total = 0\n    for i in range({start}, n + 1):\n        if i % {k} == 0:\n            total += i\n"
           "    return total\n", {"start": tuple(range(0, 21)), "k": tuple(range(2, 21))},
           lambda p: lambda n: sum(i for i in range(p["start"], n + 1) if i % p["k"] == 0),
           lambda rng, p: _ints(rng, 0, 120, extra=(p["start"] + p["k"], p["start"] + 2 * p["k"] + 1))),
    Family("repeat_apply", "loops", "iterate(x)", "Multiply x by {a} and add {b}, {n} times; return the result.",
           "    for _ in range({n}):\n        x = x * {a} + {b}\n    return x\n",
           {"a": tuple(range(1, 6)), "b": tuple(range(0, 10)), "n": tuple(range(2, 10))},
           lambda p: _repeat_apply(p["a"], p["b"], p["n"]), lambda rng, p: _ints(rng, -5, 10, n=5, extra=(0, 1)),
           valid=lambda p: (p["a"], p["b"]) != (1, 0)),
    Family("fold_list", "loops", "fold(xs)", "Return {what} the elements of xs that are {word} {t}.",
           "    total = 0\n    for x in xs:\n        if x {op} {t}:\n            total += {term}\n    return total\n",
           {"agg": tuple(_FOLD), "op": tuple(COMPARISONS), "t": tuple(range(-10, 41))},
           lambda p: lambda xs: sum(_FOLD[p["agg"]][2](x) for x in xs if _compare(p["op"], x, p["t"])),
           lambda rng, p: _lists(rng, extra=_around(p["t"]))),
    # --- harder: two or three parameters interact, or two steps compose
    Family("piecewise", "conditionals", "piecewise(x)",
           "If x is less than {t1}, return x {word1} {k1}; if x is at least {t2}, return x {word2} {k2}; "
           "otherwise return {c}.",
           "    if x < {t1}:\n        return x {op1} {k1}\n    if x >= {t2}:\n        return x {op2} {k2}\n"
           "    return {c}\n",
           {"t1": tuple(range(-10, 11, 2)), "t2": tuple(range(12, 41, 4)), "op1": ("+", "-", "*"),
            "k1": (2, 3, 5, 7), "op2": ("+", "-", "*"), "k2": (2, 3, 5, 7), "c": (0, 1, -1, 10)},
           _piecewise, lambda rng, p: _ints(rng, -30, 60, extra=_around(p["t1"], p["t2"]))),
    Family("replace_case", "strings", "rewrite(s)", "Replace every {old!r} in s with {new!r}{case_word}.",
           "    return s.replace({old!r}, {new!r}){case}\n",
           {"old": tuple(LETTERS[:10]), "new": tuple(LETTERS[:10]), "case": tuple(CASES)},
           lambda p: lambda s: _case(p["case"], s.replace(p["old"], p["new"])),
           lambda rng, p: _texts(rng, LETTERS[:10] + "ABC" + p["old"] * 4), valid=lambda p: p["old"] != p["new"]),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)


def _template_values(family: Family, params: dict) -> dict:
    """The parameters plus the words and code fragments the templates use."""
    values = dict(params)
    for key in ("op", "op1", "op2"):
        if key in params:
            values["word" + key[2:]] = OPERATOR_WORDS[params[key]]
    if "case" in params:
        values["case_word"] = CASES[params["case"]]
    if "mode" in params:
        values["part"] = _SLICE_DOC[params["mode"]].format(n=params["n"])
        values["code"] = _SLICE_CODE[params["mode"]].format(n=params["n"])
    if "agg" in params:
        values["what"], values["term"], _ = _FOLD[params["agg"]]
    return values


def _problem_id(family: Family, params: dict) -> str:
    return family.name + "/" + ",".join(f"{k}={params[k]!r}" for k in sorted(params))


def make_problem(family: Family, params: dict) -> dict:
    """One problem: HumanEval's fields, its family and parameters. Its tests are drawn with a
    random generator seeded by its identity, so a problem is the same in every split and run."""
    values = _template_values(family, params)
    prompt = f'def {family.signature}:\n    """{family.doc.format(**values)}"""\n'
    ident = _problem_id(family, params)
    rng = random.Random(ident)
    fn = family.reference(params)
    asserts = {f"    assert candidate({x!r}) == {fn(x)!r}\n": None for x in family.inputs(rng, params)}
    return {"task_id": ident, "prompt": prompt, "entry_point": family.entry_point,
            "canonical_solution": family.body.format(**values),
            "test": "def check(candidate):\n" + "".join(asserts), "family": family.name,
            "params": dict(params)}


def family_by_name(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise DataError(f"unknown problem family {name!r}; known families: {', '.join(FAMILY_NAMES)}")


def make_splits(seed: int, n_test: int, n_pool: int, n_train: int,
                families: tuple[str, ...] = FAMILY_NAMES) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, pool, test) problems, disjoint by (family, parameters), each dealt round-robin
    over ``families`` so every split holds each family in equal share (to within one)."""
    chosen = [family_by_name(n) for n in families]
    if not chosen:
        raise DataError("no problem families chosen")
    total = n_test + n_pool + n_train
    per_family = math.ceil(total / len(chosen))
    rng = random.Random(f"function-families/{seed}")
    streams = []
    for family in chosen:
        grid = family.grid()
        if len(grid) < per_family:
            raise DataError(f"family {family.name!r} has {len(grid)} parameter points, fewer than the "
                            f"{per_family} problems asked of each family (sizes.train_examples + "
                            "sizes.synthetic_pool + sizes.eval_examples over the families)")
        streams.append(iter(rng.sample(grid, per_family)))
    dealt = [(family, next(stream)) for _ in range(per_family) for family, stream in zip(chosen, streams)]
    problems = [make_problem(family, params) for family, params in dealt[:total]]
    test, pool, train = problems[:n_test], problems[n_test:n_test + n_pool], problems[n_test + n_pool:]
    return train, pool, test
