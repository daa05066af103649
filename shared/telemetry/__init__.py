"""OpenTelemetry for both services: traces, metrics, and the switch that keeps them off."""
