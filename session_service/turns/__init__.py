"""Running message turns: the engine, its event log, and the contracts modules implement."""
