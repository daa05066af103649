"""Typing aliases for servicer code."""

from typing import Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
