"""scripts/uv_args.py: uv installs with pip's own settings (indexes, wheel folders,
constraints, certificate), so a fresh environment gets what pip would have installed."""

from __future__ import annotations

import subprocess
import sys

from skinhelpers.files import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "uv_args.py"


def _uv_args(pip_config_list: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], input=pip_config_list, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_pip_settings_become_the_same_uv_options():
    text = "\n".join(
        [
            "global.cert='/etc/ssl/certs/ca.crt'",
            "global.constraint='/etc/pip/constraints.txt'",
            "global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'",
            "global.find-links='/from/a/file'",
            "download.find-links='/not/for/install'",  # another command's section
            ":env:.find-links='/opt/wheels'",  # the environment wins, as in pip
            ":env:.default-timeout='180'",  # nothing uv needs
        ]
    )
    args = _uv_args(text)
    pairs = list(zip(args[::2], args[1::2]))
    assert ("--index-strategy", "unsafe-best-match") in pairs  # pip's: best of all indexes
    assert "--compile-bytecode" in args
    assert [v for o, v in zip(args, args[1:]) if o == "--extra-index-url"] == [
        "file:///opt/a/simple",
        "file:///opt/b/simple",
    ]
    assert [v for o, v in zip(args, args[1:]) if o == "--find-links"] == ["/opt/wheels"]
    assert [v for o, v in zip(args, args[1:]) if o == "--constraint"] == [
        "/etc/pip/constraints.txt"
    ]
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca.crt" in args
    assert "--index-url" not in args and not any("180" in a for a in args)


def test_no_pip_settings_give_only_the_defaults():
    assert _uv_args("") == ["--index-strategy", "unsafe-best-match", "--compile-bytecode"]
    args = _uv_args("global.index-url='https://mirror.example/simple'\n")
    assert args[-2:] == ["--index-url", "https://mirror.example/simple"]
