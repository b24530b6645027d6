"""Private helpers shared by tether's parts; not a public API."""
