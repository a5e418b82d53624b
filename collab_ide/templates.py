"""Workspace templates: a language, its starter files and the file a run starts from.

The server writes a new workspace's starter files into its document itself (see
:func:`collab_ide.service.create_workspace`), so editors that join never race to create them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Language = Literal["python", "javascript", "c", "cpp"]


@dataclass(frozen=True)
class Template:
    language: Language
    entry: str
    files: dict[str, str]


TEMPLATES: dict[str, Template] = {
    "python": Template(
        "python",
        "main.py",
        {
            "main.py": 'from greet import greeting\n\nprint(greeting("studyhall"))\n',
            "greet.py": 'def greeting(name: str) -> str:\n    return f"Hello, {name}!"\n',
        },
    ),
    "javascript": Template(
        "javascript",
        "main.js",
        {
            "main.js": 'const { greeting } = require("./greet.js");\n\nconsole.log(greeting("studyhall"));\n',
            "greet.js": "exports.greeting = (name) => `Hello, ${name}!`;\n",
        },
    ),
    "c": Template(
        "c",
        "main.c",
        {"main.c": '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, studyhall!\\n");\n    return 0;\n}\n'},
    ),
    "cpp": Template(
        "cpp",
        "main.cpp",
        {
            "main.cpp": '#include <iostream>\n#include "greet.hpp"\n\nint main() {\n'
            '    std::cout << greeting("studyhall") << std::endl;\n    return 0;\n}\n',
            "greet.hpp": "#pragma once\n#include <string>\n\n"
            'inline std::string greeting(const std::string& name) { return "Hello, " + name + "!"; }\n',
        },
    ),
}
