"""Find, check, blank and fill the solution regions of the package.

A solution region is a run of whole statements inside a function body,
between two comment lines at the statements' indentation::

    ### BEGIN SOLUTION ex1_2
    dx = dy @ W.T
    ...
    ### END SOLUTION

Blanking keeps both marker lines and replaces the statements between them by
one ``raise NotImplementedError("ex1_2 (lesson 1): compute ...")``. The
markers show the learner where to write, and they keep the region
machine-readable in a student copy, so ``reset`` and the checks below work
there too.

Every check reports ``path:line: problem`` for each broken marker, and
:func:`tinycond.exercises.project.scan_project` raises :class:`RegionError`
listing all of them, so the generator never writes a copy from a
half-marked package.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

from tinycond.exercises.table import EXERCISES, Exercise

BEGIN_PREFIX = "### BEGIN SOLUTION "
END_LINE = "### END SOLUTION"
PACKAGE = "tinycond"

# A comment that starts like a marker must match one of the two exact
# spellings below, so a typo is reported instead of silently ignored. Prose
# that mentions the markers in the middle of a comment is not a marker.
_MARKER_LIKE = re.compile(r"^#+\s*(BEGIN|END)\s+SOLUTION")
_BEGIN = re.compile(r"^### BEGIN SOLUTION (\S+)$")
_EXERCISE_ID = re.compile(r"^ex(\d+)_(\d+)$")
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# The message of every stub starts like this; tests/conftest.py reads the id
# back from a NotImplementedError to report "not implemented" or "blocked".
STUB_MESSAGE = re.compile(r"^(ex\d+_\d+) \(lesson (\d+)\): ")


class RegionError(ValueError):
    """Raised when solution markers or the exercise table are inconsistent.

    ``problems`` contains one ``path:line: problem`` string per defect.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} with the solution regions:"
        super().__init__("\n".join([header, *("  " + p for p in self.problems)]))


@dataclass(frozen=True)
class Region:
    """One solution region.

    Attributes
    ----------
    path : str
        File path relative to the project root, with ``/`` separators.
    exercise_id : str
        The id on the BEGIN line, for example ``"ex1_2"``.
    function : str
        ``"module:qualname"`` of the enclosing function.
    begin, end : int
        1-based line numbers of the BEGIN and END markers.
    indent : str
        Indentation of the markers and of the statements between them.
    quantity : str
        What the function computes, for the stub's hint (the names in the
        docstring's ``Returns`` section, else its summary line).
    """

    path: str
    exercise_id: str
    function: str
    begin: int
    end: int
    indent: str
    quantity: str

    @property
    def function_name(self) -> str:
        """The qualified name without the module, for example ``"linear_backward"``."""
        return self.function.split(":", 1)[1]


# Parsing one file


def module_name(path: str) -> str:
    """Return the dotted module name of a package file path such as ``tinycond/moe/dense.py``."""
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def parse_regions(text: str, path: str, exercises=EXERCISES):
    """Return ``(regions, problems)`` for the Python source ``text`` of file ``path``.

    ``path`` is relative to the project root. Problems are strings
    ``path:line: problem``; a region with a problem is not returned.
    """
    if "SOLUTION" not in text:
        return [], []
    try:
        markers = _marker_comments(text)
    except (tokenize.TokenError, SyntaxError) as error:
        line = getattr(error, "lineno", None) or (error.args[1][0] if len(error.args) > 1 else 0)
        return [], [f"{path}:{line}: cannot read the file to find solution markers: {error.args[0]}"]
    if not markers:
        return [], []
    problems = []
    pairs = _pair_markers(markers, path, problems)
    if problems:
        return [], problems  # with unbalanced markers, no pairing can be trusted
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        return [], [f"{path}:{error.lineno}: syntax error: {error.msg}"]
    index = _SyntaxIndex(tree)
    known = {exercise.id: exercise for exercise in exercises}
    regions = []
    for begin, end, exercise_id, indent in pairs:
        region = _check_pair(begin, end, exercise_id, indent, path, index, known, problems)
        if region is not None:
            regions.append(region)
    return regions, problems


def _marker_comments(text):
    """Return ``(line, indent, comment)`` for each comment that looks like a marker."""
    markers = []
    lines = text.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type != tokenize.COMMENT or not _MARKER_LIKE.match(token.string):
            continue
        line_number, column = token.start
        line = lines[line_number - 1]
        own_line = line[:column].strip() == ""
        markers.append((line_number, line[:column] if own_line else None, token.string.rstrip()))
    return markers


