"""GBNF grammars for the stand-in: text that a llama.cpp grammar accepts.

``generate(grammar, rng, words)`` parses a GBNF grammar (rules ``name ::= ...`` with
alternatives ``|``, sequences, string literals, character classes ``[...]`` / ``[^...]``,
rule references, groups and the quantifiers ``*``, ``+``, ``?``, ``{m}``, ``{m,}``,
``{m,n}``) and derives a string from ``root``. A repetition of single characters spells
one to three of the prompt's words (where the class allows those letters); other
repetitions produce one to four items more than their minimum; alternatives are mostly the
first one; an item that can only match the empty text is not repeated. Deep in recursion
or once the text is long, only minimal repetitions and first alternatives. A grammar it
cannot parse, or one without ``root``, raises :class:`GrammarError`, and so does one
whose derivation needs too much work (see ``generate``).
"""

from __future__ import annotations

import bisect
import contextlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_GRAMMAR", "GrammarError", "generate", "parse"]

_MAX_DEPTH = 60  # recursion beyond this: the grammar cannot end
_FREE_DEPTH = 8  # deeper: minimal repetitions and first alternatives only
_SOFT_OUTPUT = 2_000  # longer output: likewise
_MAX_OUTPUT = 20_000
# Bounds on the work, so that no grammar can hold the server: grammar length, groups
# inside groups while parsing, the depth of one rule's tree (groups, sequences, stacked
# quantifiers), nodes being expanded at once while deriving (Python frames) and nodes
# expanded in all.
MAX_GRAMMAR = 50_000
_MAX_NESTING = 100
_MAX_TREE_DEPTH = 200
_MAX_STACK = 400
_MAX_STEPS = 50_000
_FIRST_CHECK = 64  # output length at which ``enough`` is first asked


class GrammarError(ValueError):
    """The grammar is not GBNF this module understands."""


@dataclass(slots=True)
class _Node:
    kind: str  # "lit" | "class" | "ref" | "seq" | "alt" | "rep"
    text: str = ""
    ranges: tuple[tuple[int, int], ...] = ()
    negated: bool = False
    items: tuple[_Node, ...] = ()
    low: int = 0
    high: int | None = None


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "[": "[", "]": "]"}
_ESCAPES.update({"-": "-", "^": "^", "/": "/", "b": "\b", "f": "\f"})


