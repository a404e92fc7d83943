"""The engine's socket as act sees it: a proxy on a unix socket that forwards every request to the engine,
except two kinds that podman answers slowly and act sends at every step:

- `GET /info` and `GET /version` (act fills runner.os/arch and the expression contexts from them, several
  times a step): podman takes 0.3-0.45 s per call (it gathers storage statistics); both answers are fixed for
  the session's engine, so the proxy asks once and answers from that.
- `GET /containers/<id>/archive?path=<file>` for a file on one of the container's volumes (act reads back
  the step's GITHUB_ENV/OUTPUT/PATH/STATE and summary files from its /var/run/act volume, five a step):
  podman copies through a chrooted helper process, 0.12 s each; the proxy reads the file from the volume's
  folder on the host (the same bytes) and answers with a tar of it, as the engine does. Anything else
  (a directory, a path outside a volume, a missing file) goes to the engine.

Measured on a job of 30 `run: true` steps: 86 s with the engine's socket, 24 s with the first shortcut alone.

Only act talks to the proxy (DOCKER_HOST); the job containers get the engine's own socket
(`--container-daemon-socket`), so what the jobs' steps do with `docker` is untouched.

Each forwarded request is sent with `Connection: close`, so every connection carries one request and the
proxy needs to parse only the first request head of a connection; an upgrade (exec/attach streams) is
forwarded as is and then spliced both ways.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import tarfile
import urllib.parse
import threading
import time
from pathlib import Path

CACHED = re.compile(rb"^GET (/v[0-9.]+)?/(info|version)(\?[^ ]*)? HTTP/1\.[01]$")
ARCHIVE = re.compile(rb"^GET (?:/v[0-9.]+)?/containers/([^/ ]+)/archive\?([^ ]*) HTTP/1\.[01]$")
HEAD_LIMIT = 1 << 20


class EngineProxy:
    """`with EngineProxy(upstream, path) as proxy:` serves the proxy on `path` in a thread until exit."""

    def __init__(self, upstream: Path, path: Path) -> None:
        self.upstream, self.path = upstream, path
        self.cache: dict[bytes, bytes] = {}
        self.hits = 0
        self.forwarded: list[tuple[str, float]] = []  # (request line, seconds to the end of its answer)
        self._volumes: dict[str, list[tuple[str, str]]] = {}  # container -> (destination, host folder)
        self._handlers: set[asyncio.Task] = set()  # asyncio holds tasks weakly: a pending one must be held
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="engine-proxy")

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> "EngineProxy":
        self.path.unlink(missing_ok=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"the engine proxy on {self.path} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_unix_server(self._handle, path=str(self.path)))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head[:-4].split(b"\r\n")
        key = lines[0] if CACHED.match(lines[0]) else None
        if key is not None and key in self.cache:
            self.hits += 1
            writer.write(self.cache[key])
            await _close(writer)
            return
        archive = ARCHIVE.match(lines[0])
        if archive is not None:
            answer = await self._volume_file(archive[1].decode(), archive[2].decode())
            if answer is not None:
                self.hits += 1
                writer.write(answer)
                await _close(writer)
                return
        headers = [h for h in lines[1:] if not h.lower().startswith(b"connection:")]
        upgrade = any(h.lower().startswith(b"upgrade:") for h in lines[1:])
        connection = [h for h in lines[1:] if h.lower().startswith(b"connection:")] if upgrade else []
        head = b"\r\n".join([lines[0], *headers, *(connection or [b"Connection: close"])]) + b"\r\n\r\n"
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream), limit=HEAD_LIMIT)
        except OSError:
            writer.close()
            return
        up_writer.write(head)
        if key is not None:  # a cached endpoint asked for the first time: read the whole answer, keep it
            answer = await up_reader.read()
            if answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200"):
                self.cache[key] = answer
            writer.write(answer)
            await _close(writer)
            await _close(up_writer)
            return
        # the answer ends when the engine closes (Connection: close, or the end of an upgraded stream); what
        # the client still sends after that has nobody to read it
        started = time.monotonic()
        request = asyncio.ensure_future(_pump(reader, up_writer))
        await _pump(up_reader, writer)
        self.forwarded.append((lines[0].decode(errors="replace"), time.monotonic() - started))
        request.cancel()
        await _close(writer)
        await _close(up_writer)

    async def _volume_file(self, container: str, query: str) -> bytes | None:
        """The engine's answer to reading `path` out of the container, when it is a file on a volume."""
        path = urllib.parse.parse_qs(query).get("path", [""])[0]
        if not path.startswith("/") or "/../" in path + "/":
            return None
        if container not in self._volumes:
            inspect = await self._ask(f"GET /containers/{container}/json")
            if inspect is None:
                return None
            self._volumes[container] = [
                (m["Destination"].rstrip("/") + "/", m["Source"])
                for m in json.loads(inspect).get("Mounts") or []
                if m.get("Type") == "volume" and m.get("Source")
            ]
        for dest, source in self._volumes[container]:
            if path.startswith(dest):
                host = Path(source) / path[len(dest) :]
                break
        else:
            return None
        try:
            st = host.lstat()
            if not host.is_file() or host.is_symlink():
                return None
            data = host.read_bytes()
        except OSError:
            return None
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as t:
            info = tarfile.TarInfo(host.name)
            info.size, info.mode, info.mtime = len(data), st.st_mode & 0o7777, int(st.st_mtime)
            t.addfile(info, io.BytesIO(data))
        body = tar.getvalue()
        stat = {
            "name": host.name,
            "size": len(data),
            "mode": st.st_mode & 0o777,
            "isDir": False,
            "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
            "linkTarget": "",
        }
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n"
            f"X-Docker-Container-Path-Stat: {base64.b64encode(json.dumps(stat).encode()).decode()}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + body

    async def _ask(self, request: str) -> bytes | None:
        """The body of the engine's 200 answer to a GET without a body, or None."""
        try:
            r, w = await asyncio.open_unix_connection(str(self.upstream), limit=HEAD_LIMIT)
        except OSError:
            return None
        w.write(f"{request} HTTP/1.1\r\nHost: engine\r\nConnection: close\r\n\r\n".encode())
        answer = await r.read()
        await _close(w)
        head, _, body = answer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return None
        if b"transfer-encoding: chunked" in head.lower():
            body = _unchunk(body)
        return body


def _unchunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until src ends, then pass the end on (a half close: the other direction goes on)."""
    try:
        while chunk := await src.read(1 << 16):
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        pass


async def _close(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass
