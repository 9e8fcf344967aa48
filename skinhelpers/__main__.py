"""Command line: ``python -m skinhelpers <command> ...`` (also installed as ``skinhelpers``).

Commands:
  datasets                      list the supported datasets and their layouts
  download DATASET [--dest D]   download from Kaggle (needs credentials), or explain why not
  validate DATASET DATA_DIR     load and validate a dataset, print the report
  run ...                       the notebook pipeline (what run_all.sh calls)
  predict ...                   classify new images with a checkpoint or .onnx: probabilities
                                under the training data's class mix (--prior), see --help
  compare RUN_A RUN_B [...]     headline metrics side by side, paired bootstrap differences
  export ...                    a checkpoint as ONNX or safetensors + config.json (see --help)
  demo --checkpoint CK          a local Gradio page to try a model on 127.0.0.1 (see --help)

Anywhere on the line: -q/--quiet (warnings and errors only) or --verbose (debug messages too).
"""

from __future__ import annotations

import argparse
import sys

# Every command imports its module inside its function: torch, papermill, onnx and gradio
# take seconds to import, and `python -m skinhelpers --help` (or `datasets`) should not.


def _datasets(argv):
    from skinhelpers.data.registry import describe

    print(describe())
    return 0


def _download(argv):
    from skinhelpers.data.download import DownloadError, download

    ap = argparse.ArgumentParser(prog="skinhelpers download")
    ap.add_argument("dataset")
    ap.add_argument("--dest", default=None)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    try:
        root = download(a.dataset, a.dest, force=a.force)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(root)
    return 0


def _validate(argv):
    from skinhelpers.data.manifest import load_manifest
    from skinhelpers.data.validate import validate

    ap = argparse.ArgumentParser(prog="skinhelpers validate")
    ap.add_argument("dataset")
    ap.add_argument("data_dir", nargs="?", default=None)
    ap.add_argument("--findings", default=None, help="write every finding to this CSV")
    a = ap.parse_args(argv)
    df = load_manifest(a.dataset, a.data_dir)
    report = validate(df)
    print(report)
    if a.findings:
        from skinhelpers.files import write_csv

        write_csv(a.findings, report.findings)
    return 0


def _run(argv):
    from skinhelpers.run.pipeline import main

    return main(argv)


def _predict(argv):
    from skinhelpers.evaluate.predict import main

    return main(argv)


def _compare(argv):
    from skinhelpers.evaluate.compare import main

    return main(argv)


# export and demo import onnx / gradio, which take seconds: keep them out of the other
# commands (every command imports lazily, inside its function)
def _export(argv):
    from skinhelpers.share.export import main

    return main(argv)


def _demo(argv):
    from skinhelpers.share.demo import main

    return main(argv)


COMMANDS = {
    "datasets": _datasets,
    "download": _download,
    "validate": _validate,
    "run": _run,
    "predict": _predict,
    "compare": _compare,
    "export": _export,
    "demo": _demo,
}


QUIET, VERBOSE = ("-q", "--quiet"), ("--verbose",)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in QUIET + VERBOSE for a in argv) and argv[:1] != ["run"]:  # run parses its own
        from skinhelpers import logs

        logs.configure("WARNING" if any(a in QUIET for a in argv) else "DEBUG")
        argv = [a for a in argv if a not in QUIET + VERBOSE]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
