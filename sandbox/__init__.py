"""sandbox: see ARCHITECTURE.md; arrives with its own issue."""
