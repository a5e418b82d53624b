"""collab_ide: workspaces edited together over the y-websocket protocol (see README, "Collaborative IDE")."""
