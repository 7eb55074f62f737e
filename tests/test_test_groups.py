"""`make test`'s groups (scripts/test_groups.py): together they run every test once, and the closing line
adds up what each pytest run reported."""

from scripts.test_groups import GROUPS, totals
from tests.conftest import REPO_ROOT


def split(selection: list[str]) -> tuple[str, set[str], set[str]]:
    """A selection's marker expression, the files it names and the files it ignores."""
    marker = selection[selection.index("-m") + 1]
    ignored = {selection[i + 1] for i, argument in enumerate(selection) if argument == "--ignore"}
    named = {argument for argument in selection if argument.endswith(".py")} - ignored
    return marker, named, ignored


def test_the_groups_run_every_test_file_once_per_marker():
    test_files = {str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "tests").glob("test_*.py")}
    for marker in ("server", "not server"):
        groups = [split(selection)[1:] for _, selection in GROUPS if split(selection)[0] == marker]
        # One group per marker takes every file that the others name (and only those are ignored).
        remainders = [ignored for named, ignored in groups if not named]
        assert len(remainders) == 1, marker
        named_elsewhere = [path for named, _ in groups for path in named]
        assert len(named_elsewhere) == len(set(named_elsewhere)), f"a file in two {marker} groups"
        assert remainders[0] == set(named_elsewhere), marker
        assert set(named_elsewhere) <= test_files, set(named_elsewhere) - test_files
    assert {split(selection)[0] for _, selection in GROUPS} == {"server", "not server"}


def test_totals_read_pytest_closing_line():
    output = "....F\n= short test summary info =\nFAILED t.py::x\n===== 1 failed, 40 passed, 2 skipped, 3 deselected in 12.5s ====="
    assert totals(output) == {"failed": 1, "passed": 40, "skipped": 2}
    assert totals("=== 2 passed, 1 error in 3s ===") == {"passed": 2, "errors": 1}
    assert totals("collected 0 items\n=== no tests ran in 0.1s ===") == {}