def _pair_markers(markers, path, problems):
    pairs = []
    open_marker = None
    for line, indent, comment in markers:
        where = f"{path}:{line}"
        if indent is None:
            problems.append(f"{where}: a solution marker must be alone on its line, got {comment!r} after code")
            continue
        begin = _BEGIN.match(comment)
        if begin:
            if open_marker is not None:
                problems.append(f"{where}: BEGIN SOLUTION inside the region opened at line {open_marker[0]}; close that one first with '{END_LINE}'")
            open_marker = (line, begin.group(1), indent)
        elif comment == END_LINE:
            if open_marker is None:
                problems.append(f"{where}: END SOLUTION without a BEGIN SOLUTION before it")
                continue
            begin_line, exercise_id, begin_indent = open_marker
            open_marker = None
            if indent != begin_indent:
                problems.append(
                    f"{where}: END SOLUTION is indented {len(indent)} spaces but its BEGIN at line {begin_line} is indented {len(begin_indent)}"
                )
                continue
            pairs.append((begin_line, line, exercise_id, indent))
        else:
            problems.append(f"{where}: malformed marker {comment!r}; write '{BEGIN_PREFIX}exN_M' or '{END_LINE}' exactly")
    if open_marker is not None:
        problems.append(f"{path}:{open_marker[0]}: BEGIN SOLUTION {open_marker[1]} has no END SOLUTION after it")
    return pairs


class _SyntaxIndex:
    """Statements of a module with their parents, for locating regions."""

    def __init__(self, tree):
        self.parent = {}
        self.field = {}
        self.statements = []
        for node in ast.walk(tree):
            for field_name, value in ast.iter_fields(node):
                children = value if isinstance(value, list) else [value]
                for child in children:
                    if isinstance(child, ast.AST):
                        self.parent[child] = node
                        self.field[child] = field_name
            if isinstance(node, ast.stmt):
                self.statements.append(node)

    def qualname(self, node) -> str:
        names = []
        while node is not None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(node.name)
            node = self.parent.get(node)
        return ".".join(reversed(names))

    def enclosing_function(self, node):
        node = self.parent.get(node)
        while node is not None and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            node = self.parent.get(node)
        return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _check_pair(begin, end, exercise_id, indent, path, index, known, problems):
    """Return the Region between markers at lines ``begin`` and ``end``, or None after appending its problems."""
    where = f"{path}:{begin}"
    before = len(problems)
    if exercise_id not in known:
        problems.append(f"{where}: unknown exercise id {exercise_id!r}; add it to EXERCISES in tinycond/exercises/table.py")
        return None
    for statement in index.statements:
        if _is_compound(statement):
            continue
        for marker in (begin, end):
            if statement.lineno < marker <= statement.end_lineno:
                problems.append(f"{path}:{marker}: the marker splits the statement that starts at line {statement.lineno}")

    inside = [s for s in index.statements if begin < s.lineno < end]
    top = [s for s in inside if index.parent.get(s) not in inside]
    if not inside:
        problems.append(f"{where}: region {exercise_id} contains no code")
        return None
    last = max(s.end_lineno for s in inside)
    if last > end and len(problems) == before:
        problems.append(f"{path}:{end}: END SOLUTION cuts the statement that starts at line {max(s.lineno for s in inside if s.end_lineno == last)}")
    blocks = {(id(index.parent[s]), index.field[s]) for s in top}
    if len(blocks) > 1 or any(s.col_offset != len(indent) for s in top):
        problems.append(f"{where}: the markers of {exercise_id} must be indented like the statements between them, all in one block")

    function = index.enclosing_function(top[0])
    if function is None:
        problems.append(f"{where}: region {exercise_id} is not inside a function; regions go in a function body")
        return None
    docstring = _docstring_node(function)
    if docstring is not None and any(s is docstring for s in top):
        problems.append(f"{where}: region {exercise_id} includes the docstring of {function.name}; start it after the docstring")

    qualified = f"{module_name(path)}:{index.qualname(function)}"
    if qualified not in known[exercise_id].functions:
        listed = ", ".join(known[exercise_id].functions)
        problems.append(
            f"{where}: region {exercise_id} is in {qualified}, which the table does not list for {exercise_id} (it lists {listed})"
        )
    if len(problems) > before:
        return None
    return Region(path, exercise_id, qualified, begin, end, indent, _quantity(function))


def _is_compound(statement) -> bool:
    return any(isinstance(getattr(statement, name, None), list) for name in ("body", "orelse", "finalbody", "handlers", "cases"))


def _docstring_node(function):
    first = function.body[0] if function.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def _quantity(function) -> str:
    """Name what ``function`` computes, in plain words, for its stub's message.

    The names of the docstring's ``Returns`` entries (``name : type``) come
    first. Without named entries, the summary line is used: the names in a
    leading literal such as ``(dx, dW)``, else the summary itself without
    its leading "Return" or "Compute" and without reST markup. A summary
    that starts with another verb ("Run ...") does not follow "compute", so
    then the quantity is "the result of <function>".
    """
    doc = ast.get_docstring(function) or ""
    summary = doc.strip().splitlines()[0] if doc.strip() else ""
    names = _returned_names(doc.splitlines()) or _summary_names(summary)
    if names:
        return _join_words(names)
    if _LEADING_VERB.match(summary):
        phrase = _summary_phrase(summary)
        if phrase:
            return phrase
    return f"the result of {function.name}"


