"""Process-level telemetry: the build identity and HTTP request counts by route template."""
