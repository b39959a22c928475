"""Drives tollgate's MCP endpoint with the official MCP Python SDK (`mcp` on PyPI), for
tests/e2e/mcp.rs.

Usage: client.py SCRIPT_JSON. The script is {"url", "mode", "token"?, "headers"?, "steps":
[...]}, with
`mode` "legacy" (the initialize handshake, 2025-11-25) or a stateless revision such as
"2026-07-28". Steps: {"list": true}, {"call": NAME, "args": {...}}, {"unauthenticated":
true} (an initialize without a token: the 401 and the protected resource metadata it points
to, read with the SDK's own OAuth discovery helpers). One JSON line per step is printed.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.auth.utils import (
    extract_resource_metadata_from_www_auth,
    handle_protected_resource_response,
)
from mcp.client.streamable_http import streamable_http_client


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def unauthenticated(url):
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "probe", "version": "0"},
                },
            },
            headers={"Accept": "application/json, text/event-stream"},
        )
        metadata_url = extract_resource_metadata_from_www_auth(response)
        out = {
            "status": response.status_code,
            "www_authenticate": response.headers.get("www-authenticate"),
            "metadata_url": metadata_url,
        }
        if metadata_url:
            metadata = await handle_protected_resource_response(await http.get(metadata_url))
            out["metadata"] = dump(metadata) if metadata else None
        return out


async def main():
    script = json.loads(sys.argv[1])
    url = script["url"]
    headers = dict(script.get("headers") or {})
    if script.get("token"):
        headers["Authorization"] = f"Bearer {script['token']}"
    results = []
    sessions = [s for s in script["steps"] if "unauthenticated" not in s]
    for step in script["steps"]:
        if "unauthenticated" in step:
            results.append(await unauthenticated(url))
    if sessions:
        http = httpx2.AsyncClient(headers=headers, timeout=30)
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=script.get("mode", "legacy"), cache=None) as client:
            results.insert(0, {"protocol_version": client.protocol_version,
                               "server": dump(client.server_info) if client.server_info else None})
            for step in sessions:
                if "list" in step:
                    listed = await client.list_tools()
                    results.append(dump(listed))
                elif "call" in step:
                    result = await client.call_tool(step["call"], step.get("args") or {})
                    results.append(dump(result))
        await http.aclose()
    for result in results:
        print(json.dumps(result))


asyncio.run(main())
