"""Course management: the lifecycle (unpublish, archive, restore, soft delete), categories and tags, and
prerequisites. Courses themselves and their lectures stay in :mod:`core_api.courses`."""
