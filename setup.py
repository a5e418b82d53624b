"""The compiled parts: ``realtime/_sendmany.c`` (see realtime/sendmany.py) and ``collab_ide/_engine.c`` (see
collab_ide/engine.py). Everything else is in pyproject.toml. Both are optional: where they cannot be built (no
C compiler or Python headers) the install goes on, room emits use the same loop in Python, and ``/yjs`` runs
on the Python path (``STUDYHALL_YJS_ENGINE=c`` then refuses to start, saying why)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("realtime._sendmany", ["realtime/_sendmany.c"], optional=True),
        Extension("collab_ide._engine", ["collab_ide/_engine.c"], optional=True, extra_compile_args=["-Wall"]),
    ]
)
