"""The live page at ``/``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from .manager import SocketManager


def register_dashboard(app: Flask, manager: SocketManager) -> None:
    @app.get("/")
    def index() -> tuple[str, int, dict[str, str]]:
        body = ("<!doctype html><title>eventbus</title><p>eventbus is running. "
                "See <a href='/api/websocket/status'>/api/websocket/status</a>.</p>")
        return body, 200, {"Content-Type": "text/html; charset=utf-8"}
