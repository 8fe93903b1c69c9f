"""YAML for the generated Prometheus and Grafana files, emitted by pyyaml's safe dumper: keys
in the order given, sequences indented under their key, multi-line strings (PromQL) as block
scalars, no line folding. A generated file is a comment header plus one document.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["to_yaml", "yaml_file"]


class _Dumper(yaml.SafeDumper):
    """SafeDumper that indents a sequence under its mapping key (as Prometheus' docs do)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(value: Any) -> str:
    """One YAML document for ``value`` (plain data: dicts, lists, str, numbers, bools)."""
    text: str = yaml.dump(
        value,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 16,
    )
    return text


def yaml_file(header: str, value: Any) -> str:
    """A generated file: ``header`` (comment lines, each starting with ``#``) then the document."""
    if any(line and not line.startswith("#") for line in header.splitlines()):
        raise ValueError("a YAML header must be comment lines")
    return header + to_yaml(value)
