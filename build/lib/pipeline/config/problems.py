"""Config problems as users read them: the key path, the YAML line, the closest valid key or value.

Guarantees: every pydantic error of a config becomes one ``line N: key: message`` text, one per
key (union alternatives collapsed to the most specific), in file order; an unknown key or invalid
choice comes with the closest valid one ("did you mean `min_units`?"). Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel


class KeyProblem(ValueError):
    """A cross-field error that knows the config key it belongs to."""

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def line_for(lines: dict, loc: tuple[Any, ...]) -> int | None:
    loc = tuple(p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS))
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


# pydantic inserts union member tags into error locations; they are not config keys
_UNION_TAGS = {
    "DimensionConfig", "str", "list[union[str,int,float,bool]]", "RangeFilter",
    "int", "float", "bool", "function-after[_normalise_dimensions(), list[union[DimensionConfig,str]]]",
}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        p for p in loc
        if not (isinstance(p, str) and (p in _UNION_TAGS or p.startswith(("list[", "function-"))))
    )


def problems(errors: list[dict], lines: dict, root: type[BaseModel]) -> list[str]:
    """One text per config key with errors (union alternatives give several errors for one key:
    the most specific is kept), in file order: ``", line 7: min_unit: unknown key …"``."""
    by_loc: dict[tuple, list[dict]] = {}
    for e in errors:
        loc = _clean_loc(tuple(e.get("loc", ())))
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, KeyProblem):
            loc = cause.loc
        by_loc.setdefault(loc, []).append(e)
    # a union member's errors under a deeper key make the bare key's own alternatives noise
    for loc in list(by_loc):
        if any(other[: len(loc)] == loc and len(other) > len(loc) for other in by_loc):
            if all(e.get("type") != "value_error" for e in by_loc[loc]):
                del by_loc[loc]
    out = []
    for loc, errs in by_loc.items():
        err = _pick_error(errs)
        line = line_for(lines, loc)
        where = f", line {line}" if line else ""
        out.append((line or 10**9, f"{where}: {format_loc(loc)}: {_message(err, loc, root)}"))
    return [text for _, text in sorted(out, key=lambda t: t[0])]


def did_you_mean(word: Any, choices: Any) -> str:
    """`` (did you mean `x`?)`` for the closest of ``choices`` to ``word``, or ``""``."""
    import difflib

    options = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        close = [lowered[str(word).lower()]] if str(word).lower() in lowered else []
    return f" (did you mean `{close[0]}`?)" if close and close[0] != str(word) else ""


def _keys_at(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """The valid keys of the mapping at ``loc`` (a config path), from the models; [] when unknown."""
    import typing

    def models_in(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for a in typing.get_args(annotation) for m in models_in(a)]

    model: type[BaseModel] | None = root
    skip_key = False
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        if skip_key:  # a free-form mapping key (a filter's column name)
            skip_key = False
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        found = models_in(field.annotation)
        skip_key = typing.get_origin(field.annotation) is dict
        if skip_key:
            found = models_in(typing.get_args(field.annotation)[1])
        model = found[0] if found else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _message(err: dict, loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    kind = err.get("type")
    if kind == "extra_forbidden":
        hint = did_you_mean(loc[-1], _keys_at(loc[:-1], root)) if loc else ""
        msg = "unknown key" + (hint or " (check spelling; see the config reference in the README)")
    elif kind == "missing":
        msg = "required key is missing"
    elif kind in ("literal_error", "enum"):
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        msg += did_you_mean(err.get("input"), expected) if expected else ""
    return msg


def _pick_error(errors: list[dict]) -> dict:
    def score(e: dict) -> tuple[int, int]:
        loc = _clean_loc(tuple(e.get("loc", ())))
        # value errors (ours) are most informative; then deeper locations
        return (1 if e.get("type") == "value_error" else 0, len(loc))

    return max(errors, key=score)
