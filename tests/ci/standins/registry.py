"""A container registry stand-in for ghcr.io: the OCI distribution API on loopback, over TLS, in memory and
on disk, recording every manifest pushed (repository, tag, digest).

Enough of the protocol for `docker push` / `docker pull` through the engine: blob uploads (monolithic and
chunked, with `Transfer-Encoding: chunked` bodies), cross-repository mounts, manifests by tag and by digest,
tag lists. The engine trusts it through `/etc/containers/certs.d/<host:port>/ca.crt` (podman reads that
folder on every registry connection, unlike registries.conf, which the long-running API service caches).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import ssl
import subprocess  # nosec B404 - fixed openssl command
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CERTS_D = Path("/etc/containers/certs.d")
_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>blobs/uploads|blobs|manifests|tags)(?:/(?P<ref>[^/]*))?$")
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)


@dataclass
class Push:
    """One manifest PUT: what `docker push name:tag` leaves in the registry."""

    repository: str
    reference: str
    digest: str
    media_type: str
    at: float


@dataclass
class RegistryState:
    root: Path
    blobs: dict[str, Path] = field(default_factory=dict)
    uploads: dict[str, Path] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)  # (repo, tag|digest)
    pushes: list[Push] = field(default_factory=list)
    pulls: list[tuple[str, str]] = field(default_factory=list)
    refusals: dict[tuple[str, str], int] = field(default_factory=dict)  # (repo, tag) -> pushes still refused
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: RegistryState  # set on the subclass

    def log_message(self, fmt: str, *args: object) -> None:  # quiet
        return

    # --- helpers ---
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, err: str, msg: str) -> None:
        body = json.dumps({"errors": [{"code": err, "message": msg}]}).encode()
        self._send(code, body, {"Content-Type": "application/json"})

    def _route(self) -> tuple[str, str, str | None, dict[str, list[str]]] | None:
        parts = urlsplit(self.path)
        m = _ROUTE.match(parts.path)
        if not m:
            return None
        return m["name"], m["kind"], m["ref"], parse_qs(parts.query)

    # --- verbs ---
    def do_GET(self) -> None:  # noqa: N802
        self._read(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._read(head=True)

    def _read(self, head: bool) -> None:
        if urlsplit(self.path).path in ("/v2", "/v2/"):
            return self._send(200, b"{}", {"Content-Type": "application/json"})
        r = self._route()
        if r is None:
            return self._error(404, "NAME_UNKNOWN", self.path)
        name, kind, ref, _ = r
        st = self.state
        if kind == "blobs" and ref:
            path = st.blobs.get(ref)
            if path is None:
                return self._error(404, "BLOB_UNKNOWN", ref)
            data = b"" if head else path.read_bytes()
            size = path.stat().st_size
            return self._send(
                200,
                data,
                {
                    "Content-Length": str(size),
                    "Docker-Content-Digest": ref,
                    "Content-Type": "application/octet-stream",
                },
            )
        if kind == "manifests" and ref:
            found = st.manifests.get((name, ref))
            if found is None:
                return self._error(404, "MANIFEST_UNKNOWN", f"{name}:{ref}")
            data, media = found
            if not head:
                with st.lock:
                    st.pulls.append((name, ref))
            return self._send(
                200,
                data,
                {
                    "Content-Type": media,
                    "Docker-Content-Digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                    "Content-Length": str(len(data)),
                },
            )
        if kind == "tags":
            tags = sorted({t for (n, t) in st.manifests if n == name and not t.startswith("sha256:")})
            return self._send(200, json.dumps({"name": name, "tags": tags}).encode())
        return self._error(404, "UNSUPPORTED", self.path)

    def do_POST(self) -> None:  # noqa: N802
        r = self._route()
        if r is None or r[1] != "blobs/uploads":
            return self._error(404, "UNSUPPORTED", self.path)
        name, _, _, query = r
        body = self._body()
        st = self.state
        mount = query.get("mount", [None])[0]
        if mount and mount in st.blobs:
            return self._send(
                201, headers={"Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount}
            )
        digest = query.get("digest", [None])[0]
        if digest:  # monolithic upload
            return self._store_blob(name, digest, body, None)
        upload = uuid.uuid4().hex
        path = st.root / "uploads" / upload
        path.write_bytes(body)
        with st.lock:
            st.uploads[upload] = path
        self._send(
            202,
            headers={
                "Location": f"/v2/{name}/blobs/uploads/{upload}",
                "Docker-Upload-UUID": upload,
                "Range": f"0-{max(len(body) - 1, 0)}",
            },
        )

    def do_PATCH(self) -> None:  # noqa: N802
        r = self._route()
        if r is None or r[1] != "blobs/uploads" or not r[2] or r[2] not in self.state.uploads:
            return self._error(404, "BLOB_UPLOAD_UNKNOWN", self.path)
        name, _, upload, _ = r
        path = self.state.uploads[upload]
        with path.open("ab") as f:
            f.write(self._body())
        size = path.stat().st_size
        self._send(
            202,
            headers={
                "Location": f"/v2/{name}/blobs/uploads/{upload}",
                "Docker-Upload-UUID": upload,
                "Range": f"0-{max(size - 1, 0)}",
            },
        )

    def do_PUT(self) -> None:  # noqa: N802
        r = self._route()
        if r is None:
            return self._error(404, "UNSUPPORTED", self.path)
        name, kind, ref, query = r
        body = self._body()
        if kind == "blobs/uploads":
            digest = query.get("digest", [None])[0]
            if not ref or ref not in self.state.uploads or not digest:
                return self._error(404, "BLOB_UPLOAD_UNKNOWN", self.path)
            return self._store_blob(name, digest, body, ref)
        if kind == "manifests" and ref:
            media = self.headers.get("Content-Type", "").split(";")[0].strip()
            if media not in MANIFEST_TYPES:
                return self._error(400, "MANIFEST_INVALID", f"media type {media!r}")
            manifest = json.loads(body)
            missing = [
                d["digest"]
                for d in [manifest.get("config") or {}, *manifest.get("layers", [])]
                if d and d["digest"] not in self.state.blobs
            ]
            if missing:
                return self._error(400, "MANIFEST_BLOB_UNKNOWN", ", ".join(missing))
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            st = self.state
            with st.lock:
                if st.refusals.get((name, ref), 0) > 0:
                    st.refusals[(name, ref)] -= 1
                    refused = True
                else:
                    refused = False
            if refused:  # an outage of the registry, as a release meets it
                return self._error(503, "UNAVAILABLE", f"the stand-in refuses {name}:{ref} (fault injected)")
            with st.lock:
                st.manifests[(name, ref)] = (body, media)
                st.manifests[(name, digest)] = (body, media)
                st.pushes.append(Push(name, ref, digest, media, time.time()))
            return self._send(
                201, headers={"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
            )
        return self._error(404, "UNSUPPORTED", self.path)

    def _store_blob(self, name: str, digest: str, tail: bytes, upload: str | None) -> None:
        st = self.state
        path = st.uploads.pop(upload) if upload else st.root / "uploads" / uuid.uuid4().hex
        with path.open("ab") as f:
            f.write(tail)
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        actual = "sha256:" + h.hexdigest()
        if actual != digest:
            path.unlink()
            return self._error(400, "DIGEST_INVALID", f"{digest} != {actual}")
        final = st.root / "blobs" / digest.replace(":", "_")
        path.replace(final)
        with st.lock:
            st.blobs[digest] = final
        self._send(201, headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


class Registry:
    """`with Registry(tmp) as reg:` serves on https://127.0.0.1:<port> until the block ends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "uploads").mkdir(parents=True, exist_ok=True)
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        self.state = RegistryState(root)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        cert, key = root / "cert.pem", root / "key.pem"
        self.cert = cert
        subprocess.run(  # nosec B603 B607 - fixed arguments
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", str(key), "-out", str(cert), "-subj", "/CN=mlgate-act-registry",
                "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.trust_dir = CERTS_D / self.host
        self.trust_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(cert, self.trust_dir / "ca.crt")
        # the same trust for a docker CLI that talks to the registry itself (`docker manifest inspect`):
        # a certs.d tree to mount at /etc/docker/certs.d
        self.docker_certs_d = root / "docker-certs.d"
        (self.docker_certs_d / self.host).mkdir(parents=True, exist_ok=True)
        shutil.copy(cert, self.docker_certs_d / self.host / "ca.crt")
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Registry":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.trust_dir, ignore_errors=True)

    @property
    def pushes(self) -> list[Push]:
        with self.state.lock:
            return list(self.state.pushes)

    def tags(self, repository: str) -> dict[str, str]:
        """tag -> manifest digest, as the registry holds them now."""
        with self.state.lock:
            return {
                ref: "sha256:" + hashlib.sha256(body).hexdigest()
                for (name, ref), (body, _) in self.state.manifests.items()
                if name == repository and not ref.startswith("sha256:")
            }

    def refuse(self, repository: str, tag: str, times: int = 1) -> None:
        """Answer the next ``times`` pushes of ``repository:tag`` with 503 (a registry outage)."""
        with self.state.lock:
            self.state.refusals[(repository, tag)] = times

    def has_manifest(self, repository: str, digest: str) -> bool:
        with self.state.lock:
            return (repository, digest) in self.state.manifests
