"""Tools for tests and demos: not imported by the engine's request path."""
