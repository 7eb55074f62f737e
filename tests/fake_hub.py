"""A hub-compatible HTTP server on 127.0.0.1 (the parts huggingface_hub's model_info and downloads
use), serving repositories at several commits. Point huggingface_hub at it with HF_ENDPOINT."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_MIN_SIZE = 1024  # files at least this big are served as LFS objects (sha256 etags)


class FakeHub:
    def __init__(self) -> None:
        # repo -> commit -> {path: bytes}; repo -> {branch: commit}
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}
        self.branches: dict[str, dict[str, str]] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=None, head=False):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def not_found(self, head=False):
                self.reply(404, b'{"error": "Repository or revision not found"}',
                           {"Content-Type": "application/json", "X-Error-Code": "RevisionNotFound"}, head)

            def do_GET(self, head=False):
                path = self.path.split("?")[0]
                info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
                if info:
                    return self.model_info(*info.groups())
                tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
                if tree:
                    return self.tree(*tree.groups())
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if resolve:
                    return self.file(*resolve.groups(), head=head)
                return self.not_found(head)

            def do_HEAD(self):
                self.do_GET(head=True)

            def model_info(self, repo, revision):
                commit = hub.resolve(repo, revision)
                if commit is None:
                    return self.not_found()
                siblings = []
                for name, data in sorted(hub.commits[repo][commit].items()):
                    entry = {"rfilename": name, "size": len(data), "blobId": hub.git_blob_id(data)}
                    if len(data) >= LFS_MIN_SIZE:
                        entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                        "pointerSize": 134}
                    siblings.append(entry)
                body = json.dumps({"id": repo, "modelId": repo, "sha": commit, "siblings": siblings,
                                   "private": False, "tags": []}).encode()
                self.reply(200, body, {"Content-Type": "application/json"})

            def tree(self, repo, revision):
                commit = hub.resolve(repo, revision)
                if commit is None:
                    return self.not_found()
                entries = []
                for name, data in sorted(hub.commits[repo][commit].items()):
                    entry = {"type": "file", "path": name, "size": len(data), "oid": hub.git_blob_id(data)}
                    if len(data) >= LFS_MIN_SIZE:
                        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    entries.append(entry)
                self.reply(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

            def file(self, repo, revision, name, head=False):
                commit = hub.resolve(repo, revision)
                if commit is None or name not in hub.commits[repo][commit]:
                    return self.not_found(head)
                data = hub.commits[repo][commit][name]
                lfs = len(data) >= LFS_MIN_SIZE
                etag = hashlib.sha256(data).hexdigest() if lfs else hub.git_blob_id(data)
                headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
                if lfs:
                    headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
                ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if ranged and not head:
                    start = int(ranged.group(1))
                    end = int(ranged.group(2)) if ranged.group(2) else len(data) - 1
                    part = data[start:end + 1]
                    headers["Content-Range"] = f"bytes {start}-{start + len(part) - 1}/{len(data)}"
                    return self.reply(206, part, headers)
                self.reply(200, data, headers, head)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def git_blob_id(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def add_commit(self, repo: str, files: dict[str, bytes], branch: str | None = "main") -> str:
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()))
                              .encode() + repo.encode()).hexdigest()
        self.commits.setdefault(repo, {})[commit] = dict(files)
        if branch:
            self.branches.setdefault(repo, {})[branch] = commit
        return commit

    def resolve(self, repo: str, revision: str) -> str | None:
        if repo not in self.commits:
            return None
        if revision in self.branches.get(repo, {}):
            return self.branches[repo][revision]
        matches = [c for c in self.commits[repo] if c.startswith(revision)]
        return matches[0] if len(matches) == 1 and len(revision) >= 7 else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