# A named numpydoc entry, "dx : ndarray" or "dW1, db1 : ndarray", at the start of its line.
_RETURNS_ENTRY = re.compile(r"^(\w+(?:\s*,\s*\w+)*)\s*:(?!:)")
_LEADING_VERB = re.compile(r"^(?:Returns?|Computes?)\s+", re.IGNORECASE)
_LEADING_LITERAL = re.compile(r"^``\(?\s*(\w+(?:\s*,\s*\w+)*)\s*\)?``")
# LaTeX in :math:`...` does not read as text, so it is dropped. Other roles,
# such as :func:`name`, keep their target.
_MATH_ROLE = re.compile(r":math:`[^`]*`")
_OTHER_ROLE = re.compile(r":\w+:`~?([^`]*)`")


def _returned_names(lines) -> list:
    """Return the names of the ``name : type`` entries of a numpydoc ``Returns`` section."""
    for number, line in enumerate(lines[:-1]):
        if line.strip() == "Returns" and _is_underline(lines[number + 1]):
            section = lines[number + 2 :]
            break
    else:
        return []
    names = []
    for number, entry in enumerate(section):
        if number + 1 < len(section) and _is_underline(section[number + 1]):
            break  # a line above a line of dashes is the next section's title
        match = _RETURNS_ENTRY.match(entry)
        if match:
            names.extend(name.strip() for name in match.group(1).split(","))
    return names


def _is_underline(line: str) -> bool:
    return bool(line.strip()) and set(line.strip()) == {"-"}


def _summary_names(summary: str) -> list:
    """Return the names in a summary that starts like "Return ``(dx, dW)`` ...", else ``[]``."""
    match = _LEADING_LITERAL.match(_LEADING_VERB.sub("", summary.strip()))
    return [name.strip() for name in match.group(1).split(",")] if match else []


def _summary_phrase(summary: str) -> str:
    """Return the summary line as a lowercase phrase, without the leading verb, markup or elaboration."""
    text = _LEADING_VERB.sub("", summary.strip())
    text = _MATH_ROLE.sub("", text)
    text = _OTHER_ROLE.sub(r"\1", text)
    text = text.replace("``", "").replace("`", "")
    text = re.split(r"[:;]\s", text, maxsplit=1)[0]  # what follows a colon elaborates
    text = " ".join(text.split()).rstrip(" .,:;")
    return text[:1].lower() + text[1:]


def _join_words(words) -> str:
    """Return ``"a"``, ``"a and b"`` or ``"a, b and c"``."""
    words = list(words)
    if len(words) == 1:
        return words[0]
    return f"{', '.join(words[:-1])} and {words[-1]}"


# Blanking and filling


def stub_statement(region: Region, exercise: Exercise) -> str:
    """Return the ``raise NotImplementedError(...)`` line that replaces a region, without indentation."""
    message = (
        f"{exercise.id} (lesson {exercise.lesson}): compute {region.quantity} in {region.function_name} "
        f"({region.path}); its docstring lists the steps"
    )
    message = " ".join(message.split()).replace("\\", "\\\\").replace('"', '\\"')
    return f'raise NotImplementedError("{message}")'


def is_blank(region: Region, text: str) -> bool:
    """Return True if the region's body in ``text`` is a stub of its own exercise."""
    body = [line.strip() for line in _body_lines(region, text.splitlines()) if line.strip()]
    prefix = f'raise NotImplementedError("{region.exercise_id} (lesson '
    return len(body) == 1 and body[0].startswith(prefix)


def blank_text(text: str, regions, exercises=EXERCISES) -> str:
    """Return ``text`` with the body of each given region replaced by its stub.

    ``regions`` must come from :func:`parse_regions` on this same text.
    """
    known = {exercise.id: exercise for exercise in exercises}
    lines = text.splitlines(keepends=True)
    for region in sorted(regions, key=lambda r: r.begin, reverse=True):
        begin_line = lines[region.begin - 1]
        newline = begin_line[len(begin_line.rstrip("\r\n")) :] or "\n"
        stub = region.indent + stub_statement(region, known[region.exercise_id]) + newline
        lines[region.begin : region.end - 1] = [stub]
    return "".join(lines)


def fill_text(stub_text: str, solution_text: str, path: str, exercises=EXERCISES) -> str:
    """Return ``stub_text`` with every region body taken from ``solution_text``.

    Both texts must have the same regions in the same order, as a student
    copy and its source do. This undoes :func:`blank_text`.
    """
    stub_regions, problems = parse_regions(stub_text, path, exercises)
    solution_regions, more = parse_regions(solution_text, path, exercises)
    if problems or more:
        raise RegionError(problems + more)
    stub_ids = [r.exercise_id for r in stub_regions]
    solution_ids = [r.exercise_id for r in solution_regions]
    if stub_ids != solution_ids:
        raise RegionError([f"{path}: the regions differ between the two texts: {stub_ids} and {solution_ids}"])
    lines = stub_text.splitlines(keepends=True)
    solution_lines = solution_text.splitlines(keepends=True)
    pairs = sorted(zip(stub_regions, solution_regions), key=lambda pair: pair[0].begin, reverse=True)
    for stub, solution in pairs:
        lines[stub.begin : stub.end - 1] = solution_lines[solution.begin : solution.end - 1]
    return "".join(lines)


def _body_lines(region: Region, lines):
    return lines[region.begin : region.end - 1]
