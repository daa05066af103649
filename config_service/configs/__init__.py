"""The config domain: what a config is and the rules for changing it."""
