"""collab_ide: see ARCHITECTURE.md; arrives with its own issue."""
