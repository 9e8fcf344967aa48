"""The HTML report of a run folder."""

from __future__ import annotations

import json
import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from skinhelpers.files import write_json
from skinhelpers.run.report import render_report


def _executed(title: str, code: str, text: str, error: bool = False):
    nb = new_notebook()
    cell = new_code_cell(code, execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text=text)]
    if error:
        cell.outputs.append(
            new_output("error", ename="ValueError", evalue="boom", traceback=["ValueError: boom"])
        )
    nb.cells = [new_markdown_cell(f"# {title}\nSome story."), cell]
    return nb


def _run_folder(tmp_path, synthetic=True, metrics=True, fail=False):
    run = tmp_path / "myrun"
    run.mkdir()
    nbformat.write(
        _executed("01 · The data", "SECRET_CODE_01 = 1", "loaded 520 images"), run / "01_eda.ipynb"
    )
    nbformat.write(
        _executed("08 · Evaluation", "SECRET_CODE_08 = 2", "accuracy 0.8", error=fail),
        run / "08_evaluation.ipynb",
    )
    nbformat.write(new_notebook(), run / "scratch.ipynb")  # not a chapter: ignored
    write_json(
        run / "run.json",
        {
            "dataset": "demo" if synthetic else "ham10000",
            "profile": "smoke",
            "run_name": "myrun",
            "notebooks": ["01_eda.ipynb", "08_evaluation.ipynb"],
            "parameters": {"image_size": 64, "max_images": 600, "dataset": "demo"},
            "timings_s": {"01_eda.ipynb": 11.2, "08_evaluation.ipynb": 42.0},
            **({"failed": "08_evaluation.ipynb"} if fail else {}),
        },
    )
    write_json(
        run / "manifest.json",
        {
            "dataset": "demo" if synthetic else "ham10000",
            "classes": ["akiec", "bcc", "mel", "nv"],
            "synthetic": synthetic,
            "positive_class": "mel",
        },
    )
    (run / "params").mkdir()
    write_json(
        run / "params" / "08_evaluation.json",
        {"notebook": "08_evaluation", "params": {"n_bootstrap": 77, "tta_views": 8}},
    )
    if metrics:
        write_json(
            run / "metrics.json",
            {
                "primary": "best_ema",
                "n_test": 123,
                "n_bootstrap": 77,
                "models": {
                    "best": {
                        "headline": {"accuracy": {"value": 0.8123, "ci_low": 0.75, "ci_high": 0.86}}
                    },
                    "best_ema": {
                        "headline": {"accuracy": {"value": 0.8345, "ci_low": 0.78, "ci_high": 0.88}}
                    },
                },
                "sentences": [
                    "At the threshold chosen on validation the model finds 71% of melanomas."
                ],
            },
        )
    return run


def test_report_links_chapters_in_order_with_story_versions(tmp_path):
    run = _run_folder(tmp_path)
    index = render_report(run)
    assert index == run / "report" / "index.html"
    html = index.read_text()
    links = re.findall(r"href='([^']+\.html)'", html)
    assert links == [
        "model_card.html",
        "glossary.html",
        "01_eda.story.html",
        "01_eda.html",
        "08_evaluation.story.html",
        "08_evaluation.html",
    ]
    assert "Not a diagnostic device" in (run / "MODEL_CARD.md").read_text()
    for name in links:
        assert (run / "report" / name).stat().st_size > 1000
    full = (run / "report" / "08_evaluation.html").read_text()
    story = (run / "report" / "08_evaluation.story.html").read_text()
    assert "SECRET_CODE_08" in full and "SECRET_CODE_08" not in story
    assert "accuracy 0.8" in story  # outputs stay
    assert "scratch" not in html
    # the story: dataset, synthetic banner, headline metrics with CIs, parameters, timings
    assert "SYNTHETIC DATA" in html
    assert "0.835" in html and "0.780" in html and "0.880" in html and "0.812" in html
    assert "71% of melanomas" in html
    assert "n_bootstrap" in html and "77" in html and "image_size" in html
    assert "42 s" in html and "08 · Evaluation" in html
    assert "class='failed'" not in html and "stopped" not in html
    # what next, from metrics.json; a run evaluated before the appendix shows every model
    assert "<h2>What next</h2>" in html and "SYNTHETIC demo set" in html
    assert "not for choosing" not in html


def test_report_without_metrics_and_with_a_failed_chapter(tmp_path):
    run = _run_folder(tmp_path, synthetic=False, metrics=False, fail=True)
    html = render_report(run).read_text()
    assert "SYNTHETIC" not in html
    assert "No <code>metrics.json</code>" in html
    assert "notebook 08_evaluation.ipynb failed" in html
    assert re.search(r"class='failed'>failed<", html)


