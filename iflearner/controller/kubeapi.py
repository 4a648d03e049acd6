"""Plain-JSON requests through the official ``kubernetes`` client.

The generated model classes cost a lot of CPU to (de)serialise and are
awkward for custom resources. The controller uses the client's
configuration, authentication, TLS and connection pool (``ApiClient``), but
sends and receives plain dicts. Errors are the client's ``ApiException``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def is_status(error: BaseException, *codes: int) -> bool:
    """True when ``error`` is an ApiException with one of ``codes``."""
    return isinstance(error, ApiException) and error.status in codes


class KubeApi:
    """GET/POST/PUT/PATCH/DELETE and watch on API paths, with dict bodies."""

    def __init__(self, api_client: client.ApiClient, request_timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple[float, float] | None,
    ) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type or JSON
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        method, url, headers, body, post = self.api_client.param_serialize(
            method=method, resource_path=path, query_params=params, header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(method, url, header_params=headers, body=body,
                                            post_params=post, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            text = response.data.decode("utf-8", errors="replace") if response.data else None
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON response (None when empty)."""
        response = self._send(method, path, query, body, content_type, timeout or self.request_timeout)
        data = response.read()
        return json.loads(data) if data else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> Any:
        """GET, with None for 404."""
        try:
            return self.request("GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def watch(self, path: str, query: Mapping[str, Any], timeout: float) -> Iterator[dict[str, Any]]:
        """Stream watch events ({"type", "object"}) until the server ends the watch."""
        params = {**query, "watch": "true"}
        response = self._send("GET", path, params, None, None, (10.0, timeout))
        raw = response.response
        try:
            for line in iter_resp_lines(raw):
                if line:
                    yield json.loads(line)
        finally:
            raw.release_conn()


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def collection_path(api_path: str, plural: str, namespace: str | None = None) -> str:
    """'/api/v1/pods', '/apis/g/v/namespaces/ns/plural', ..."""
    if namespace:
        return f"{api_path}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{api_path}/{plural}"


def object_path(api_path: str, plural: str, namespace: str | None, name: str) -> str:
    return f"{collection_path(api_path, plural, namespace)}/{quote(name, safe='')}"
