"""Libraries both planes run with: OpenTelemetry tracing, structured logs, the MCP client. No control-plane code."""