# Blanks and comments (also line breaks); a rule name: letters, digits, "-" and "_".
_SPACE_RE = re.compile(r"(?:[ \t]+|#[^\n]*)+")
_SPACE_NEWLINES_RE = re.compile(r"(?:[ \t\r\n]+|#[^\n]*)+")
_NAME_RE = re.compile(r"[\w-]+")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.nesting = 0  # groups open at pos

    def error(self, message: str) -> GrammarError:
        return GrammarError(f"{message} at offset {self.pos}")

    def skip(self, newlines: bool) -> None:
        pattern = _SPACE_NEWLINES_RE if newlines else _SPACE_RE
        match = pattern.match(self.text, self.pos)
        if match is not None:
            self.pos = match.end()

    def name(self) -> str:
        match = _NAME_RE.match(self.text, self.pos)
        if match is None:
            raise self.error("expected a rule name")
        self.pos = match.end()
        return match.group()

    def char(self) -> int:
        if self.pos >= len(self.text):
            raise self.error("unexpected end of the grammar")
        ch = self.text[self.pos]
        self.pos += 1
        if ch != "\\":
            return ord(ch)
        if self.pos >= len(self.text):
            raise self.error("dangling escape")
        esc = self.text[self.pos]
        self.pos += 1
        sizes = {"x": 2, "u": 4, "U": 8}
        if esc in sizes:
            digits = self.text[self.pos : self.pos + sizes[esc]]
            self.pos += sizes[esc]
            try:
                code = int(digits, 16)
            except ValueError:
                raise self.error("bad hex escape") from None
            if code > 0x10FFFF:
                raise self.error("escape beyond U+10FFFF")
            return code
        if esc in _ESCAPES:
            return ord(_ESCAPES[esc])
        raise self.error(f"unknown escape \\{esc}")

    def rules(self) -> dict[str, _Node]:
        rules: dict[str, _Node] = {}
        self.skip(True)
        while self.pos < len(self.text):
            name = self.name()
            self.skip(False)
            if not self.text.startswith("::=", self.pos):
                raise self.error(f'expected "::=" after {name}')
            self.pos += 3
            rules[name] = self.alternatives(top=True)
            self.skip(True)
        return rules

    def alternatives(self, top: bool) -> _Node:
        options = [self.sequence(top)]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            options.append(self.sequence(top))
        return options[0] if len(options) == 1 else _Node("alt", items=tuple(options))

    def _at_rule_start(self) -> bool:
        # a new rule begins on a later line with "name ::="
        save = self.pos
        try:
            self.name()
            self.skip(False)
            return self.text.startswith("::=", self.pos)
        except GrammarError:
            return False
        finally:
            self.pos = save

    def sequence(self, top: bool) -> _Node:
        items: list[_Node] = []
        while True:
            before = self.pos
            self.skip(newlines=True)
            if self.pos >= len(self.text):
                break
            ch = self.text[self.pos]
            if ch in "|)":
                break
            if top and "\n" in self.text[before : self.pos] and self._at_rule_start():
                self.pos = before
                break
            items.append(self.quantified(self.atom()))
        return items[0] if len(items) == 1 else _Node("seq", items=tuple(items))

    def atom(self) -> _Node:
        ch = self.text[self.pos]
        if ch == '"':
            self.pos += 1
            chars: list[str] = []
            while self.pos < len(self.text) and self.text[self.pos] != '"':
                chars.append(chr(self.char()))
            if self.pos >= len(self.text):
                raise self.error("unterminated string")
            self.pos += 1
            return _Node("lit", text="".join(chars))
        if ch == "[":
            self.pos += 1
            negated = self.text.startswith("^", self.pos)
            if negated:
                self.pos += 1
            ranges: list[tuple[int, int]] = []
            while self.pos < len(self.text) and self.text[self.pos] != "]":
                low = self.char()
                high = low
                if self.text.startswith("-", self.pos) and not self.text.startswith("-]", self.pos):
                    self.pos += 1
                    high = self.char()
                ranges.append((low, high))
            if self.pos >= len(self.text):
                raise self.error("unterminated character class")
            self.pos += 1
            return _Node("class", ranges=tuple(ranges), negated=negated)
        if ch == "(":
            if self.nesting >= _MAX_NESTING:
                raise self.error("groups nested too deeply")
            self.pos += 1
            self.nesting += 1
            inner = self.alternatives(top=False)
            self.nesting -= 1
            self.skip(True)
            if not self.text.startswith(")", self.pos):
                raise self.error('expected ")"')
            self.pos += 1
            return inner
        if ch == ".":
            self.pos += 1
            return _Node("class", ranges=((10, 10),), negated=True)
        return _Node("ref", text=self.name())

    def quantified(self, node: _Node) -> _Node:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in "*+?":
                self.pos += 1
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
                node = _Node("rep", items=(node,), low=low, high=high)
            elif ch == "{":
                end = self.text.find("}", self.pos)
                if end < 0:
                    raise self.error("unterminated {m,n}")
                body = self.text[self.pos + 1 : end].replace(" ", "")
                self.pos = end + 1
                try:
                    if "," in body:
                        first, last = body.split(",", 1)
                        low, high = int(first or 0), (int(last) if last else None)
                    else:
                        low = high = int(body)
                except ValueError:
                    raise self.error("bad repetition count") from None
                node = _Node("rep", items=(node,), low=low, high=high)
            else:
                return node
        return node


_FRIENDLY = string.ascii_letters + string.digits + " "


class _Enough(Exception):
    """The caller has all the text it needs (``generate``'s ``enough`` said so)."""


@dataclass(frozen=True)
class _CharClass:
    """A character class as sorted, disjoint ranges (``lows[i]``..``highs[i]``), the
    friendly characters it allows and the character to use when it allows none of them."""

    lows: list[int]
    highs: list[int]
    negated: bool
    friendly: str = ""
    fallback: int | None = None

    @classmethod
    def of(cls, node: _Node) -> _CharClass:
        lows: list[int] = []
        highs: list[int] = []
        for low, high in sorted(r for r in node.ranges if r[0] <= r[1]):
            if highs and low <= highs[-1] + 1:
                highs[-1] = max(highs[-1], high)
            else:
                lows.append(low)
                highs.append(high)
        bare = cls(lows, highs, node.negated)
        if node.negated:
            fallback = bare.first_allowed()
        else:  # the first character of the class as written
            fallback = next((low for low, high in node.ranges if low <= high), None)
        friendly = "".join(ch for ch in _FRIENDLY if bare.allows(ord(ch)))
        return cls(lows, highs, node.negated, friendly, fallback)

    def allows(self, code: int) -> bool:
        index = bisect.bisect_right(self.lows, code) - 1
        inside = index >= 0 and code <= self.highs[index]
        return inside != self.negated

    def first_allowed(self) -> int | None:
        """The first character from U+0020 on that a negated class allows (below U+3000)."""
        code = 32
        for low, high in zip(self.lows, self.highs, strict=True):
            if high < code:
                continue
            if low > code:
                break
            code = high + 1
        return code if code < 0x3000 else None


