"""Editing a Corefile without disturbing it: the operator's lines live in one
marked block inside the root server block, so adding them is reversible to
the byte and a person reading the ConfigMap sees who put them there."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

BEGIN_MARK = "# BEGIN iflearner-operator: managed by the bootstrap stack, removed by pulumi destroy"
END_MARK = "# END iflearner-operator"
RECORDS_DIR = "/etc/coredns/iflearner"
_ROOT_BLOCK = re.compile(r"^\.:53\s*\{\s*$")


class CorefileError(ValueError):
    """The Corefile has no root server block to add to."""


@dataclass(frozen=True)
class ZoneTemplate:
    """Every name under ``zone`` answers ``address`` (a peer cluster's ingress)."""

    zone: str
    address: str


def render_block(zones: Sequence[ZoneTemplate], domains: Sequence[str] = (), records_dir: str = RECORDS_DIR,
                 indent: str = "    ") -> str:
    """The operator's Corefile lines: per-job zone files, then zone templates.

    With ``domains`` (the cluster's job domains) the job zone files are authoritative only under
    them: a query for any other name passes on to the rest of the server block as if the
    operator were not there, whatever zone a job's record claims (the auto plugin loads every
    file, but answers only for its zones)."""
    lines = [
        BEGIN_MARK,
        " ".join(["auto", *domains, "{"]),
        rf"    directory {records_dir} db\.(.*) {{1}}",
        "    reload 10s",
        "}",
    ]
    for zone in zones:
        pattern = re.escape(zone.zone).replace(r"\-", "-")
        lines += [
            f"template IN A {zone.zone} {{",
            rf"    match .*\.{pattern}\.?$",
            f'    answer "{{{{ .Name }}}} 60 IN A {zone.address}"',
            "    fallthrough",
            "}",
        ]
    lines.append(END_MARK)
    return "\n".join(f"{indent}{line}" for line in lines) + "\n"


def remove_block(corefile: str) -> str:
    """The Corefile without the operator's block (unchanged if it has none)."""
    lines = corefile.splitlines(keepends=True)
    out: list[str] = []
    inside = False
    for line in lines:
        stripped = line.strip()
        if stripped == BEGIN_MARK:
            inside = True
            continue
        if inside and stripped == END_MARK:
            inside = False
            continue
        if not inside:
            out.append(line)
    return "".join(out)


def add_block(corefile: str, block: str) -> str:
    """Insert (or replace) the operator's block at the end of the root server block."""
    base = remove_block(corefile)
    lines = base.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _ROOT_BLOCK.match(line.strip())), None)
    if start is None:
        raise CorefileError("the Corefile has no '.:53 {' server block to add the federation's DNS to")
    depth = 0
    for index in range(start, len(lines)):
        depth += lines[index].count("{") - lines[index].count("}")
        if depth == 0:
            return "".join(lines[:index]) + block + "".join(lines[index:])
    raise CorefileError("the Corefile's '.:53' server block is not closed")
