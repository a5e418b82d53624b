"""The one compiled part: ``realtime/_sendmany.c`` (see realtime/sendmany.py). Everything else is in
pyproject.toml. The extension is optional: where it cannot be built (no C compiler or Python headers) the
install goes on and room emits use the same loop in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("realtime._sendmany", ["realtime/_sendmany.c"], optional=True)])
