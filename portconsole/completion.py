"""Shell completion scripts (bash, zsh, fish), generated from the CLI's own argparse parser.

Nothing is listed by hand, so a new command or option completes as soon as it exists.
bash and zsh come from shtab (it walks an argparse parser and writes each shell's native
completion code); fish, which shtab does not write, is generated here the same way: one
`complete` line per command and option. Options that take a path complete file names
(`--data-dir` folder names), options with choices complete the choices.

Install: `portconsole completion bash > ~/.local/share/bash-completion/completions/portconsole`,
`portconsole completion zsh > "${fpath[1]}/_portconsole"`, or
`portconsole completion fish > ~/.config/fish/completions/portconsole.fish`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
PROG = "portconsole"

# Options and arguments that name a folder; any other Path-typed one names a file.
_DIRECTORY_DESTS = frozenset({"data_dir"})
# Options typed as plain strings that still name a file or a folder.
_PATH_DESTS = frozenset({"output", "file", "textfile", "config", "sign_key", "data_dir"})


def _is_path(action: argparse.Action) -> bool:
    return action.type is Path or action.dest in _PATH_DESTS


def _subparsers(
    parser: argparse.ArgumentParser,
) -> Iterator[argparse._SubParsersAction[argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def _mark_paths(parser: argparse.ArgumentParser, file: object, directory: object) -> None:
    """Tell shtab which actions complete paths (its convention: an action's `complete`)."""
    for action in parser._actions:
        if _is_path(action) and not action.choices:
            action.complete = directory if action.dest in _DIRECTORY_DESTS else file  # type: ignore[attr-defined]
    for sub in _subparsers(parser):
        seen: set[int] = set()
        for child in sub.choices.values():
            if id(child) not in seen:
                seen.add(id(child))
                _mark_paths(child, file, directory)


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` ("bash", "zsh" or "fish")."""
    if shell == "fish":
        return _fish(parser)
    import shtab

    _mark_paths(parser, shtab.FILE, shtab.DIRECTORY)
    return str(shtab.complete(parser, shell=shell))


# ----- fish --------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _help(action: argparse.Action | None, fallback: str = "") -> str:
    text = (action.help if action is not None else None) or fallback
    if text == argparse.SUPPRESS:
        return ""
    return " ".join(text.split())[:100].replace("%(default)s", str(getattr(action, "default", "")))


def _option_lines(parser: argparse.ArgumentParser, condition: str) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        parts = [f"complete -c {PROG}"]
        if condition:
            parts.append(f"-n {_quote(condition)}")
        for option in action.option_strings:
            if option.startswith("--"):
                parts.append(f"-l {option[2:]}")
            elif len(option) == 2:
                parts.append(f"-s {option[1:]}")
        takes_value = action.nargs != 0
        if takes_value and action.choices:
            parts.append(f"-x -a {_quote(' '.join(str(c) for c in action.choices))}")
        elif takes_value and _is_path(action):
            parts.append(
                "-r -a '(__fish_complete_directories)'"
                if action.dest in _DIRECTORY_DESTS
                else "-r -F"
            )
        elif takes_value:
            parts.append("-x")
        description = _help(action)
        if description:
            parts.append(f"-d {_quote(description)}")
        lines.append(" ".join(parts))
    return lines


def _fish_walk(parser: argparse.ArgumentParser, path: list[str], lines: list[str]) -> None:
    for sub in _subparsers(parser):
        names = list(sub.choices)
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        if path:
            inside = f"__fish_seen_subcommand_from {path[-1]}"
            offer = f"{inside}; and not __fish_seen_subcommand_from {' '.join(names)}"
        else:
            offer = "__fish_use_subcommand"
        for name in names:
            lines.append(
                f"complete -c {PROG} -f -n {_quote(offer)} -a {name} -d {_quote(_help(None, helps.get(name, '')))}"
            )
        for name, child in sub.choices.items():
            condition = " ; and ".join(f"__fish_seen_subcommand_from {p}" for p in [*path, name])
            lines += _option_lines(child, condition)
            for positional in child._actions:
                if not positional.option_strings and _is_path(positional):
                    lines.append(f"complete -c {PROG} -n {_quote(condition)} -F")
            _fish_walk(child, [*path, name], lines)


def _fish(parser: argparse.ArgumentParser) -> str:
    lines = [
        f"# fish completion for {PROG}, generated from its argparse parser",
        f"# ({PROG} completion fish > ~/.config/fish/completions/{PROG}.fish)",
        f"complete -c {PROG} -f",
    ]
    lines += _option_lines(parser, "")
    _fish_walk(parser, [], lines)
    return "\n".join(lines) + "\n"
