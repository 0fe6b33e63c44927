"""A Hugging Face hub for the tests: the file protocol huggingface_hub speaks, on localhost.

`HEAD`/`GET /{repo}/resolve/{revision}/{filename}` with the headers huggingface_hub reads
(`X-Repo-Commit`, `ETag`, and for LFS files `X-Linked-Etag` = sha256 and `X-Linked-Size`),
`Range: bytes=N-` answered 206 (416 past the end). The tests can make it cut a transfer
halfway (once), answer 503 as a hub that is down, or serve other bytes than the hash it names.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFileServed:
    content: bytes
    lfs: bool
    etag: str = ""

    def __post_init__(self) -> None:
        if not self.etag:
            if self.lfs:
                self.etag = hashlib.sha256(self.content).hexdigest()
            else:  # git's blob hash, as the hub names a small file
                blob = f"blob {len(self.content)}\0".encode() + self.content
                self.etag = hashlib.sha1(blob).hexdigest()


@dataclass
class FakeHub:
    files: dict[str, HubFileServed] = field(default_factory=dict)  # "owner/repo/filename"
    down: bool = False
    requests: list[str] = field(default_factory=list)
    # a file whose first GET stops halfway: the test sees the progress, then lets it fail
    cut_once: str | None = None
    cut_reached: asyncio.Event = field(default_factory=asyncio.Event)
    cut_release: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, repo: str, filename: str, content: bytes, lfs: bool) -> HubFileServed:
        served = HubFileServed(content, lfs)
        self.files[f"{repo}/{filename}"] = served
        return served

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{owner}/{repo}/resolve/{revision}/{filename}", self.resolve)
        return app

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        key = f"{info['owner']}/{info['repo']}/{info['filename']}"
        self.requests.append(f"{request.method} {key} {request.headers.get('Range', '')}")
        if self.down:
            raise web.HTTPServiceUnavailable(text="the hub is down")
        served = self.files.get(key)
        if served is None:
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound"})
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{served.etag}"'}
        if served.lfs:
            headers["X-Linked-Etag"] = f'"{served.etag}"'
            headers["X-Linked-Size"] = str(len(served.content))
        start = 0
        if (asked := request.headers.get("Range", "")).startswith("bytes="):
            start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= len(served.content):  # as the hub (and RFC 9110) answer it
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{len(served.content)}"}
                )
        body = served.content[start:]
        if start:
            headers["Content-Range"] = (
                f"bytes {start}-{len(served.content) - 1}/{len(served.content)}"
            )
        headers["Content-Length"] = str(len(body))
        response = web.StreamResponse(status=206 if start else 200, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        if self.cut_once == info["filename"]:
            self.cut_once = None
            await response.write(body[: len(body) // 2])
            self.cut_reached.set()
            await self.cut_release.wait()
            assert request.transport is not None
            request.transport.close()  # the client sees fewer bytes than Content-Length
            return response
        await response.write(body)
        await response.write_eof()
        return response
