"""Frontends: one module per source framework, each turning a source model into the IR."""
