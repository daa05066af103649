"""Tandem's public Python client (work in progress; see issue 18)."""

__all__: list[str] = []
