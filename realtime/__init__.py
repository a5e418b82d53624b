"""Transport and assembly: the app factory, the CLI, health and metrics."""
