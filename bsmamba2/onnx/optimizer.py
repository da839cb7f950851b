"""The exporter's graph optimisation (``optimize=True`` of ``torch.onnx.export``), without its quadratic step.

torch.onnx.export optimises the translated graph with onnxscript's default pass list (constant folding, a
rewrite-rule pass, clean-ups). One default rewrite rule has a pattern of two output nodes (two ``Slice`` of one
tensor -> one ``Split``). onnxscript's matcher for such patterns is tried at every node of the graph, and each try
first lists every node of the graph by op type, then pairs the node with every candidate, before it looks at the
node itself: O(nodes²) work per pass for a pattern that can only start at a ``Slice``. On the bundled model's
graph (~8,600 nodes, 250 Slices) that was ~95% of the pass and ~half of a ``bsmamba2 export``.

:func:`optimize` runs the same pass list (the library's own, called through ``ONNXProgram.optimize``) with those
matchers wrapped: a node that the pattern's first output node cannot match (op type, domain, attributes: the
local test the library's matcher applies first to every pairing) is refused at once. That node would have failed
every pairing, so the rewrites, and the graph, are the same (tests/test_onnx_export.py compares the two graphs).
If onnxscript's internals are not laid out as expected (another version), the library's pass runs unwrapped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)


class _FirstNodeFirst:
    """A multi-output pattern's matcher that rejects a node its first output node cannot match before the
    graph-wide search; any other node goes to the library's matcher unchanged."""

    def __init__(self, inner: Any, result: type) -> None:
        self.inner, self.pattern, self._result = inner, inner.pattern, result
        self.refused = self.passed = 0  # nodes turned away early / handed to the library (read by the tests)

    def match(self, model: Any, graph_or_function: Any, node: Any, **kwargs: Any) -> Any:
        first = self.pattern.output_nodes[0]
        # a tracer (onnxscript's debugging aid) wants the library's own failure reports: leave it the search
        if kwargs.get("tracer") is None and not first.matches(node, self._result()):
            self.refused += 1
            return self._result().fail(f"{node.op_type} cannot start this pattern")
        self.passed += 1
        return self.inner.match(model, graph_or_function, node, **kwargs)

    def __str__(self) -> str:
        return str(self.inner)


def _multi_output_rules() -> tuple[list[Any], type]:
    """(default rewrite rules whose pattern has several output nodes, onnxscript's MatchResult class).

    AttributeError where onnxscript does not have the layout this module was written against (0.5-0.7)."""
    from onnxscript import rewriter  # the [onnx] extra: imported only when a graph is optimised
    from onnxscript.rewriter.pattern import MatchResult

    rules = [r for r in rewriter._DEFAULT_REWRITE_RULES if not r._target_pattern.has_single_output_node]
    for r in rules:  # everything _FirstNodeFirst uses, checked before any matcher is swapped
        if not (callable(r._matcher.match) and callable(r._matcher.pattern.output_nodes[0].matches)):
            raise AttributeError(f"rule {r.name}: no matcher.match or pattern output node .matches")
    return rules, MatchResult


@contextlib.contextmanager
def first_node_first() -> Iterator[list[_FirstNodeFirst]]:
    """Within the block, the default multi-output rewrite rules use :class:`_FirstNodeFirst`; yields the
    wrappers (empty where onnxscript is laid out otherwise). The library's matchers are put back on exit.

    The rules are onnxscript's module-level objects: an optimiser run in another thread meanwhile gets the
    wrappers too, which changes its speed, not its result."""
    try:
        rules, result = _multi_output_rules()
    except (ImportError, AttributeError, IndexError) as e:  # another onnxscript layout: its pass as it is
        log.debug("ONNX optimiser: multi-output matchers left as they are (%s)", e)
        rules, result = [], type(None)
    saved = [r._matcher for r in rules]
    wrappers = [_FirstNodeFirst(m, result) for m in saved]
    try:
        for rule, wrapper in zip(rules, wrappers):
            rule._matcher = wrapper
        yield wrappers
    finally:
        for rule, matcher in zip(rules, saved):
            rule._matcher = matcher


def optimize(program: torch.onnx.ONNXProgram) -> None:
    """``program.optimize()`` (in place: ``program.model`` is replaced) with the multi-output matchers wrapped."""
    with first_node_first():
        program.optimize()
