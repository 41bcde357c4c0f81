"""A static check for SQL built from variables: `text()` / `exec_driver_sql()` calls whose SQL
is not a literal, and DB-API `execute()` calls whose first argument formats a string."""

from __future__ import annotations

import ast

SQL_CALLS = {"text", "exec_driver_sql"}


def _literal_constants(tree: ast.Module) -> set[str]:
    """Module-level names assigned exactly once, to a string literal."""
    assigned: dict[str, list[ast.expr | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(
                node.target, ast.Name):
            assigned.setdefault(node.target.id, []).append(
                None if isinstance(node, ast.AugAssign) else node.value)
    return {name for name, values in assigned.items() if len(values) == 1
            and isinstance(values[0], ast.Constant) and isinstance(values[0].value, str)}


def _is_literal(node: ast.expr, constants: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_literal(node.left, constants) and _is_literal(node.right, constants)
    return isinstance(node, ast.Name) and node.id in constants


def _builds_string(node: ast.expr, constants: set[str]) -> bool:
    """An expression that formats a string from something else: an f-string with a
    placeholder, `"…" % x`, `"…" + x`, `"…".format(x)`."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return isinstance(node.left, ast.Constant | ast.JoinedStr) and isinstance(
            getattr(node.left, "value", ""), str)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        strings = [side for side in (node.left, node.right) if isinstance(
            side, ast.JoinedStr) or (isinstance(side, ast.Constant)
                                     and isinstance(side.value, str))]
        return bool(strings) and not _is_literal(node, constants)
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format")


def sql_from_variables(source: str, filename: str) -> list[tuple[str, int, str]]:
    """(file, line, argument source) of every `text()` / `exec_driver_sql()` whose SQL is not
    a literal (or a literal constant of the module), and of every `.execute()` /
    `.executemany()` whose first argument formats a string."""
    tree = ast.parse(source, filename)
    constants = _literal_constants(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else "")
        argument = node.args[0]
        bad = (name in SQL_CALLS and not _is_literal(argument, constants)) or (
            name in ("execute", "executemany") and _builds_string(argument, constants))
        if bad:
            found.append((filename, node.lineno, ast.get_source_segment(source, argument)
                          or ""))
    return found


def sql_call_count(source: str) -> int:
    """How many `text()` / `exec_driver_sql()` calls `source` makes (flagged or not)."""
    return sum(1 for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call) and (
        getattr(node.func, "id", None) in SQL_CALLS
        or getattr(node.func, "attr", None) in SQL_CALLS))