def test_report_survives_a_broken_notebook_file(tmp_path):
    run = _run_folder(tmp_path)
    (run / "03_leakage.ipynb").write_text("{not json")
    html = render_report(run).read_text()
    assert "03_leakage.ipynb (could not be rendered" in html
    assert "08_evaluation.story.html" in html


def test_report_merges_stream_fragments_into_one_block(tmp_path):
    """Progress updates arrive as many stream outputs; the page shows one block, with
    what a carriage return overwrote dropped."""
    run = _run_folder(tmp_path)
    nb = nbformat.read(run / "01_eda.ipynb", as_version=4)
    cell = nb.cells[1]
    cell.outputs = [
        new_output("stream", name="stdout", text=f"\rtrain {i}0%|" + "#" * i) for i in range(1, 10)
    ] + [new_output("stream", name="stdout", text="\rtrain 100%\nepoch 1 done\n")]
    nbformat.write(nb, run / "01_eda.ipynb")
    page = (render_report(run).parent / "01_eda.story.html").read_text()
    assert page.count("<pre>") == 1  # one stream block, not ten
    assert "train 100%" in page and "epoch 1 done" in page
    assert "train 50%" not in page


def test_report_marks_a_killed_chapter_from_run_json(tmp_path):
    """A dead kernel leaves no error output; run.json says what happened and where."""
    run = _run_folder(tmp_path)
    rec = json.loads((run / "run.json").read_text())
    rec.update(
        {
            "failed": "08_evaluation.ipynb",
            "failure": {
                "notebook": "08_evaluation.ipynb",
                "status": "kernel_died",
                "cell": 7,
                "cell_index": 9,
                "error": "the kernel died",
            },
            "notebooks": [*rec["notebooks"], "09_external_validation.ipynb"],
            "results": {
                "08_evaluation.ipynb": {"status": "kernel_died"},
                "09_external_validation.ipynb": {
                    "status": "skipped",
                    "reason": "external_dataset is empty",
                },
            },
        }
    )
    write_json(run / "run.json", rec)
    html = render_report(run).read_text()
    assert re.search(r"class='failed'>kernel died<", html)
    assert "kernel died, cell 7 (index 9): the kernel died" in html
    assert "--resume" in html
    assert "skipped: external_dataset is empty" in html


def test_the_story_has_no_progress_bars_and_the_code_version_their_last_state(tmp_path):
    """Plain progress lines (run_all.sh), tqdm's own redraws and JupyterLab's bar widgets:
    none in the story; the version with code keeps each bar's final line."""
    run = _run_folder(tmp_path)
    nb = nbformat.read(run / "08_evaluation.ipynb", as_version=4)
    bar = "| 3/3 [00:03<00:00,  1.10s/batch]"
    shown = bar.replace("<", "&lt;")  # as the HTML page writes it
    nb.cells[1].outputs = [
        new_output(
            "stream",
            name="stdout",
            text="best val (2 views):   0%|          | 0/3 [00:00<?, ?batch/s]\n"
            f"best val (2 views): 100%|##########{bar}\n"
            "best val: balanced accuracy 0.61\n",
        ),
        new_output("stream", name="stderr", text="hashes: 12it [00:03,  3.90it/s]\n"),
        new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2},
                "text/plain": "cache: 100%|██████████| 10/10 [00:00<00:00, 100.0img/s]",
            },
        ),
        new_output("stream", name="stdout", text="epoch 1: 100% of the batches seen\n"),
    ]
    nbformat.write(nb, run / "08_evaluation.ipynb")
    out = render_report(run).parent
    story = (out / "08_evaluation.story.html").read_text()
    code = (out / "08_evaluation.html").read_text()
    assert "best val: balanced accuracy 0.61" in story and "100% of the batches seen" in story
    for page in (story, code):
        assert "0/3 [00:00" not in page  # a bar's first state: never
    assert "batch/s" not in story and "it/s" not in story and "img/s" not in story
    assert f"best val (2 views): 100%|##########{shown}" in code
    assert "hashes: 12it" in code


def test_progress_lines_are_recognised():
    from skinhelpers.progress import is_progress_line

    assert is_progress_line(
        "epoch 1/2 [finetune]:  23%|#####     | 3/13 [00:12<00:40,  4.04s/batch]"
    )
    assert is_progress_line("100%|##########| 10/10 [00:00<00:00, 100.0it/s]")
    assert is_progress_line("validate images: 100%|█████| 12177/12177 [00:02<00:00, 5335.20img/s]")
    assert is_progress_line("hash: 12it [00:03,  3.90it/s]")
    assert not is_progress_line("epoch 1/2 train_loss 1.2 val 0.5 (100%)")
    assert not is_progress_line("sensitivity 90%|specificity 80%| 3/4 [ok]")
