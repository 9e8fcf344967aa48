"""The ``realdata`` marker is applied by fixture use, and an unmarked test that reads the
real data fails (tests/conftest.py). Checked on a throwaway suite and a fake data folder."""

from __future__ import annotations

from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

SUITE = """
import os
import pytest

DATA = os.environ["SKINLAB_SHARED_DATA"]


def test_uses_fixture(shared_data):
    assert (shared_data / "a.txt").read_text() == "x"


@pytest.mark.realdata
def test_marked_by_hand():
    assert open(os.path.join(DATA, "a.txt")).read() == "x"


def test_sneaks_a_read():
    assert open(os.path.join(DATA, "a.txt")).read() == "x"


def test_sneaks_a_listing():
    assert os.listdir(DATA) == ["a.txt"]


def test_offline():
    assert True
"""


def _suite(pytester, monkeypatch):
    data = pytester.path / "fake_shared_data"
    data.mkdir()
    (data / "a.txt").write_text("x")
    monkeypatch.setenv("SKINLAB_SHARED_DATA", str(data))
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    realdata: needs the real data\n")
    pytester.makepyfile(test_suite=SUITE)


def test_unmarked_reads_of_real_data_fail(pytester, monkeypatch):
    _suite(pytester, monkeypatch)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=5, errors=2)  # the two sneaks pass, then error
    res.stdout.fnmatch_lines(
        ["*test_sneaks_a_read read the real data*without @pytest.mark.realdata*"]
    )
    res.stdout.fnmatch_lines(["*test_sneaks_a_listing read the real data*"])


def test_not_realdata_deselects_fixture_users(pytester, monkeypatch):
    _suite(pytester, monkeypatch)
    res = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "not realdata", "-k", "not sneaks"
    )
    res.assert_outcomes(passed=1, deselected=4)
