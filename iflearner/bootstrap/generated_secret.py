"""A random secret generated once and kept (encrypted) in the stack's state,
for values nobody needs to choose, like the passphrase that encrypts the
operator's job stacks when the stack config sets none."""

from __future__ import annotations

import secrets
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider


class _GeneratedSecretProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        value = secrets.token_urlsafe(int(props["bytes"]))
        return CreateResult(id_=secrets.token_hex(8), outs={**props, "value": value})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("bytes") != news.get("bytes")
        return DiffResult(changes=changed, replaces=["bytes"] if changed else [])

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class GeneratedSecret(Resource):
    """``value``: a URL-safe random string, a secret output."""

    value: pulumi.Output[str]

    def __init__(self, name: str, byte_count: int = 32, opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["value"]))
        super().__init__(_GeneratedSecretProvider(), name, {"bytes": byte_count, "value": None}, opts)
