"""Where a served teacher lives and how it is asked: ``--teacher openai[-chat]:URL[#model]`` read and checked
(``parse_spec``, ``check_url``), the API key from the environment (``api_key``), and JSON over HTTP with retries
and one-line errors (``Http``). ``server.ServerTeacher`` builds on it; nothing here knows about labels.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from ..errors import MissingDependencyError, UserError
from ..files import one_line

ROUTES = {"openai": "plain", "openai-chat": "chat"}  # --teacher scheme -> prompt style (completions or chat)
API_KEY_VARIABLES = ("LLKD_EDGE_API_KEY", "OPENAI_API_KEY")
ATTEMPTS = 8  # tries per request on a timeout, a lost connection, 429 or 5xx (backoff from 0.5 s doubling, max 30 s,
# jittered so that requests in flight do not retry in step: about a minute in all)
TIMEOUT_S = 120.0
BUSY = {429, 503}  # asked again even at start-up
RETRIED_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class ServerSpec:
    """``--teacher openai[-chat]:URL[#model]``, parsed."""

    url: str  # the OpenAI base URL, e.g. http://127.0.0.1:8080/v1
    model: str | None  # None: the one model the server lists
    style: str  # "plain" (completions) or "chat"


def parse_spec(name: str) -> ServerSpec | None:
    """The server a ``--teacher`` value names, or None when it names a model file or registry entry."""
    scheme, sep, rest = name.partition(":")
    if not sep or scheme not in ROUTES or not rest.startswith(("http://", "https://")):
        return None
    url, _, model = rest.partition("#")
    return ServerSpec(url.rstrip("/"), model or None, ROUTES[scheme])


def check_url(spec: ServerSpec) -> None:
    """One line for a URL no request can be made to, or one that carries a password (it would be stored)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(spec.url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        raise UserError(f"--teacher: {spec.url!r} is not a URL (openai:http://HOST:PORT/v1)") from None
    if parts.username or parts.password:
        raise UserError(f"--teacher: put the server's key in {API_KEY_VARIABLES[0]}, not in the URL (URLs are stored)")
    if not parts.hostname or parts.query:
        raise UserError(f"--teacher: {spec.url!r} should be the server's base URL, such as http://HOST:PORT/v1")


def is_server(name: str) -> bool:
    return parse_spec(name) is not None


def api_key(url: str = "https://") -> str | None:
    """The key from ``LLKD_EDGE_API_KEY``, else ``OPENAI_API_KEY`` (only for an https URL: an OpenAI key is not
    sent in the clear). Never echoed: a key that cannot go in a header is one line that does not show it."""
    names = API_KEY_VARIABLES if url.startswith("https://") else API_KEY_VARIABLES[:1]
    name = next((v for v in names if os.environ.get(v, "").strip()), None)
    if name is None:
        return None
    key = os.environ[name].strip()
    if not key.isascii() or not key.isprintable() or " " in key:
        raise UserError(f"{name} holds characters a key cannot have (spaces, control or non-ASCII characters)")
    return key


class _Transient(Exception):
    """A response worth asking again for (429, 5xx)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Http:
    """JSON over HTTP to one server, retried with backoff on transient failures; errors are one line."""

    def __init__(self, url: str, key: str | None, timeout_s: float = TIMEOUT_S, attempts: int = ATTEMPTS):
        try:
            import httpx
            import tenacity
        except ImportError:
            raise MissingDependencyError("a served teacher needs httpx and tenacity: run `make setup`") from None
        self._httpx, self._tenacity = httpx, tenacity
        self.url = url
        self.attempts = attempts
        self.retried = 0  # requests sent again
        self._lock = threading.Lock()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0),
                                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    def _transient(self, exc: BaseException, busy_only: bool) -> bool:
        httpx = self._httpx
        if isinstance(exc, _Transient):
            return exc.status in BUSY or not busy_only
        if busy_only or isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.ProxyError)):
            return False  # our request cannot be sent: asking again will not help
        return isinstance(exc, (httpx.TimeoutException, httpx.TransportError))

    def _count_retry(self, _state) -> None:
        with self._lock:
            self.retried += 1

    def request(self, method: str, path: str, body: dict | None = None, retry: bool | str = True) -> dict:
        """The JSON answer of ``method path`` (``path`` under the base URL, or absolute from the server root
        when it starts with ``//``); ``UserError`` naming what to change when the server cannot be used.
        ``retry``: True, on every transient failure; "busy", only on 429 and 503 (busy, or loading its model)."""
        t = self._tenacity
        url = self.root + path[1:] if path.startswith("//") else self.url + path
        retrying = t.Retrying(stop=t.stop_after_attempt(self.attempts if retry else 1),
                              wait=t.wait_random_exponential(multiplier=0.5, max=30),
                              retry=t.retry_if_exception(lambda exc: self._transient(exc, retry == "busy")),
                              before_sleep=self._count_retry, reraise=True)
        try:
            return retrying(self._once, method, url, body)
        except self._httpx.ConnectError as exc:
            raise UserError(f"cannot reach the teacher server at {self.url} ({one_line(exc, limit=80)}): is it running, "
                            "and is the URL in --teacher right?") from None
        except self._httpx.TimeoutException:
            raise UserError(f"the teacher server at {self.url} did not answer {url} within "
                            f"{self._client.timeout.read:.0f} s ({self.attempts if retry else 1} tries)") from None
        except (self._httpx.LocalProtocolError, self._httpx.UnsupportedProtocol, self._httpx.ProxyError) as exc:
            # its text may quote the request's headers, the key among them: named, not shown
            raise UserError(f"a request to the teacher server at {self.url} cannot be sent ({type(exc).__name__}); "
                            "check the URL and the key") from None
        except self._httpx.TransportError as exc:
            raise UserError(f"the teacher server at {self.url} dropped the connection ({one_line(exc, limit=80)})") from None
        except self._httpx.HTTPError as exc:  # a body that cannot be decoded, and the like
            raise UserError(f"the teacher server at {self.url} sent an answer that cannot be read "
                            f"({type(exc).__name__})") from None
        except _Transient as exc:
            tries = f" {self.attempts} times" if retry else ""
            raise Failed(f"the teacher server at {self.url} answered {url} with {exc.status}{tries}: {exc}") from None

    @property
    def root(self) -> str:
        """The server's root URL (the base URL without a trailing /v1): where tokenizers live."""
        return self.url.removesuffix("/v1")

    def _once(self, method: str, url: str, body: dict | None) -> dict:
        response = self._client.request(method, url, json=body)
        detail = one_line(response.text, limit=160)
        if response.status_code in RETRIED_STATUS:
            raise _Transient(response.status_code, detail)
        if response.status_code in (401, 403):
            raise UserError(f"the teacher server at {self.url} refused the request ({response.status_code}): set its "
                            f"API key in {API_KEY_VARIABLES[0]} (or {API_KEY_VARIABLES[1]})")
        if response.status_code == 404:
            raise NotFound(f"{url}: not found (404); give the server's OpenAI base URL in --teacher, usually "
                           "ending in /v1")
        if response.status_code >= 400:
            raise Refused(response.status_code, detail)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            kind = response.headers.get("content-type", "no content type")
            raise UserError(f"{url} answered with something that is not a JSON object ({kind}): is {self.url} an "
                            "OpenAI-compatible server's base URL?")
        return answer

    def close(self) -> None:
        self._client.close()  # requests still in flight fail at once instead of being waited for


class Failed(UserError):
    """A server error (5xx, 429) that asking again did not cure."""


class NotFound(UserError):
    """404: the path does not exist on this server."""


class Refused(UserError):
    """Another 4xx: the server understood and refused (an unsupported parameter, too many log-probs)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
