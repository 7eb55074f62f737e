"""The docs are written for the person deploying: the two commands first, links that resolve, an index
that lists every page, every stack named, and no project history (commit ids, issue or review numbers)."""

import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = sorted([README, *(REPO_ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def test_readme_starts_with_the_two_commands():
    first_block = README.read_text().split("```")[1]
    lines = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip() and line != "sh"]
    assert lines == ["make plan", "make test"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(page):
    for target, _ in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.relative_to(REPO_ROOT)} links to missing {target}"


def test_readme_index_lists_every_docs_page():
    index = README.read_text().split("\n## Documentation\n", 1)[1]
    linked = {(README.parent / target).resolve() for target, _ in LINK.findall(index)}
    pages = {p.resolve() for p in (REPO_ROOT / "docs").rglob("*.md")}
    assert not pages - linked, sorted(str(p.relative_to(REPO_ROOT)) for p in pages - linked)


def test_readme_names_every_stack():
    stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in REPO_ROOT.glob("Pulumi.*.yaml"))
    table = README.read_text()
    for stack in stacks:
        assert f"\n| {stack} |" in table, stack
    assert "Three stacks" not in table


HISTORY = re.compile(r"issue #\d+|review-[a-z0-9]+ #\d+|review-findings|the lead's|\bearlier (?:run|session)",
                     re.IGNORECASE)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_project_history_in_the_docs(page):
    text = page.read_text()
    assert not HISTORY.findall(text), HISTORY.findall(text)


def test_no_commit_of_this_repository_is_cited():
    """A hex word that names a commit of this repository is history; model revisions and digests are not."""
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=REPO_ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    words = {word for page in PAGES for word in re.findall(r"\b[0-9a-f]{7,40}\b", page.read_text())
             if re.search(r"[a-f]", word) and re.search(r"[0-9]", word)}
    commits = [word for word in sorted(words)
               if subprocess.run(["git", "cat-file", "-e", f"{word}^{{commit}}"], cwd=REPO_ROOT,
                                 capture_output=True).returncode == 0]
    assert not commits, commits


def test_readme_walks_from_clone_to_an_endpoint_and_back():
    """The deploy path in the order a newcomer takes it, each step with its command."""
    text = README.read_text()
    steps = ["make plan", "Docker with buildx", "linux/amd64", "gcpProject", "pulumi login", "PULUMI_CONFIG_PASSPHRASE",
             "scripts/lock_model.py", "pulumi up --stack eval", "first `up`, in total",
             "pulumi stack output kubeconfig --show-secrets", "port-forward service/qwen2vl-openai", "curl",
             "pulumi destroy --stack eval",
             "qwen2vl:protect false"]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions) if p == -1]
    assert positions == sorted(positions), sorted(zip(positions, steps))


# How docs/teardown.md names each kind of resource prod protects (the plan's `protect` flags).
PROTECTED_KINDS = {"gcp:container/cluster:Cluster": "GKE cluster",
                   "gcp:artifactregistry/repository:Repository": "Artifact Registry"}


def test_teardown_names_everything_prod_protects(plan_of):
    text = (REPO_ROOT / "docs" / "teardown.md").read_text()
    for resource in (r for r in plan_of("prod").resources if r.protect):
        if resource.type == "kubernetes:core/v1:Namespace":
            assert f"`{resource.inputs['metadata']['name']}`" in text, resource.name
        else:
            assert resource.type in PROTECTED_KINDS, f"docs/teardown.md does not say how {resource.type} is protected"
            assert PROTECTED_KINDS[resource.type] in text
    for stack in ("eval", "staging", "local", "prod"):
        assert f"pulumi destroy --stack {stack}" in text or f"also: staging, local" in text
