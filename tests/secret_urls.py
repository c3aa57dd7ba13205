"""One apprise URL per schema that takes a secret, each secret distinctive, for masking tests.

Apprise describes every plugin: its URL `templates` (`{schema}://{botname}@{token}`) and
its `template_tokens`, each with a type, often a regex, and `private: True` for the ones
that are secrets. Here every template is filled with values generated from those regexes
(a seeded random string that matches), until apprise accepts the URL. The private values
are the secrets a test must never find in anything the product prints or writes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

try:  # Python 3.11+: the parser is private but stable; it is what `re` itself uses.
    import re._parser as sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

from apprise import Apprise
from apprise.manager_plugins import NotificationManager

_ALNUM = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class SecretURL:
    schema: str
    url: str
    secrets: tuple[str, ...]


def _sample(pattern: str, flags: int, rng: random.Random, length: int) -> str:
    """A string matching `pattern`, random where the pattern allows a choice."""
    parsed = sre_parse.parse(pattern, flags)
    return "".join(_emit(parsed, rng, length))


def _class_chars(items: Any) -> list[str]:
    chars: list[str] = []
    negate = False
    for op, value in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            chars.append(chr(value))
        elif name == "RANGE":
            low, high = value
            chars += [chr(c) for c in range(low, high + 1) if chr(c).isalnum() or high - low < 5]
        elif name == "CATEGORY":
            kind = str(value)
            if "DIGIT" in kind and "NOT" not in kind:
                chars += list("0123456789")
            elif "WORD" in kind and "NOT" not in kind:
                chars += list(_ALNUM)
            elif "NOT_SPACE" in kind:
                chars += list(_ALNUM)
    if negate or not chars:
        return list(_ALNUM)
    alnum = [c for c in chars if c.isalnum()]
    return alnum or chars


def _emit(parsed: Any, rng: random.Random, length: int) -> list[str]:
    out: list[str] = []
    for op, value in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(value))
        elif name == "NOT_LITERAL":
            out.append(rng.choice([c for c in _ALNUM if c != chr(value)]))
        elif name == "ANY":
            out.append(rng.choice(_ALNUM))
        elif name == "IN":
            out.append(rng.choice(_class_chars(value)))
        elif name == "CATEGORY":
            out.append(rng.choice("0123456789" if "DIGIT" in str(value) else _ALNUM))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, item = value
            # An optional part (`(bot)?`, `([a-z]+:)?`) is left out; a repeat takes `length`.
            # So is an optional run of one literal (notica's `^\?*`).
            single_literal = len(item) == 1 and str(item[0][0]) == "LITERAL"
            optional = (low, high) == (0, 1) or (low == 0 and single_literal)
            count = 0 if optional else max(low, min(high, length))
            for _ in range(count):
                out += _emit(item, rng, length)
        elif name == "SUBPATTERN":
            out += _emit(value[-1], rng, length)
        elif name == "BRANCH":
            out += _emit(value[1][0], rng, length)
        elif name in ("AT", "GROUPREF", "ASSERT", "ASSERT_NOT"):
            continue
    return out


def _value(name: str, spec: dict[str, Any], rng: random.Random, private: bool) -> str:
    kind = str(spec.get("type", "string"))
    regex = spec.get("regex")
    if kind == "int":
        low = int(spec.get("min", 1) or 1)
        high = int(spec.get("max", 65535) or 65535)
        return str(max(low, min(high, 8443)))
    if kind == "bool":
        return "yes"
    if "phone" in name:
        return "1555" + "".join(rng.choice("0123456789") for _ in range(7))
    if kind == "email":  # a private one (a login) is distinctive, like every secret here
        local = "".join(rng.choice("abcdefghjkmnpqrstuvwxyz") for _ in range(12))
        return f"{local}@example.net" if private else "ops@example.net"
    if kind.startswith("choice"):
        return str(list(spec.get("values", ["x"]))[0])
    if regex:
        pattern, flags = regex if isinstance(regex, tuple) else (regex, "")
        flag_bits = re.IGNORECASE if "i" in str(flags) else 0
        for length in (24, 32, 40, 16, 64, 12, 80, 8):
            candidate = _sample(pattern, flag_bits, rng, length)
            if candidate and re.match(pattern, candidate, flag_bits):
                return candidate
    if name in ("host",):
        return "svc.example.net"
    if name in ("path", "fullpath"):
        return "/"
    if private:
        return "".join(rng.choice(_ALNUM) for _ in range(24))
    return "visible" + "".join(rng.choice("abcdefghjkmnpqrstuvwxyz") for _ in range(5))


def _schema(plugin: Any) -> str | None:
    for attr in ("secure_protocol", "protocol"):
        value = getattr(plugin, attr, None)
        if isinstance(value, (tuple, list)):
            value = value[0] if value else None
        if value:
            return str(value)
    return None


def _build(plugin: Any, schema: str, seed: int) -> SecretURL | None:
    tokens: dict[str, dict[str, Any]] = dict(getattr(plugin, "template_tokens", {}))
    for template in getattr(plugin, "templates", ()):
        rng = random.Random(f"{schema}|{template}|{seed}")
        values: dict[str, str] = {"schema": schema}
        secrets: list[str] = []
        for name in re.findall(r"{(\w+)}", template):
            if name == "schema":
                continue
            spec = tokens.get(name, {})
            kind_name = name
            if name == "targets":  # a list: one target, in the form of the first `target_*`
                kind_name, spec = next(
                    ((k, v) for k, v in tokens.items() if k.startswith("target_")), (name, spec)
                )
            private = bool(spec.get("private"))
            text = _value(kind_name, spec, rng, private)
            values[name] = text
            if private:
                secrets.append(text)
        if not secrets:
            continue
        try:
            url = template.format(**values)
        except (KeyError, IndexError):
            continue
        # A plugin whose library is missing here cannot be instantiated: its URL is kept
        # (someone may configure it), and only our own patterns can mask it.
        enabled = getattr(plugin, "enabled", True)
        if not enabled or Apprise.instantiate(url, suppress_exceptions=True):
            return SecretURL(schema, url, tuple(secrets))
    return None


def secret_taking_schemas() -> list[str]:
    """Every schema whose plugin declares a private token (whether or not its library is
    installed: a disabled plugin still has a URL someone may configure)."""
    found = []
    for plugin in NotificationManager().plugins(include_disabled=True):
        tokens = getattr(plugin, "template_tokens", {})
        if any(spec.get("private") for spec in tokens.values()):
            schema = _schema(plugin)
            if schema:
                found.append(schema)
    return sorted(set(found))


def secret_urls() -> tuple[list[SecretURL], list[str]]:
    """(one URL per secret-taking schema apprise accepts, the schemas no URL was built for)."""
    built: list[SecretURL] = []
    missed: list[str] = []
    manager = NotificationManager()
    for schema in secret_taking_schemas():
        plugin = manager[schema]
        made = None
        for seed in range(3):
            made = _build(plugin, schema, seed)
            if made:
                break
        if made:
            built.append(made)
        else:
            missed.append(schema)
    return built, missed
