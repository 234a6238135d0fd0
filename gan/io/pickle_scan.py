"""What a pickle would build, counted from its opcodes before any of it is unpickled.

The allowlist in `gan.io.safe_pickle` stops a pickle from running code, but plain data can still cost
far more than the file's size. A pickle is a stack machine with a memo: GET pushes an object already
built, so a 1 KB file can make a list of ten references to a list of ten references to ... ("billion
laughs"): cheap to unpickle, but every later walk over it (and hashing, when such a tuple tree becomes a
dict key, which the C unpickler does itself) costs 10^depth. Other bombs are many tiny objects (two
bytes of pickle per empty list), deep nesting, and integers of millions of digits.

`scan_pickle` runs the same stack machine symbolically, with each value replaced by its expanded size
(how many values a full walk would visit, shared references counted every time) and its nesting depth,
and refuses as soon as a count passes its limit. It reads each opcode once (about 4 us each), so a
refusal costs at most `max_pickle_ops` steps, whatever the file. A real network pickle needs far less
than the limits (see `gan.io.limits`). The expanded size of a mutable container can still grow after a
parent counted it (a list filled after it was put in another); `safe_pickle` walks the finished objects
with the same budget, so that case is refused after loading, in time linear in the distinct objects.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass

from gan.errors import FormatError
from gan.io.limits import ReadLimits

# Integers in network files are sizes, counts, seeds and flags, plus the 77-bit magic number of torch's
# legacy archive; a wider one has no meaning there, and a million-digit one is slow to print.
MAX_INT_BITS = 128

_MARK = object()
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_IN_PLACE = frozenset({"APPEND", "SETITEM", "BUILD"})  # the first operand is updated and stays
_STRINGS = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
)
_INTS = frozenset({"INT", "LONG", "LONG1", "LONG4"})


@dataclass(frozen=True)
class ScanCounts:
    """What one pickle asked for: opcodes, memo entries, the largest expanded value, the deepest nesting."""

    ops: int
    memo: int
    max_elements: int
    max_depth: int


class _Value:
    """A stack slot: the expanded size of the value and its nesting depth (a container grows in place)."""

    __slots__ = ("depth", "size")

    def __init__(self, size: int = 1, depth: int = 0) -> None:
        self.size, self.depth = size, depth


def scan_pickle(data: bytes | io.BytesIO, limits: ReadLimits) -> ScanCounts:
    """Count what unpickling one pickle (from the start of `data`, or the stream's position, up to its
    STOP) would build; FormatError naming the first limit passed. The stream is left after STOP."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    stack: list[object] = []
    memo: dict[int, _Value] = {}
    ops = max_elements = max_depth = 0

    def grown(value: _Value, size: int, depth: int) -> _Value:
        nonlocal max_elements, max_depth
        value.size, value.depth = size, depth
        if size > limits.max_elements:
            raise FormatError(
                f"pickle builds values of more than {limits.max_elements} elements once its shared references "
                "are expanded (a reference bomb)"
            )
        if depth > limits.max_depth:
            raise FormatError(f"pickle values are nested more than {limits.max_depth} deep")
        max_elements, max_depth = max(max_elements, size), max(max_depth, depth)
        return value

    def pop_to_mark() -> list[_Value]:
        items: list[_Value] = []
        while stack:
            top = stack.pop()
            if top is _MARK:
                items.reverse()
                return items
            assert isinstance(top, _Value)
            items.append(top)
        raise FormatError("damaged pickle: no MARK for a stack slice")

    def pop() -> _Value:
        if not stack or stack[-1] is _MARK:
            raise FormatError("damaged pickle: stack underflow")
        top = stack.pop()
        assert isinstance(top, _Value)
        return top

    try:
        for op, arg, _pos in pickletools.genops(stream):
            ops += 1
            if ops > limits.max_pickle_ops:
                raise FormatError(f"pickle has more than {limits.max_pickle_ops} opcodes")
            name = op.name
            if name in _STRINGS and isinstance(arg, str | bytes) and len(arg) > limits.max_string_bytes:
                raise FormatError(
                    f"pickle holds a string of {len(arg)} characters (limit {limits.max_string_bytes})"
                )
            if name in _INTS and isinstance(arg, int) and arg.bit_length() > MAX_INT_BITS:
                raise FormatError(f"pickle holds an integer of {arg.bit_length()} bits")
            if name == "MARK":
                stack.append(_MARK)
            elif name in _GETS:
                if arg not in memo:
                    raise FormatError(f"damaged pickle: memo entry {arg} read before it was written")
                stack.append(memo[arg])
            elif name in _PUTS or name == "MEMOIZE":
                if not stack or stack[-1] is _MARK:
                    raise FormatError("damaged pickle: memo write of an empty stack")
                top = stack[-1]
                assert isinstance(top, _Value)
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = top  # type: ignore[arg-type]
                if len(memo) > limits.max_memo:
                    raise FormatError(f"pickle memoizes more than {limits.max_memo} values")
            elif name == "DUP":
                top = pop()
                stack += [top, top]
            elif name in _IN_PLACE:
                operands = [pop() for _ in op.stack_before[1:]]
                target = pop()
                stack.append(
                    grown(
                        target,
                        target.size + sum(v.size for v in operands),
                        max([target.depth] + [v.depth + 1 for v in operands]),
                    )
                )
            elif op.stack_before and op.stack_before[0] is pickletools.markobject:
                items = pop_to_mark()  # LIST, TUPLE, DICT, FROZENSET, INST, OBJ, POP_MARK
                if op.stack_after:
                    depth = 1 + max((v.depth for v in items), default=0)
                    stack.append(grown(_Value(), 1 + sum(v.size for v in items), depth))
            elif pickletools.markobject in op.stack_before:
                items = pop_to_mark()  # APPENDS, SETITEMS, ADDITEMS: the container below the mark grows
                target = pop()
                depth = max([target.depth] + [v.depth + 1 for v in items])
                stack.append(grown(target, target.size + sum(v.size for v in items), depth))
            else:
                operands = [pop() for _ in op.stack_before]
                for _ in op.stack_after:
                    depth = 1 + max((v.depth for v in operands), default=-1)
                    stack.append(grown(_Value(), 1 + sum(v.size for v in operands), depth))
    except FormatError:
        raise
    except ValueError as exc:  # pickletools' readers: unknown opcode, truncated argument
        raise FormatError(f"not a readable pickle: {exc}") from exc
    return ScanCounts(ops, len(memo), max_elements, max_depth)


__all__ = ["MAX_INT_BITS", "ScanCounts", "scan_pickle"]
