"""The code that runs a problem's tests on a generated function, inside the sandbox.

``program_for`` (humaneval.py) sends this file's source to the sandbox followed by one call of
``run_tests``: the sandbox proves that the whole program ran to its end (docs/sandbox.md), and
this code decides what running to the end means. Appending the tests to the function and calling
``check`` (HumanEval's own harness) lets a generated function pass tests it does not solve: return
an object whose ``__eq__`` always answers True, subclass ``int`` or ``float`` likewise, or rebind
``abs`` or ``isinstance`` at module level, which the tests then read. Here, before any generated
code runs, the builtins are copied; the function runs in a namespace of its own; the tests run in
another, made of the problem's own prompt (its imports and helpers, run alone) and the trusted
builtins; and every value the function returns to the tests must be built only from types defined
in C (int, float, str, list, dict, numpy's scalars and arrays, ...), never from a class the program
defined, which is how the equality tricks above are caught.

What remains possible: a program that reaches the tests' frames (``sys._getframe``) or patches a
shared module (``math.isclose``) can still change what they compute; the sandbox keeps it from
anything outside the run, not from lying about its own tests. This file runs under the sandbox's
interpreter with the standard library only, and defines nothing else at module level.
"""


def run_tests(prompt, function, tests, entry_point, filename):
    import builtins

    trusted = dict(vars(builtins))   # before any generated code can rebind a builtin
    type_, id_, isinstance_ = type, id, isinstance
    type_error, dict_, list_, tuple_, set_, frozenset_ = TypeError, dict, list, tuple, set, frozenset
    flags_of = vars(type)["__flags__"].__get__   # type's own descriptor: a metaclass cannot override it
    heap_type = 1 << 9   # Py_TPFLAGS_HEAPTYPE: a class made by a class statement or type()

    def plain(value, depth=0, seen=None):
        """Raise TypeError unless ``value`` is built only from C-defined types."""
        kind = type_(value)
        if flags_of(kind) & heap_type:
            raise type_error(f"{entry_point} returned an instance of {kind.__qualname__}, a class the program "
                             f"defined; a solution returns plain values")
        if kind is list_ or kind is tuple_ or kind is set_ or kind is frozenset_ or kind is dict_:
            if depth > 100:
                raise type_error(f"{entry_point} returned a value nested over 100 deep")
            seen = set_() if seen is None else seen
            if id_(value) in seen:
                return
            seen.add(id_(value))
            for item in (value.items() if kind is dict_ else value):
                if kind is dict_:
                    plain(item[0], depth + 1, seen)
                    plain(item[1], depth + 1, seen)
                else:
                    plain(item, depth + 1, seen)

    def fresh(name):
        return {"__name__": name, "__builtins__": dict_(trusted)}

    solution = fresh("__main__")
    exec(compile(function, filename, "exec", dont_inherit=True), solution)
    candidate = solution[entry_point]

    def checked(*args, **kwargs):
        result = candidate(*args, **kwargs)
        plain(result)
        return result

    checked.__name__ = getattr(candidate, "__name__", entry_point)
    checked.__doc__ = getattr(candidate, "__doc__", None)
    namespace = fresh("__main__")
    exec(compile(prompt, filename + ":prompt", "exec", dont_inherit=True), namespace)
    namespace[entry_point] = checked
    exec(compile(tests, filename + ":tests", "exec", dont_inherit=True), namespace)
    if not isinstance_(namespace.get("check"), type_(run_tests)):
        raise type_error("the problem's tests define no function `check`")
    namespace["check"](checked)
