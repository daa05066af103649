"""Preparation: a config revision composed, expanded and resolved into what a session runs."""
