"""watch_party: see ARCHITECTURE.md; arrives with its own issue."""
