"""The foundation: settings, database, auth, RBAC, errors and the core LMS REST API."""
