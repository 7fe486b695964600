"""Per-character features of source-like text, for finding the cells that track them: a small C-like lexer
(string literals, // and /* */ comments), bracket depth and the column."""

from __future__ import annotations


def text_features(text: str) -> dict[str, list[float]]:
    """Simple per-character features of source-like text: string literal, comment, bracket depth, column."""
    in_string = in_line_comment = in_block_comment = False
    depth = column = 0
    out: dict[str, list[float]] = {"inside string literal": [], "inside comment": [], "bracket depth": [],
                                   "position in line": []}
    prev = ""
    for ch in text:
        if in_line_comment and ch == "\n":
            in_line_comment = False
        elif in_block_comment and prev == "*" and ch == "/":
            in_block_comment = False
        elif not (in_line_comment or in_block_comment):
            if ch == '"' and prev != "\\":
                in_string = not in_string
            elif not in_string and prev == "/" and ch == "/":
                in_line_comment = True
            elif not in_string and prev == "/" and ch == "*":
                in_block_comment = True
            elif not in_string and ch in "([{":
                depth += 1
            elif not in_string and ch in ")]}":
                depth = max(0, depth - 1)
            if ch == "\n":
                in_string = False
        column = 0 if ch == "\n" else column + 1
        out["inside string literal"].append(float(in_string))
        out["inside comment"].append(float(in_line_comment or in_block_comment))
        out["bracket depth"].append(float(depth))
        out["position in line"].append(float(column))
        prev = ch
    return out
