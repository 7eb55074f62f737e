"""`make test`'s groups (scripts/test_groups.py): together they run every test once, and the closing line
adds up what each pytest run reported."""

from scripts.test_groups import GROUPS, totals


def test_the_groups_split_the_suite_by_marker_and_file_without_overlap():
    selections = {name: selection for name, selection in GROUPS}
    assert selections["the rest"] == ["-m", "not server"]
    assert selections["rehearsal"] == ["-m", "server", "tests/test_rehearse.py"]
    assert selections["servers"] == ["-m", "server", "--ignore", "tests/test_rehearse.py"]


def test_totals_read_pytest_closing_line():
    output = "....F\n= short test summary info =\nFAILED t.py::x\n===== 1 failed, 40 passed, 2 skipped, 3 deselected in 12.5s ====="
    assert totals(output) == {"failed": 1, "passed": 40, "skipped": 2}
    assert totals("=== 2 passed, 1 error in 3s ===") == {"passed": 2, "errors": 1}
    assert totals("collected 0 items\n=== no tests ran in 0.1s ===") == {}
