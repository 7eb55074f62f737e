"""What the serving image gives a container, read from images/vllm/Dockerfile: its environment (ENV),
its user and that user's home (USER, useradd), its working directory, and the files it COPYs from the
repository. Pure. The container runtime sets HOME from the image's /etc/passwd entry for the user the
pod runs as (runAsUser), so HOME comes from `useradd --uid N ... NAME` (home /home/NAME).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = Path("images") / "vllm" / "Dockerfile"  # in the build context (the repository root)
# The base image's PATH (Ubuntu's default, which the CUDA images extend); `ENV PATH=...:${PATH}` builds on it.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageUser:
    uid: int
    gid: int
    name: str
    home: str


@dataclass(frozen=True)
class Image:
    env: dict[str, str]
    users: tuple[ImageUser, ...]
    workdir: str
    copies: tuple[tuple[str, str], ...]  # (repository path, image path)
    venv: str  # the virtualenv the image's PATH puts first

    def user(self, uid: int | None) -> ImageUser | None:
        return next((u for u in self.users if u.uid == uid), None)

    def home(self, uid: int | None) -> str:
        """HOME as the container runtime sets it: the passwd entry's home, "/" when there is none."""
        user = self.user(uid)
        return user.home if user else ("/root" if uid == 0 else "/")


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def parse_dockerfile(text: str) -> Image:
    env = {"PATH": BASE_PATH}
    users, copies, workdir, venv = [], [], "/", ""
    for keyword, rest in _instructions(text):
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = _expand(value, env)
        elif keyword == "WORKDIR":
            workdir = _expand(rest, env)
        elif keyword == "COPY" and not rest.startswith("--from"):
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            copies.append((parts[0], parts[-1]))
        elif keyword == "RUN":
            for match in re.finditer(r"useradd ([^&;]+)", rest):
                args = shlex.split(match.group(1))
                uid = int(args[args.index("--uid") + 1]) if "--uid" in args else None
                gid = int(args[args.index("--gid") + 1]) if "--gid" in args else uid
                name = [a for a in args if not a.startswith("-")][-1]
                if uid is not None:
                    users.append(ImageUser(uid, gid, name, f"/home/{name}"))
            match = re.search(r"-m venv (\S+)", rest)
            if match:
                venv = _expand(match.group(1), env)
    return Image(env, tuple(users), workdir, tuple(copies), venv)


def serving_image(context: Path = REPO_ROOT) -> Image:
    """The image built from `context` (the repository, or an export of another commit's files)."""
    return parse_dockerfile((context / DOCKERFILE).read_text())