class _Generator:
    def __init__(
        self,
        rules: dict[str, _Node],
        rng: random.Random,
        words: list[str],
        enough: Callable[[str], bool] | None,
    ) -> None:
        self.rules = rules
        self.rng = rng
        self.words = words or ["text"]
        self.out: list[str] = []
        self.size = 0
        self.word = ""  # characters of the current word still to emit
        self.steps = 0  # nodes expanded so far (the work budget)
        self.stack = 0  # nodes being expanded now (Python frames)
        self.enough = enough
        self.next_check = _FIRST_CHECK
        self.productive = _productive_rules(rules)
        self._classes: dict[int, _CharClass] = {}
        self._texty: dict[int, bool] = {}

    # --- output -----------------------------------------------------------------------

    def write(self, text: str) -> None:
        self.out.append(text)
        self.size += len(text)
        if self.size > _MAX_OUTPUT:
            raise GrammarError("the grammar produces too much text")
        if self.enough is not None and self.size >= self.next_check:
            self.next_check = 2 * self.size
            if self.enough("".join(self.out)):
                raise _Enough

    # --- character classes ---------------------------------------------------------------

    def char_class(self, node: _Node) -> _CharClass:
        found = self._classes.get(id(node))
        if found is None:
            found = self._classes[id(node)] = _CharClass.of(node)
        return found

    def allowed(self, node: _Node, code: int) -> bool:
        return self.char_class(node).allows(code)

    def pick(self, node: _Node) -> str:
        if not self.word:
            self.word = self.rng.choice(self.words) + " "
        head = self.word[0]
        self.word = self.word[1:]
        chars = self.char_class(node)
        for candidate in (head, head.lower()):
            if chars.allows(ord(candidate)):
                return candidate
        if chars.friendly:  # a letter, digit or space the class allows
            return self.rng.choice(chars.friendly)
        if chars.fallback is None:
            raise GrammarError("a character class excludes every character")
        return chr(chars.fallback)

    # --- derivation -----------------------------------------------------------------------

    def texty(self, node: _Node) -> bool:
        """Whether ``node`` can produce any text at all (an item that cannot is never
        repeated: llama.cpp does not expand an empty match either)."""
        found = self._texty.get(id(node))
        if found is None:
            has_text, refs = _live_parts(node)
            found = has_text or not refs.isdisjoint(self.productive)
            self._texty[id(node)] = found
        return found

    def emit(self, node: _Node, depth: int) -> None:
        # (every exception ends the whole derivation, so the counters need no clean-up)
        self.steps += 1
        self.stack += 1
        if self.steps > _MAX_STEPS:
            raise GrammarError(
                f"deriving a text takes more than {_MAX_STEPS} steps (the grammar may not end)"
            )
        if self.stack > _MAX_STACK:
            raise GrammarError("the grammar nests too deeply")
        if node.kind == "lit":
            if node.text:
                self.write(node.text)
        elif node.kind == "class":
            self.write(self.pick(node))
        elif node.kind == "ref":
            target = self.rules.get(node.text)
            if target is None:
                raise GrammarError(f"undefined rule {node.text}")
            if depth > _MAX_DEPTH:
                raise GrammarError("the grammar recurses too deeply")
            self.emit(target, depth + 1)
        elif node.kind == "seq":
            for item in node.items:
                self.emit(item, depth)
        elif node.kind == "alt":
            # mostly the first alternative (grammars list the common or base case first);
            # only the first when deep or long, so recursion ends
            first = node.items[0]
            spelling = bool(self.word) and first.kind == "class"
            if spelling and self.allowed(first, ord(self.word[0])):
                choice = first
            elif self.shallow(depth) and len(node.items) > 1 and self.rng.random() >= 0.75:
                choice = self.rng.choice(node.items[1:])
            else:
                choice = first
            self.emit(choice, depth)
        elif self.texty(node.items[0]):  # (repeating an empty match changes nothing)
            item = node.items[0]
            count = node.low
            if self.shallow(depth) and _char_like(item):
                # a run of characters spells one to three of the prompt's words
                phrase = " ".join(
                    self.rng.choice(self.words) for _ in range(self.rng.randint(1, 3))
                )
                self.word = phrase
                count = max(node.low, len(phrase))
                if node.high is not None:
                    count = min(count, node.high)
            elif self.shallow(depth):
                # one to four items more than the minimum (never more than the maximum)
                high = node.low + 4 if node.high is None else min(node.high, node.low + 4)
                count = self.rng.randint(max(node.low, min(1, high)), max(node.low, high))
            for _ in range(count):
                self.emit(item, depth + 1)
        self.stack -= 1

    def shallow(self, depth: int) -> bool:
        return depth <= _FREE_DEPTH and self.size <= _SOFT_OUTPUT


