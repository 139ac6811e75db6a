"""A real MCP server (the official Python SDK's MCPServer, formerly FastMCP) over Streamable HTTP,
for the tests of agents' MCP tools: `python server.py PORT`."""

import asyncio
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("confidant-test-tools")


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two numbers."""
    return str(a + b)


@server.tool()
def whoami(ctx: Context) -> str:
    """Says which Authorization header the call came with."""
    headers = ctx.headers or {}
    return headers.get("authorization", "no authorization header")


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
async def hang() -> str:
    """Never answers."""
    await asyncio.sleep(3600)
    return "too late"


@server.tool()
def hidden() -> str:
    """Not in the agent's allowed tools."""
    return "should never be offered"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
