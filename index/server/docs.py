"""/docs: the API's documentation as one self-contained HTML page, made from the OpenAPI schema.

FastAPI's own Swagger and ReDoc pages load their scripts from a CDN, which a machine without
internet access (or a strict network) cannot reach; this page needs nothing but the server. The
machine-readable schema stays at /openapi.json.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

METHOD_ORDER = ("get", "head", "post", "put", "patch", "delete")
STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#1d2129}
h1{margin-bottom:0}.sub{color:#6b7280;margin-top:.2em}
section{border:1px solid #e3e6eb;border-radius:10px;padding:.6em 1em;margin:1em 0}
h2{font-size:16px;margin:.3em 0}code{background:#f1f3f6;padding:1px 5px;border-radius:4px}
.m{display:inline-block;min-width:3.6em;font:600 12px monospace;color:#fff;background:#2f6fde;border-radius:4px;
padding:2px 6px;margin-right:.5em;text-align:center}.m.post{background:#1f8a4c}.m.head{background:#6b7280}
table{border-collapse:collapse;width:100%;margin:.4em 0}td,th{border-top:1px solid #e3e6eb;padding:3px 8px;
text-align:left;vertical-align:top}th{color:#6b7280;font-weight:600}.muted{color:#6b7280}
"""


def add_docs_page(app: FastAPI) -> None:
    """Serve GET /docs on app (built from app.openapi() on first use)."""
    page: list[str] = []

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if not page:
            page.append(docs_html(app.openapi()))
        return HTMLResponse(page[0], headers={"Cache-Control": "no-cache"})


def docs_html(schema: dict[str, Any]) -> str:
    """The schema's paths, methods, summaries, descriptions and parameters as an HTML page."""
    info = schema.get("info", {})
    title = escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    sections = [
        _operation_html(path, method, operation)
        for path, operations in schema.get("paths", {}).items()
        for method in METHOD_ORDER
        if (operation := operations.get(method)) is not None
    ]
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title} API</title>"
        f"<style>{STYLE}</style></head><body><h1>{title} API</h1>"
        f"<p class='sub'>{escape(info.get('summary') or info.get('description') or '')}</p>"
        "<p>Every answer is JSON (pictures excepted); errors are <code>{\"detail\": \"one line saying why\"}</code>. "
        "With a token, send <code>Authorization: Bearer TOKEN</code> or add <code>?token=TOKEN</code>. "
        "The machine-readable schema: <a href='/openapi.json'>/openapi.json</a>.</p>"
        + "".join(sections)
        + "</body></html>"
    )


def _operation_html(path: str, method: str, operation: dict[str, Any]) -> str:
    parameters = operation.get("parameters", [])
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('in', ''))}</td>"
        f"<td>{escape(_type_of(p.get('schema', {})))}</td><td>{'yes' if p.get('required') else ''}</td>"
        f"<td>{escape(p.get('description', ''))}</td></tr>"
        for p in parameters
    )
    table = f"<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th></th></tr>{rows}</table>" if rows else ""
    body = operation.get("requestBody", {}).get("content", {})
    upload = f"<p class='muted'>Request body: {escape(', '.join(body))}</p>" if body else ""
    description = operation.get("description", "")
    return (
        f"<section id='{escape(method + path)}'><h2><span class='m {method}'>{method.upper()}</span><code>{escape(path)}</code></h2>"
        f"<div>{escape(operation.get('summary', ''))}</div>"
        + (f"<p class='muted'>{escape(description)}</p>" if description else "")
        + table
        + upload
        + "</section>"
    )


def _type_of(schema: dict[str, Any]) -> str:
    """A parameter's type in a few words: 'integer 1-1000', 'string or null'."""
    options = schema.get("anyOf") or [schema]
    words = []
    for option in options:
        kind = option.get("type", "")
        low, high = option.get("minimum"), option.get("maximum")
        bounds = f" {low}-{high}" if low is not None and high is not None else f" >= {low}" if low is not None else ""
        words.append(kind + bounds if kind != "null" else "null")
    return " or ".join(w for w in words if w)
