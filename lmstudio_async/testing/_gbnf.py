"""GBNF grammars for the stand-in: text that a llama.cpp grammar accepts.

``generate(grammar, rng, words)`` parses a GBNF grammar (rules ``name ::= ...`` with
alternatives ``|``, sequences, string literals, character classes ``[...]`` / ``[^...]``,
rule references, groups and the quantifiers ``*``, ``+``, ``?``, ``{m}``, ``{m,}``,
``{m,n}``) and derives a string from ``root``. A repetition of single characters spells
one to three of the prompt's words (where the class allows those letters); other
repetitions produce one to a few items; alternatives are mostly the first one. Deep in
recursion or once the text is long, only minimal repetitions and first alternatives. A
grammar it cannot parse, or one without ``root``, raises :class:`GrammarError`.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

__all__ = ["GrammarError", "generate"]

_MAX_DEPTH = 60  # recursion beyond this: the grammar cannot end
_FREE_DEPTH = 8  # deeper: minimal repetitions and first alternatives only
_SOFT_OUTPUT = 2_000  # longer output: likewise
_MAX_OUTPUT = 20_000


class GrammarError(ValueError):
    """The grammar is not GBNF this module understands."""


@dataclass
class _Node:
    kind: str  # "lit" | "class" | "ref" | "seq" | "alt" | "rep"
    text: str = ""
    ranges: list[tuple[int, int]] = field(default_factory=list)
    negated: bool = False
    items: list[_Node] = field(default_factory=list)
    low: int = 0
    high: int | None = None


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "[": "[", "]": "]"}
_ESCAPES.update({"-": "-", "^": "^", "/": "/", "b": "\b", "f": "\f"})


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> GrammarError:
        return GrammarError(f"{message} at offset {self.pos}")

    def skip(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            elif ch in " \t" or (newlines and ch in "\r\n"):
                self.pos += 1
            else:
                return

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] in "-_"
        ):
            self.pos += 1
        if start == self.pos:
            raise self.error("expected a rule name")
        return self.text[start : self.pos]

    def char(self) -> int:
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
                return int(digits, 16)
            except ValueError:
                raise self.error("bad hex escape") from None
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
        return options[0] if len(options) == 1 else _Node("alt", items=options)

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
        return items[0] if len(items) == 1 else _Node("seq", items=items)

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
            node = _Node("class")
            if self.text.startswith("^", self.pos):
                node.negated = True
                self.pos += 1
            while self.pos < len(self.text) and self.text[self.pos] != "]":
                low = self.char()
                high = low
                if self.text.startswith("-", self.pos) and not self.text.startswith("-]", self.pos):
                    self.pos += 1
                    high = self.char()
                node.ranges.append((low, high))
            if self.pos >= len(self.text):
                raise self.error("unterminated character class")
            self.pos += 1
            return node
        if ch == "(":
            self.pos += 1
            inner = self.alternatives(top=False)
            self.skip(True)
            if not self.text.startswith(")", self.pos):
                raise self.error('expected ")"')
            self.pos += 1
            return inner
        if ch == ".":
            self.pos += 1
            return _Node("class", ranges=[(10, 10)], negated=True)
        return _Node("ref", text=self.name())

    def quantified(self, node: _Node) -> _Node:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in "*+?":
                self.pos += 1
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
                node = _Node("rep", items=[node], low=low, high=high)
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
                node = _Node("rep", items=[node], low=low, high=high)
            else:
                return node
        return node


_FRIENDLY = string.ascii_letters + string.digits + " "


class _Generator:
    def __init__(self, rules: dict[str, _Node], rng: random.Random, words: list[str]) -> None:
        self.rules = rules
        self.rng = rng
        self.words = words or ["text"]
        self.out: list[str] = []
        self.size = 0
        self.word = ""  # characters of the current word still to emit

    def allowed(self, node: _Node, code: int) -> bool:
        inside = any(low <= code <= high for low, high in node.ranges)
        return inside != node.negated

    def pick(self, node: _Node) -> str:
        if not self.word:
            self.word = self.rng.choice(self.words) + " "
        head = self.word[0]
        self.word = self.word[1:]
        for candidate in (head, head.lower(), *self.rng.sample(_FRIENDLY, len(_FRIENDLY))):
            if self.allowed(node, ord(candidate)):
                return candidate
        if node.negated:
            for code in range(32, 0x3000):
                if self.allowed(node, code):
                    return chr(code)
            raise GrammarError("a character class excludes every character")
        low, _high = node.ranges[0]
        return chr(low)

    def emit(self, node: _Node, depth: int) -> None:
        if self.size > _MAX_OUTPUT:
            raise GrammarError("the grammar produces too much text")
        if node.kind == "lit":
            self.out.append(node.text)
            self.size += len(node.text)
        elif node.kind == "class":
            self.out.append(self.pick(node))
            self.size += 1
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
        else:
            count = node.low
            if self.shallow(depth) and _char_like(node.items[0]):
                # a run of characters spells one to three of the prompt's words
                phrase = " ".join(
                    self.rng.choice(self.words) for _ in range(self.rng.randint(1, 3))
                )
                self.word = phrase
                count = max(node.low, len(phrase))
                if node.high is not None:
                    count = min(count, node.high)
            elif self.shallow(depth):
                high = node.low + 4 if node.high is None else node.high
                count = self.rng.randint(max(node.low, min(1, high)), max(node.low, high))
            for _ in range(count):
                self.emit(node.items[0], depth + 1)

    def shallow(self, depth: int) -> bool:
        return depth <= _FREE_DEPTH and self.size <= _SOFT_OUTPUT


def _char_like(node: _Node) -> bool:
    """A node that produces one character (mostly): a class, or alternatives led by one."""
    return node.kind == "class" or (node.kind == "alt" and node.items[0].kind == "class")


def generate(grammar: str, rng: random.Random, words: list[str]) -> str:
    """A string derived from the grammar's ``root`` rule (deterministic for ``rng``)."""
    rules = _Parser(grammar).rules()
    if "root" not in rules:
        raise GrammarError("the grammar has no root rule")
    gen = _Generator(rules, rng, [w for w in words if w])
    gen.emit(rules["root"], 0)
    return "".join(gen.out)