def _char_like(node: _Node) -> bool:
    """A node that produces one character (mostly): a class, or alternatives led by one."""
    return node.kind == "class" or (node.kind == "alt" and node.items[0].kind == "class")


def _live_parts(node: _Node) -> tuple[bool, set[str]]:
    """Whether ``node`` holds text of its own (a character class or a non-empty literal)
    and which rules it refers to, outside repetitions of at most zero items."""
    has_text = False
    refs: set[str] = set()
    todo = [node]
    while todo:
        item = todo.pop()
        if item.kind == "class" or (item.kind == "lit" and item.text):
            has_text = True
        elif item.kind == "ref":
            refs.add(item.text)
        elif item.kind != "rep" or item.high != 0:
            todo.extend(item.items)
    return has_text, refs


def _productive_rules(rules: dict[str, _Node]) -> set[str]:
    """The rules that can produce text: those with text of their own, and those that
    refer to a productive rule (found backwards from the former, in linear time)."""
    users: dict[str, list[str]] = {}
    todo: list[str] = []
    for name, body in rules.items():
        has_text, refs = _live_parts(body)
        if has_text:
            todo.append(name)
        for ref in refs:
            users.setdefault(ref, []).append(name)
    productive: set[str] = set()
    while todo:
        name = todo.pop()
        if name in productive:
            continue
        productive.add(name)
        todo.extend(users.get(name, ()))
    return productive


def _too_deep(node: _Node) -> bool:
    """Whether the tree under ``node`` is more than ``_MAX_TREE_DEPTH`` levels deep."""
    level = [node]
    for _ in range(_MAX_TREE_DEPTH):
        level = [child for item in level for child in item.items]
        if not level:
            return False
    return True


def parse(grammar: str) -> dict[str, _Node]:
    """The rules of ``grammar`` (a :class:`GrammarError` if it is not GBNF this module
    understands, or too big or too deeply nested to derive text from safely)."""
    if len(grammar) > MAX_GRAMMAR:
        raise GrammarError(f"the grammar is longer than {MAX_GRAMMAR} characters")
    rules = _Parser(grammar).rules()
    for name, body in rules.items():
        if _too_deep(body):
            raise GrammarError(f"rule {name} nests too deeply")
    return rules


def generate(
    grammar: str,
    rng: random.Random,
    words: list[str],
    enough: Callable[[str], bool] | None = None,
) -> str:
    """A string derived from the grammar's ``root`` rule (deterministic for ``rng``).

    ``enough(text)``, called now and then with the text so far (at doubling lengths), may
    end the derivation early: the text so far is returned, a prefix of the full one (the
    caller knows it needs no more, e.g. its token cap is reached). The work is bounded
    (``_MAX_STEPS`` nodes, ``_MAX_OUTPUT`` characters): a derivation that needs more raises
    :class:`GrammarError`, as do grammars it cannot parse and grammars without ``root``.
    """
    rules = parse(grammar)
    if "root" not in rules:
        raise GrammarError("the grammar has no root rule")
    gen = _Generator(rules, rng, [w for w in words if w], enough)
    with contextlib.suppress(_Enough):
        gen.emit(rules["root"], 0)
    return "".join(gen.out)
