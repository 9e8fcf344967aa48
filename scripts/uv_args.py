"""Turn pip's configuration into the same settings for ``uv pip install`` (setup_env.sh).

uv does not read pip's configuration files or ``PIP_*`` variables. So that uv installs
exactly what pip would (the same indexes, local wheel folders and constraints), this reads
``pip config list`` (every file and variable pip itself reads, later ones winning as they
do for pip) and prints uv's options, one per line:

    python -m pip config list | python scripts/uv_args.py

``cert`` becomes ``SSL_CERT_FILE=...`` on a line of its own, for the caller to export.
uv searches all indexes for the best version, as pip does (``--index-strategy
unsafe-best-match``), and byte-compiles what it installs, as pip does.
"""

from __future__ import annotations

import ast
import sys

# pip key -> uv option, for keys whose value is a whitespace-separated list
LISTS = {
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def pip_settings(text: str) -> dict[str, str]:
    """``pip config list`` output -> {key: value}; a later line overrides an earlier one
    (pip prints files from the most general to the environment, in the order it applies
    them)."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if not sep or "." not in name:
            continue
        section, key = name.split(".", 1)
        if section not in ("global", "install", ":env:"):
            continue  # another command's section ([download], [wheel], ...)
        try:
            out[key] = str(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            out[key] = value.strip("'\"")
    return out


def uv_args(settings: dict[str, str]) -> list[str]:
    args = ["--index-strategy", "unsafe-best-match", "--compile-bytecode"]
    if settings.get("index-url"):
        args += ["--index-url", settings["index-url"]]
    for key, option in LISTS.items():
        for value in settings.get(key, "").split():
            args += [option, value]
    if settings.get("cert"):
        args.append(f"SSL_CERT_FILE={settings['cert']}")
    return args


if __name__ == "__main__":
    print("\n".join(uv_args(pip_settings(sys.stdin.read()))))
