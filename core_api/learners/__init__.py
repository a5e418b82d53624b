"""Learners' progress as instructors see it (a course's learners, one learner's lectures) and as learners
pick it up again ("continue where you left off"). Progress itself is recorded by :mod:`core_api.progress`."""
