"""tether.compression: see ARCHITECTURE.md; this part is not built yet."""
