"""Becoming a teacher: learners apply with their qualifications, admins decide (issue 18)."""
