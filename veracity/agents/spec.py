"""An agent is a YAML file: its model (through the gateway), system prompt, tools, memory and
budget. ``load_agent`` reads one, refusing unknown fields and duplicate keys with a message that
says which.

    name: chain-analyst
    description: Answers questions about the network from its own chain data.
    model: smollm2
    system: You answer questions about a Veracity network ...
    tools:
      - name: chain
      - name: calculator
      - name: retrieve
        docs: ../../docs        # a folder of .md/.txt files, relative to this file
    memory: 6                   # the last tool results kept in the context
    budget: {steps: 6, tokens: 768}
    first: chain                # optional: the tool asked first, with the task as its input
    answer: quote               # optional: answered from the tools' results, grounded in them (free: its own words)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from veracity.errors import InputError
from veracity.workloads.spec import explain, strict_yaml

TOOL_NAMES = ("calculator", "chain", "retrieve", "call_agent")


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["calculator", "chain", "retrieve", "call_agent"]
    docs: str | None = None  # retrieve: a folder of .md/.txt documents (relative to the agent file)
    top_k: int = Field(2, ge=1, le=8)  # retrieve: passages returned
    url: str | None = None  # call_agent: the other agent's endpoint (``veracity agent serve``)
    agent: str | None = None  # call_agent: the tool's name as the model sees it (default: call_agent)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(6, ge=1, le=50)  # tool calls before the agent must answer
    tokens: int = Field(1024, ge=16, le=100_000)  # generated tokens over the whole run


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    model: str = "smollm2"
    system: str = "You are a helpful assistant."
    tools: list[ToolSpec] = Field(default_factory=list)
    memory: int = Field(6, ge=1, le=100)  # tool results kept in the context (older ones dropped)
    budget: Budget = Field(default_factory=lambda: Budget.model_validate({}))
    grammar: bool = True  # tool calls decoded under the JSON grammar (False: the model writes the JSON)
    first: str | None = None  # a tool asked first, with the task as its input (``agents.runtime``)
    answer: Literal["free", "quote"] = "free"  # quote: answered from the tools' results, grounded in them


def parse_agent(text: str, source: str = "agent") -> AgentSpec:
    data = strict_yaml(text, source)
    if not isinstance(data, dict):
        raise InputError(f"{source} must be a YAML mapping with name, model, system, tools")
    try:
        spec = AgentSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{source}: {explain(exc)}") from None
    names = [t.agent or t.name for t in spec.tools]
    if len(set(names)) != len(names):
        raise InputError(f"{source}: two tools have the same name ({', '.join(names)}); give call_agent tools `agent:` names")
    if spec.first is not None and spec.first not in names:
        raise InputError(f"{source}: first: {spec.first!r} is not one of its tools ({', '.join(names) or 'none'})")
    return spec


def load_agent(path: str | Path) -> AgentSpec:
    """An agent file; relative tool paths are resolved against its folder."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"agent file {p} not found")
    spec = parse_agent(p.read_text(encoding="utf-8"), str(p))
    tools = [t.model_copy(update={"docs": str((p.parent / t.docs).resolve())}) if t.docs else t for t in spec.tools]
    return spec.model_copy(update={"tools": tools})
