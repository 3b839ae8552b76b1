"""The client itself; see the package's docstring for what it does and why."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.client.sse import EventParser

logger = logging.getLogger("ferry.client")

TOKEN_FILE = "/var/run/secrets/ferry/token"
POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
NAMESPACE_HEADER = "X-Ferry-Namespace"

#: Longest line of a watch stream read, and most bytes of one event (Ferry's are well under a
#: kilobyte); past either the stream is dropped and the watch reconnects, rather than holding
#: whatever a broken or hostile server sends in memory.
MAX_LINE_BYTES = 64 * 1024
MAX_EVENT_BYTES = 256 * 1024


class FerryError(Exception):
    """The API refused (401, 403, 404, 400): ``status`` and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class FerryUnavailable(FerryError):
    """The API cannot be reached, answers 5xx or 429 (a limit of the server's: retry later), and
    there is no cached copy to serve."""


class _CrossOrigin(Exception):
    """A redirect to another scheme, host or port: not followed (see :class:`_Redirects`)."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(location)
        self.status = status
        self.location = location


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects on the same origin only. urllib's own handler copies every header to wherever
    it is sent (another host; https to http), ``Authorization`` and its token included."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if _origin(newurl) != _origin(req.full_url):
            fp.close()
            raise _CrossOrigin(code, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_Redirects)


@dataclass(frozen=True)
class Config:
    namespace: str
    name: str
    revision: int
    hash: str
    format: str
    data: Any
    rendered: Mapping[str, str]
    etag: str | None = None
    stale: bool = False  # served from the last-known-good file: the API could not be asked


@dataclass(frozen=True)
class Evaluation:
    key: str
    value: Any
    variant: str | None = None
    reason: str = "UNKNOWN"
    error_code: str | None = None
    error_details: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _config(document: Mapping[str, Any], etag: str | None, stale: bool = False) -> Config:
    return Config(
        namespace=str(document["namespace"]),
        name=str(document["name"]),
        revision=int(document["revision"]),
        hash=str(document["hash"]),
        format=str(document.get("format", "json")),
        data=document.get("data"),
        rendered=dict(document.get("rendered") or {}),
        etag=etag,
        stale=stale,
    )


def _message(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500]
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed.get("errorDetails") or parsed)
    return str(parsed)


class FerryClient:
    def __init__(
        self,
        base_url: str,
        *,
        namespace: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace or os.environ.get("FERRY_NAMESPACE") or _pod_namespace()
        self._token = token
        self._token_file = Path(token_file or os.environ.get("FERRY_TOKEN_FILE") or TOKEN_FILE)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout = timeout

    # ------------------------------------------------------------------ plumbing
    def _headers(self) -> dict[str, str]:
        token = self._token
        if token is None:
            with contextlib.suppress(OSError):
                token = self._token_file.read_text().strip()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _namespace(self, namespace: str | None) -> str:
        found = namespace or self.namespace
        if not found:
            raise ValueError("no namespace: pass namespace= or set FERRY_NAMESPACE")
        return found

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={**self._headers(), **(headers or {})},
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return _OPENER.open(request, timeout=timeout or self.timeout)
        except _CrossOrigin as exc:
            raise FerryError(
                exc.status,
                f"redirected to another origin ({exc.location}): not followed, the request "
                "carries a token; point the client at that URL if it is Ferry's",
            ) from None
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return exc
            text = exc.read()
            if exc.code >= 500 or exc.code == 429:
                raise FerryUnavailable(exc.code, _message(text)) from None
            raise FerryError(exc.code, _message(text)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise FerryUnavailable(0, f"cannot reach {self.base_url}: {exc}") from None

    # ------------------------------------------------------------------ the file cache
    def _cache_file(self, namespace: str, name: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return (
            self.cache_dir
            / urllib.parse.quote(namespace, "")
            / (urllib.parse.quote(name, "") + ".json")
        )

    def _cached(self, namespace: str, name: str) -> tuple[Mapping[str, Any], str | None] | None:
        path = self._cache_file(namespace, name)
        if path is None:
            return None
        try:
            saved = json.loads(path.read_text())
            return saved["document"], saved.get("etag")
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self, namespace: str, name: str, document: Any, etag: str | None) -> None:
        path = self._cache_file(namespace, name)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w") as out:  # mkstemp: mode 0600
                json.dump({"etag": etag, "document": document}, out, ensure_ascii=False)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("cannot write the last-known-good copy %s: %s", path, exc)

    def _forget(self, namespace: str, name: str) -> None:
        path = self._cache_file(namespace, name)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    # ------------------------------------------------------------------ reads
    def get(self, name: str, *, namespace: str | None = None) -> Config:
        """The ConfigEntry ``name``'s configuration; the last-known-good copy (``stale=True``)
        when the API cannot answer. Raises :class:`FerryError` for 401/403/404 and
        :class:`FerryUnavailable` when there is neither an answer nor a copy."""
        ns = self._namespace(namespace)
        cached = self._cached(ns, name)
        path = f"/v1/configs/{urllib.parse.quote(ns, '')}/{urllib.parse.quote(name, '')}"
        headers = {"If-None-Match": cached[1]} if cached and cached[1] else {}
        try:
            with self._request("GET", path, headers=headers) as response:
                if response.status == 304 and cached is not None:
                    return _config(cached[0], cached[1])
                document = json.loads(response.read())
                etag = response.headers.get("ETag")
        except FerryUnavailable:
            if cached is None:
                raise
            logger.warning("Ferry API unavailable: serving the last-known-good %s/%s", ns, name)
            return _config(cached[0], cached[1], stale=True)
        except FerryError as exc:
            if exc.status == 404:
                self._forget(ns, name)
            raise
        self._save(ns, name, document, etag)
        return _config(document, etag)

    def evaluate(
        self,
        flag: str,
        context: Mapping[str, Any] | None = None,
        *,
        default: Any = None,
        namespace: str | None = None,
    ) -> Evaluation:
        """OFREP evaluation of ``flag`` for ``context`` (``targetingKey`` and attributes).
        Never raises for an evaluation problem: ``default`` with reason ERROR instead."""
        headers = {NAMESPACE_HEADER: self._namespace(namespace)}
        path = f"/ofrep/v1/evaluate/flags/{urllib.parse.quote(flag, '')}"
        try:
            with self._request(
                "POST", path, body={"context": dict(context or {})}, headers=headers
            ) as response:
                body = json.loads(response.read())
        except FerryError as exc:
            code = {404: "FLAG_NOT_FOUND", 400: "INVALID_CONTEXT"}.get(exc.status, "GENERAL")
            return Evaluation(flag, default, None, "ERROR", code, exc.message)
        if "value" not in body:  # a disabled flag: the code default
            return Evaluation(
                flag,
                default,
                body.get("variant"),
                str(body.get("reason")),
                metadata=body.get("metadata") or {},
            )
        return Evaluation(
            flag,
            body["value"],
            body.get("variant"),
            str(body.get("reason")),
            metadata=body.get("metadata") or {},
        )

    # ------------------------------------------------------------------ watch
    def watch(
        self,
        callback: Callable[[str, Config | None], None],
        *,
        names: Iterable[str] | None = None,
        namespace: str | None = None,
        heartbeat_timeout: float = 60.0,
    ) -> Watch:
        """Call ``callback(name, config)`` for every change of the watched entries (all of the
        namespace's when ``names`` is None), ``config`` None when the entry was deleted, from a
        background thread, until ``stop()``. Watched entries are read once at start, so the
        callback also sees a change made before the watch was connected."""
        watch = Watch(
            self,
            self._namespace(namespace),
            None if names is None else frozenset(names),
            callback,
            heartbeat_timeout,
        )
        watch.start()
        return watch


class Watch:
    """A background watch; ``stop()`` ends it. ``connected`` is set while the stream is open."""

    def __init__(
        self,
        client: FerryClient,
        namespace: str,
        names: frozenset[str] | None,
        callback: Callable[[str, Config | None], None],
        heartbeat_timeout: float,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.names = names
        self.callback = callback
        self.heartbeat_timeout = heartbeat_timeout
        self.last_event_id: str | None = None
        self.connected = threading.Event()
        self.connections = 0
        self._stop = threading.Event()
        self._seen: dict[str, str | None] = {}  # name → hash the callback last got (None: gone)
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name="ferry-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()
        self._thread.join(timeout)

    # ---------------------------------------------------------------- internals
    def _deliver(self, name: str) -> None:
        try:
            config: Config | None = self.client.get(name, namespace=self.namespace)
        except FerryError as exc:
            if exc.status != 404:
                raise
            config = None
        digest = None if config is None else f"{config.hash}:{config.format}:{config.revision}"
        if name in self._seen and self._seen[name] == digest:
            return
        self._seen[name] = digest
        try:
            self.callback(name, config)
        except Exception:
            logger.exception("ferry watch callback failed for %s/%s", self.namespace, name)

    def _resync(self) -> None:
        for name in sorted(self.names if self.names is not None else list(self._seen)):
            self._deliver(name)

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._connect()
                delay = 0.5
            except FerryError as exc:
                logger.warning("ferry watch of %s: %s", self.namespace, exc)
            except Exception as exc:  # network errors, a dropped stream: reconnect
                logger.info("ferry watch of %s interrupted: %s", self.namespace, exc)
            finally:
                self.connected.clear()
                self._response = None
            if self._stop.wait(delay * (0.5 + random.random())):
                return
            delay = min(delay * 2, 30.0)

    def _connect(self) -> None:
        query = {"namespace": self.namespace}
        if self.names is not None and len(self.names) == 1:
            (query["name"],) = self.names
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        response = self.client._request(
            "GET",
            "/v1/watch?" + urllib.parse.urlencode(query),
            headers=headers,
            timeout=self.heartbeat_timeout,
        )
        self._response = response
        parser = EventParser(self.last_event_id)
        first = self.last_event_id is None
        pending = 0  # bytes of the event being read
        with response:
            self.connections += 1
            while not self._stop.is_set():
                raw = response.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    return  # the server ended the stream: reconnect
                pending = 0 if raw.strip(b"\r\n") == b"" else pending + len(raw)
                if len(raw) > MAX_LINE_BYTES or pending > MAX_EVENT_BYTES:
                    raise ValueError(
                        f"the watch stream sent a line over {MAX_LINE_BYTES} bytes or an event "
                        f"over {MAX_EVENT_BYTES}"
                    )
                event = parser.feed(raw.decode("utf-8").rstrip("\r\n"))
                if event is None:
                    continue
                if event.event == "ready":
                    self.connected.set()
                    if first:
                        self._resync()  # what changed before we were connected
                        first = False
                elif event.event == "reset":
                    self._resync()
                elif event.event in ("updated", "deleted"):
                    change = json.loads(event.data)
                    name = change.get("name")
                    wanted = self.names is None or name in self.names
                    if change.get("kind") == "ConfigEntry" and isinstance(name, str) and wanted:
                        self._deliver(name)
                if event.id is not None:
                    self.last_event_id = event.id


def _pod_namespace() -> str | None:
    try:
        return Path(POD_NAMESPACE_FILE).read_text().strip() or None
    except OSError:
        return None
