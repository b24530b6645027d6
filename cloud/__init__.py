"""tether.cloud: see ARCHITECTURE.md; this part is not built yet."""
